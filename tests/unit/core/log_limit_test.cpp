#include "flowmark/core/log_limit.hpp"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

// An argument that counts how often it is formatted.
struct Counted {
  int* calls;
};

}  // namespace

template <>
struct fmt::formatter<Counted> : fmt::formatter<std::string_view> {
  auto format(const Counted& c, fmt::format_context& ctx) const {
    ++*c.calls;
    return fmt::formatter<std::string_view>::format("counted", ctx);
  }
};

namespace flowmark {
namespace {

using namespace std::chrono_literals;

// Installs a default logger writing "level: message" lines into a string; puts the previous
// one back at the end.
class LogLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    previous_ = spdlog::default_logger();
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out_);
    auto logger = std::make_shared<spdlog::logger>("log-limit-test", sink);
    logger->set_pattern("%l: %v");
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(logger);
  }
  void TearDown() override { spdlog::set_default_logger(previous_); }

  std::vector<std::string> lines() {
    std::vector<std::string> out;
    std::istringstream in(out_.str());
    for (std::string line; std::getline(in, line);) out.push_back(line);
    out_.str("");
    return out;
  }

  LogLimiter::Options options(unsigned budget, std::chrono::nanoseconds interval) {
    LogLimiter::Options o;
    o.budget = budget;
    o.interval = interval;
    o.clock = [this] { return now_ns_; };
    return o;
  }

  std::int64_t now_ns_ = 5'000'000'000;  // any start: the first message opens the interval
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

using Lines = std::vector<std::string>;

TEST_F(LogLimiterTest, ShowsTheBudgetPerIntervalAndReportsTheRestWhenItResumes) {
  LogLimiter limit(options(3, 1s));
  for (int i = 0; i < 5; ++i) limit.log(spdlog::level::warn, "message {}", i);
  EXPECT_EQ(lines(), (Lines{"warning: message 0", "warning: message 1", "warning: message 2"}));
  EXPECT_EQ(limit.suppressed(), 2u);

  now_ns_ += 999'999'999;  // still the same interval
  limit.log(spdlog::level::warn, "message {}", 5);
  EXPECT_EQ(lines(), Lines{});
  EXPECT_EQ(limit.suppressed(), 3u);

  now_ns_ += 1;  // the interval is over: the count, then the message
  limit.log(spdlog::level::warn, "message {}", 6);
  limit.log(spdlog::level::warn, "message {}", 7);
  EXPECT_EQ(lines(), (Lines{"warning: 3 more message(s) not shown", "warning: message 6",
                            "warning: message 7"}));
  EXPECT_EQ(limit.suppressed(), 0u);
}

TEST_F(LogLimiterTest, TheIntervalStartsWithTheFirstMessageAfterTheLastOne) {
  LogLimiter limit(options(1, 10s));
  limit.log(spdlog::level::info, "a");
  now_ns_ += 25'000'000'000;  // a quiet while: a new interval starts here, not at 20 s
  limit.log(spdlog::level::info, "b");
  now_ns_ += 9'000'000'000;
  limit.log(spdlog::level::info, "c");  // 9 s into b's interval
  now_ns_ += 1'000'000'000;
  limit.log(spdlog::level::info, "d");
  EXPECT_EQ(lines(), (Lines{"info: a", "info: b", "info: 1 more message(s) not shown", "info: d"}));
}

TEST_F(LogLimiterTest, SuffixReport) {
  auto o = options(1, 1s);
  o.report_as = LogLimiter::Report::kSuffix;
  LogLimiter limit(std::move(o));
  limit.log(spdlog::level::warn, "backend x: {}", "first");
  limit.log(spdlog::level::warn, "backend x: {}", "second");
  limit.log(spdlog::level::warn, "backend x: {}", "third");
  now_ns_ += 1'000'000'000;
  limit.log(spdlog::level::warn, "backend x: {}", "fourth");
  EXPECT_EQ(lines(),
            (Lines{"warning: backend x: first", "warning: backend x: fourth (2 more not shown)"}));
}

TEST_F(LogLimiterTest, CustomReportAndFlush) {
  auto o = options(2, 1s);
  o.report = [](std::uint64_t n) { return fmt::format("{} more rejected line(s) not shown", n); };
  LogLimiter limit(std::move(o));
  limit.flush();  // nothing held back: nothing said
  for (int i = 0; i < 6; ++i) limit.log(spdlog::level::warn, "line {}", i);
  limit.flush();
  limit.flush();  // said once
  EXPECT_EQ(lines(), (Lines{"warning: line 0", "warning: line 1",
                            "warning: 4 more rejected line(s) not shown"}));
  // The flushed ones are not told again when logging resumes.
  now_ns_ += 1'000'000'000;
  limit.log(spdlog::level::warn, "line {}", 6);
  EXPECT_EQ(lines(), Lines{"warning: line 6"});
}

TEST_F(LogLimiterTest, FormatsOnlyWhatIsShown) {
  int calls = 0;
  LogLimiter limit(options(2, 1s));
  for (int i = 0; i < 100; ++i) limit.log(spdlog::level::warn, "{} {}", Counted{&calls}, i);
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(limit.suppressed(), 98u);

  int built = 0;
  auto build = [&] {
    ++built;
    return std::string("built");
  };
  for (int i = 0; i < 10; ++i) limit.log(spdlog::level::warn, build);
  EXPECT_EQ(built, 0);  // the budget of this interval is spent
  now_ns_ += 1'000'000'000;
  for (int i = 0; i < 10; ++i) limit.log(spdlog::level::warn, build);
  EXPECT_EQ(built, 2);
  auto shown = lines();
  ASSERT_EQ(shown.size(), 5u);
  EXPECT_EQ(shown[2], "warning: 108 more message(s) not shown");
  EXPECT_EQ(shown[3], "warning: built");
}

TEST_F(LogLimiterTest, ALevelTheLoggerFiltersCostsNothing) {
  spdlog::default_logger_raw()->set_level(spdlog::level::err);
  int calls = 0;
  LogLimiter limit(options(1, 1s));
  for (int i = 0; i < 5; ++i) limit.log(spdlog::level::warn, "{}", Counted{&calls});
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(limit.suppressed(), 0u);  // not held back: filtered
  limit.log(spdlog::level::err, "{}", Counted{&calls});
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(lines(), Lines{"error: counted"});
}

TEST_F(LogLimiterTest, AdmitForCallersThatLogThemselves) {
  LogLimiter limit(options(1, 1s));
  EXPECT_EQ(limit.admit(), std::optional<std::uint64_t>(0));
  EXPECT_EQ(limit.admit(), std::nullopt);
  EXPECT_EQ(limit.admit(), std::nullopt);
  now_ns_ += 1'000'000'000;
  EXPECT_EQ(limit.admit(), std::optional<std::uint64_t>(2));
  EXPECT_EQ(lines(), Lines{});
}

}  // namespace
}  // namespace flowmark
