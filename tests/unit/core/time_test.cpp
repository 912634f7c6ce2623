#include "flowmark/core/time.hpp"

#include <gtest/gtest.h>

#include <string>

namespace flowmark {
namespace {

std::string fmt_time(Micros t) {
  char buf[kRfc3339MicrosSize];
  format_rfc3339_micros(buf, t);
  return {buf, kRfc3339MicrosSize};
}

TEST(Time, FormatsUtcWithMicroseconds) {
  EXPECT_EQ(fmt_time(0), "1970-01-01T00:00:00.000000+00:00");
  // 2025-03-25T10:00:00.123456Z
  EXPECT_EQ(fmt_time(1742896800'123456), "2025-03-25T10:00:00.123456+00:00");
  EXPECT_EQ(fmt_time(951782400'000000), "2000-02-29T00:00:00.000000+00:00");  // leap day
  EXPECT_EQ(fmt_time(-1), "1969-12-31T23:59:59.999999+00:00");
}

// The date and time of day of the last second are kept between calls (per thread): times of
// one second, of alternating seconds and either side of midnight and the epoch must each be
// written whole, whatever was formatted before.
TEST(Time, FormatsTimesOfOneSecondAndAlternatingSecondsAlike) {
  const Micros midnight = 1742860800'000000;  // 2025-03-25T00:00:00Z
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(fmt_time(midnight - 1), "2025-03-24T23:59:59.999999+00:00");
    EXPECT_EQ(fmt_time(midnight), "2025-03-25T00:00:00.000000+00:00");
    EXPECT_EQ(fmt_time(midnight + 1), "2025-03-25T00:00:00.000001+00:00");
    EXPECT_EQ(fmt_time(midnight + 999'999), "2025-03-25T00:00:00.999999+00:00");
    EXPECT_EQ(fmt_time(midnight - 1), "2025-03-24T23:59:59.999999+00:00");
    EXPECT_EQ(fmt_time(-1), "1969-12-31T23:59:59.999999+00:00");
    EXPECT_EQ(fmt_time(-1'000'000), "1969-12-31T23:59:59.000000+00:00");
    EXPECT_EQ(fmt_time(0), "1970-01-01T00:00:00.000000+00:00");
    // Three times taking turns (more than the two kept), then each again.
    for (Micros t : {midnight + 5, midnight + 6, midnight - 7, midnight + 5, midnight - 7}) {
      EXPECT_EQ(fmt_time(t).substr(20, 6),
                t < midnight ? "999993" : "00000" + std::to_string(t - midnight));
    }
  }
  // Every second of a day, each twice: the same text as a formatter without memory.
  for (Micros s = 0; s < 86400; s += 7) {
    const Micros t = midnight + s * 1'000'000 + s;
    const std::string a = fmt_time(t);
    EXPECT_EQ(fmt_time(t), a);
    EXPECT_EQ(*parse_rfc3339(a), t);
  }
}

TEST(Time, ParsesRfc3339Forms) {
  EXPECT_EQ(*parse_rfc3339("2025-03-25T10:00:00.123456+00:00"), 1742896800'123456);
  EXPECT_EQ(*parse_rfc3339("2025-03-25T10:00:00Z"), 1742896800'000000);
  EXPECT_EQ(*parse_rfc3339("2025-03-25t10:00:00.5z"), 1742896800'500000);
  EXPECT_EQ(*parse_rfc3339("2025-03-25T12:00:00+02:00"), 1742896800'000000);
  EXPECT_EQ(*parse_rfc3339("2025-03-25T09:30:00.1234567-00:30"), 1742896800'123456);
  EXPECT_EQ(*parse_rfc3339("2025-03-25 10:00:00Z"), 1742896800'000000);
}

TEST(Time, RoundTrip) {
  for (Micros t : {Micros{0}, Micros{1742896800'123456}, Micros{4102444799'999999}}) {
    char buf[kRfc3339MicrosSize];
    format_rfc3339_micros(buf, t);
    EXPECT_EQ(*parse_rfc3339({buf, kRfc3339MicrosSize}), t);
  }
}

TEST(Time, RejectsWithReason) {
  for (const char* bad : {"", "2025-03-25", "2025-03-25T10:00:00", "2025-02-30T10:00:00Z",
                          "2025-13-01T00:00:00Z", "2025-03-25T24:00:00Z", "2025-03-25T10:00:00.Z",
                          "2025-03-25T10:00:00+0200", "2025-03-25T10:00:00Zjunk", "null"}) {
    auto r = parse_rfc3339(bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().code(), Errc::kMalformed);
    EXPECT_NE(r.error().message().find("RFC 3339"), std::string::npos);
  }
}

}  // namespace
}  // namespace flowmark
