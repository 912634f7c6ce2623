// Regressions found by fuzz_firefly; each reproducer is also in tests/fuzz/corpus/firefly.
#include <gtest/gtest.h>

#include <string>

#include "flowmark/scitags/firefly.hpp"

namespace flowmark::scitags {
namespace {

constexpr Micros kNow = 1742896800'123456;  // 2025-03-25T10:00:00.123456Z

std::string firefly(std::string_view lifecycle) {
  return R"({"version":1,"flow-lifecycle":)" + std::string(lifecycle) +
         R"(,"flow-id":{"afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp",)"
         R"("src-port":1094,"dst-port":40700},"context":{"experiment-id":2,"activity-id":3}})";
}

// corpus: regression-end-time-before-1970. An end-time before 1970 was accepted, though
// the encoder refuses an end event without a positive end time: the firefly could not be
// forwarded. Every time must now be after 1970-01-01T00:00:00Z and at most year 9999 (the
// encoder clamps beyond).
TEST(FireflyRegress, TimesOutsideWhatTheEncoderWritesAreRejected) {
  struct Case {
    const char* lifecycle;
    const char* detail_part;
  };
  const Case cases[] = {
      {R"({"state":"end","current-time":"1012-03-25T10:05:00.000000Z",)"
       R"("start-time":"2025-03-25T10:00:00.123456Z","end-time":"1084-03-25T10:05:00.000000Z"})",
       "flow-lifecycle.current-time"},
      {R"({"state":"end","start-time":"2025-03-25T10:00:00.123456Z",)"
       R"("end-time":"1084-03-25T10:05:00.000000Z"})",
       "flow-lifecycle.end-time: '1084-03-25T10:05:00.000000Z' is not after 1970"},
      {R"({"state":"start","start-time":"1970-01-01T00:00:00Z"})",
       "flow-lifecycle.start-time: '1970-01-01T00:00:00Z' is not after 1970"},
      {R"({"state":"start","start-time":"1969-12-31T23:59:59.999999Z"})",
       "flow-lifecycle.start-time"},
      {R"({"state":"start","start-time":"9999-12-31T23:59:59.999999-00:01"})",
       "is after 9999-12-31T23:59:59.999999Z"},
  };
  for (const bool lenient : {false, true}) {
    FireflyDecoder dec({.lenient_start_time = lenient});
    for (const auto& c : cases) {
      auto r = dec.decode(firefly(c.lifecycle));
      ASSERT_FALSE(r.has_value()) << c.lifecycle;
      EXPECT_EQ(r.error().reason, Reject::kBadTime) << r.error().detail;
      EXPECT_NE(r.error().detail.find(c.detail_part), std::string::npos) << r.error().detail;
    }
  }
  // The bounds themselves are fine.
  FireflyDecoder dec;
  auto r = dec.decode(firefly(R"({"state":"start","start-time":"1970-01-01T00:00:00.000001Z",)"
                              R"("current-time":"9999-12-31T23:59:59.999999Z"})"));
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  EXPECT_EQ((*r)->event.start_time, 1);
}

// corpus: regression-ongoing-end-time. An ongoing (or start) firefly with an end-time
// decoded with it, but the encoder and the printer wrote end-time only on end events, so
// the event did not survive a re-encoding.
TEST(FireflyRegress, EndTimeOfAnOngoingFlowSurvivesReEncoding) {
  const std::string wire = firefly(
      R"({"state":"ongoing","current-time":"2025-03-25T10:05:00.000000Z",)"
      R"("start-time":"2025-03-25T10:00:00.123456Z","end-time":"2025-03-25T10:05:00.000000Z"})");
  FireflyDecoder dec;
  auto r = dec.decode(wire);
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  const FlowEvent e = (*r)->event;
  EXPECT_EQ(e.state, FlowState::kOngoing);
  EXPECT_EQ(e.end_time, 1742897100'000000);

  std::string printed;
  append_firefly_json(printed, **r);
  FireflyEncoder enc({.hostname = "h"});
  auto encoded = enc.encode(e, kNow);
  ASSERT_TRUE(encoded.has_value()) << encoded.error().message();
  for (const std::string& again : {printed, std::string(*encoded)}) {
    auto back = dec.decode(again);
    ASSERT_TRUE(back.has_value()) << back.error().detail << "\n" << again;
    EXPECT_EQ((*back)->event, e) << again;
  }
}

}  // namespace
}  // namespace flowmark::scitags
