#include "flowmark/core/exit_code.hpp"

#include <array>
#include <cerrno>
#include <csignal>
#include <vector>

#include <fmt/format.h>

namespace flowmark {
namespace {

constexpr std::array kAll = {kExitOk,        kExitNothing,      kExitUsage,       kExitDataErr,
                             kExitNoInput,   kExitNoInterface,  kExitUnavailable, kExitSoftware,
                             kExitIoErr,     kExitNoPermission, kExitConfig,      kExitInterrupted,
                             kExitTerminated};

constexpr std::size_t kWidth = 92;               // the help text's right margin
constexpr std::string_view kIndent = "       ";  // under the meaning, past "  130  "

// Appends `text` after `used` columns, breaking at spaces before kWidth; continuation lines
// start with kIndent.
void append_wrapped(std::string& out, std::string_view text, std::size_t used) {
  while (used + text.size() > kWidth) {
    const std::size_t room = kWidth > used ? kWidth - used : 0;
    std::size_t cut = text.rfind(' ', room);
    if (cut == std::string_view::npos || cut == 0) cut = text.find(' ');
    if (cut == std::string_view::npos) break;
    out.append(text.substr(0, cut));
    out.push_back('\n');
    out.append(kIndent);
    used = kIndent.size();
    text.remove_prefix(cut + 1);
  }
  out.append(text);
}

std::string render(std::span<const ExitCodeUse> uses) {
  std::string out = "Exit codes:\n";
  for (const ExitCodeUse& u : uses) {
    const std::string head = fmt::format("  {:<4} ", static_cast<int>(u.code));
    out += head;
    std::string text(exit_code_meaning(u.code));
    if (!u.when.empty()) {
      text += ": ";
      text += u.when;
    }
    append_wrapped(out, text, head.size());
    out.push_back('\n');
  }
  return out;
}

}  // namespace

std::span<const ExitCode> all_exit_codes() noexcept { return kAll; }

std::string_view exit_code_meaning(ExitCode code) noexcept {
  switch (code) {
    case kExitOk: return "success";
    case kExitNothing: return "completed without full success (a warning says why)";
    case kExitUsage: return "usage error (a bad flag, argument or value)";
    case kExitDataErr: return "malformed input data";
    case kExitNoInput: return "an input file or source cannot be opened or read";
    case kExitNoInterface: return "the named interface does not exist";
    case kExitUnavailable: return "the kernel refused";
    case kExitSoftware: return "socket or internal error";
    case kExitIoErr: return "writing the output failed";
    case kExitNoPermission: return "not permitted (run as root or grant the capability)";
    case kExitConfig: return "the configuration is missing or invalid";
    case kExitInterrupted: return "interrupted (SIGINT, Ctrl-C)";
    case kExitTerminated: return "terminated (SIGTERM)";
  }
  return "unknown exit code";
}

int exit_code_for(const Error& error) noexcept {
  const auto& code = error.code();
  if (code.category() == flowmark_category()) {
    switch (static_cast<Errc>(code.value())) {
      case Errc::kInvalidArgument:
      case Errc::kTruncated:
      case Errc::kMalformed: return kExitUsage;
      case Errc::kNotFound: return kExitNoInterface;
      case Errc::kRefused:
      case Errc::kUnsupported: return kExitUnavailable;
    }
  }
  if (code.category() == std::system_category() || code.category() == std::generic_category()) {
    if (code.value() == EPERM || code.value() == EACCES) return kExitNoPermission;
    if (code.value() == EADDRINUSE || code.value() == EADDRNOTAVAIL) return kExitUnavailable;
  }
  return kExitSoftware;
}

int exit_code_for_signal(int signal) noexcept {
  return signal == SIGINT ? kExitInterrupted : signal == SIGTERM ? kExitTerminated : 128 + signal;
}

std::string exit_code_help(std::initializer_list<ExitCodeUse> uses) {
  return render(std::span<const ExitCodeUse>(uses.begin(), uses.size()));
}

std::string exit_code_table() {
  std::vector<ExitCodeUse> uses;
  for (ExitCode c : kAll) uses.push_back({c});
  return render(uses);
}

}  // namespace flowmark
