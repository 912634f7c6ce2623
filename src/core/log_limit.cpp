#include "flowmark/core/log_limit.hpp"

#include "flowmark/core/time.hpp"

namespace flowmark {

LogLimiter::LogLimiter(Options options) : options_(std::move(options)) {
  if (!options_.clock) options_.clock = monotonic_ns;
}

LogLimiter::LogLimiter(unsigned budget, std::chrono::nanoseconds interval, Report report_as,
                       std::function<std::string(std::uint64_t)> report)
    : LogLimiter([&] {
        Options o;
        o.budget = budget;
        o.interval = interval;
        o.report_as = report_as;
        o.report = std::move(report);
        return o;
      }()) {}

std::optional<std::uint64_t> LogLimiter::admit() {
  const std::int64_t now = options_.clock();
  if (!started_ || now - interval_start_ns_ >= options_.interval.count()) {
    started_ = true;
    interval_start_ns_ = now;
    shown_ = 0;
  }
  if (shown_ >= options_.budget) {
    ++suppressed_;
    return std::nullopt;
  }
  ++shown_;
  return std::exchange(suppressed_, 0);
}

void LogLimiter::flush(spdlog::level::level_enum level) {
  if (suppressed_ == 0) return;
  const std::uint64_t missed = std::exchange(suppressed_, 0);
  if (!enabled(level)) return;
  // A suffix is written for the end of a message: alone, the plain line says it better.
  spdlog::default_logger_raw()->log(level, "{}",
                                    options_.report_as == Report::kLine
                                        ? report(missed)
                                        : fmt::format("{} more message(s) not shown", missed));
}

void LogLimiter::emit(spdlog::level::level_enum level, std::string message, std::uint64_t missed) {
  auto* logger = spdlog::default_logger_raw();
  if (missed == 0) {
    logger->log(level, "{}", message);
  } else if (options_.report_as == Report::kLine) {
    logger->log(level, "{}", report(missed));
    logger->log(level, "{}", message);
  } else {
    logger->log(level, "{}{}", message, report(missed));
  }
}

std::string LogLimiter::report(std::uint64_t missed) const {
  if (options_.report) return options_.report(missed);
  if (options_.report_as == Report::kSuffix) return fmt::format(" ({} more not shown)", missed);
  return fmt::format("{} more message(s) not shown", missed);
}

}  // namespace flowmark
