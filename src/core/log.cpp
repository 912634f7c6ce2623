#include "flowmark/core/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace flowmark {

void init_logging(std::string_view program, LogLevel level) {
  auto logger = spdlog::stderr_logger_mt(std::string(program) + "-log");
  logger->set_pattern(std::string(program) + ": %l: %v");
  switch (level) {
    case LogLevel::kDebug: logger->set_level(spdlog::level::debug); break;
    case LogLevel::kInfo: logger->set_level(spdlog::level::info); break;
    case LogLevel::kWarn: logger->set_level(spdlog::level::warn); break;
    case LogLevel::kError: logger->set_level(spdlog::level::err); break;
    case LogLevel::kOff: logger->set_level(spdlog::level::off); break;
  }
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace flowmark
