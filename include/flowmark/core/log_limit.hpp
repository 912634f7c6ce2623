// flowmark::core — rate-limited logging: at most `budget` messages per `interval` from one
// place in the code; the rest are counted, and the count is reported by the first message
// shown after them (or by flush()). A message is formatted only when it is shown, so a flood
// of rejected input costs a counter increment per message, not a string.
//
//   LogLimiter limit(10, std::chrono::seconds(1), LogLimiter::Report::kLine,
//                    [](std::uint64_t n) {
//                      return fmt::format("{} more rejected line(s) not shown", n);
//                    });
//   limit.log(spdlog::level::warn, "line {}: {}", line_no, why);   // formatted only if shown
//   limit.log(spdlog::level::warn, [&] { return describe(e); });   // called only if shown
//   limit.flush();                                                 // at the end: the count
//
// The interval starts with the first message after the previous interval ended. One limiter
// belongs to one thread (no locking): give each thread that logs its own.
#pragma once

#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace flowmark {

class LogLimiter {
 public:
  // How the count of messages not shown is told.
  enum class Report : std::uint8_t {
    kLine,    // a line of its own (report(n)) just before the next message shown
    kSuffix,  // appended to the next message shown: message + report(n)
  };
  struct Options {
    unsigned budget = 10;  // messages shown per interval
    std::chrono::nanoseconds interval = std::chrono::seconds(1);
    Report report_as = Report::kLine;
    // The text that tells how many were not shown; empty: "N more message(s) not shown" (for
    // kSuffix: " (N more not shown)").
    std::function<std::string(std::uint64_t)> report;
    // CLOCK_MONOTONIC in nanoseconds; empty: monotonic_ns(). Tests inject their own.
    std::function<std::int64_t()> clock;
  };

  LogLimiter() : LogLimiter(Options{}) {}
  explicit LogLimiter(Options options);
  LogLimiter(unsigned budget, std::chrono::nanoseconds interval, Report report_as = Report::kLine,
             std::function<std::string(std::uint64_t)> report = {});

  // Logs fmt::format(f, args...) at `level` if the budget allows; the arguments are
  // formatted only then. A level the logger filters out costs nothing and uses no budget.
  template <class... Args>
  void log(spdlog::level::level_enum level, fmt::format_string<Args...> f, Args&&... args) {
    if (!enabled(level)) return;
    if (auto missed = admit()) emit(level, fmt::format(f, std::forward<Args>(args)...), *missed);
  }
  // Logs build() at `level` if the budget allows; build is called only then.
  template <std::invocable Build>
    requires std::convertible_to<std::invoke_result_t<Build>, std::string>
  void log(spdlog::level::level_enum level, Build&& build) {
    if (!enabled(level)) return;
    if (auto missed = admit()) emit(level, std::string(std::forward<Build>(build)()), *missed);
  }

  // Takes the place of one message: when it may be shown, the number of messages not shown
  // since the last one shown (and that count is reset); nullopt when it may not (it is
  // counted). For callers that log by other means; log() uses it.
  std::optional<std::uint64_t> admit();

  // Reports the messages not shown so far, if any, as a line of its own (at the end of a run:
  // nothing later would tell them): report(n) for kLine, "N more message(s) not shown" for
  // kSuffix.
  void flush(spdlog::level::level_enum level = spdlog::level::warn);

  // Messages not shown since the last one shown (or flush()).
  std::uint64_t suppressed() const noexcept { return suppressed_; }

 private:
  static bool enabled(spdlog::level::level_enum level) {
    return spdlog::default_logger_raw()->should_log(level);
  }
  void emit(spdlog::level::level_enum level, std::string message, std::uint64_t missed);
  std::string report(std::uint64_t missed) const;

  Options options_;
  bool started_ = false;  // an interval has begun
  std::int64_t interval_start_ns_ = 0;
  unsigned shown_ = 0;  // in the current interval
  std::uint64_t suppressed_ = 0;
};

}  // namespace flowmark
