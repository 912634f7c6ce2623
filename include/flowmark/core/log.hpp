// flowmark::core — logging to standard error through spdlog.
//
//   flowmark::init_logging("flowmark", flowmark::LogLevel::kInfo);
//   spdlog::warn("join {} refused: {}", group, why);
#pragma once

#include <string_view>

#include <spdlog/spdlog.h>

namespace flowmark {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };

// Installs the default logger: "<program>: <level>: <message>" on stderr.
void init_logging(std::string_view program, LogLevel level);

}  // namespace flowmark
