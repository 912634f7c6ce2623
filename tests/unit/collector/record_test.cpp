// The collector's record of a flow: state by end reason, what it computes (duration, volume,
// throughput, direction), names and sites, and its JSON.
#include "flowmark/collector/record.hpp"

#include <gtest/gtest.h>

namespace flowmark::collector {
namespace {

using scitags::EndReason;
using scitags::FlowState;

scitags::FlowEvent end_event(std::uint64_t sent, std::uint64_t received) {
  scitags::FlowEvent e;
  e.state = FlowState::kEnd;
  e.src = *Endpoint::parse("192.0.2.1:2345");
  e.dst = *Endpoint::parse("[2001:db8::2]:443");
  e.experiment = 2;  // atlas in the built-in registry
  e.activity = 1;
  e.start_time = 1'700'000'000'000'000;
  e.end_time = e.start_time + 4'000'000;
  e.current_time = e.end_time;
  e.usage = scitags::Usage{received, sent};
  return e;
}

TEST(Record, ComputesWhatTheScitagsCollectorComputes) {
  SiteMap sites;
  ASSERT_TRUE(sites.add("SITE-A", *Network::parse("192.0.2.0/24")));
  const auto& reg = scitags::Registry::builtin();
  auto r = make_record(end_event(1000, 8'000'000), &reg, &sites);
  EXPECT_EQ(r.state, RecordState::kComplete);
  EXPECT_EQ(r.volume(), 8'000'000u);
  EXPECT_DOUBLE_EQ(r.duration(), 4.0);
  EXPECT_DOUBLE_EQ(r.throughput(), 2'000'000.0);
  EXPECT_EQ(r.direction(), Direction::kDstToSrc);
  EXPECT_EQ(r.experiment, reg.experiment_name(2).value());
  EXPECT_FALSE(r.activity.empty());
  EXPECT_EQ(r.src_site, "SITE-A");
  EXPECT_EQ(r.dst_site, "");
  // The 5-tuple stays as sent, whichever way the bytes went.
  EXPECT_EQ(r.src.to_string(), "192.0.2.1:2345");
}

TEST(Record, StateFollowsTheEndReason) {
  auto e = end_event(10, 0);
  e.end_reason = EndReason::kExpired;
  EXPECT_EQ(make_record(e, nullptr, nullptr).state, RecordState::kTimedOut);
  e.end_reason = EndReason::kEvicted;
  EXPECT_EQ(make_record(e, nullptr, nullptr).state, RecordState::kEvicted);
  e.end_reason = EndReason::kShutdown;
  auto open = make_record(e, nullptr, nullptr);
  EXPECT_EQ(open.state, RecordState::kOpen);
  EXPECT_EQ(open.end_time, 0);
  EXPECT_DOUBLE_EQ(open.duration(), 4.0);  // to the time of the last event
  e.state = FlowState::kOngoing;
  e.end_time = 0;
  EXPECT_EQ(make_record(e, nullptr, nullptr).state, RecordState::kOpen);
  EXPECT_EQ(make_record(e, nullptr, nullptr).direction(), Direction::kSrcToDst);
  e.usage.reset();
  EXPECT_EQ(make_record(e, nullptr, nullptr).direction(), Direction::kUnknown);
  for (auto s : {RecordState::kOpen, RecordState::kComplete, RecordState::kTimedOut,
                 RecordState::kEvicted}) {
    EXPECT_EQ(parse_record_state(to_string(s)), s);
  }
}

TEST(Record, UnknownIdsKeepTheirNumbersWithNullNames) {
  auto e = end_event(5, 5);
  e.experiment = 999;
  e.activity = 77;
  auto r = make_record(e, &scitags::Registry::builtin(), nullptr);
  EXPECT_EQ(r.experiment_id, 999u);
  EXPECT_EQ(r.activity_id, 77u);
  std::string json;
  append_json(r, json);
  EXPECT_NE(json.find(R"("experiment_id":999,"activity_id":77,"experiment":null,"activity":null)"),
            std::string::npos)
      << json;
}

TEST(Record, Json) {
  SiteMap sites;
  ASSERT_TRUE(sites.add("B \"quoted\"", *Network::parse("2001:db8::/32")));
  auto r = make_record(end_event(3000, 1000), nullptr, &sites);
  std::string json;
  append_json(r, json);
  EXPECT_EQ(json,
            R"({"protocol":"tcp","src_ip":"192.0.2.1","src_port":2345,"dst_ip":"2001:db8::2",)"
            R"("dst_port":443,"start_time":"2023-11-14T22:13:20.000000+00:00",)"
            R"("end_time":"2023-11-14T22:13:24.000000+00:00","state":"complete","duration":4,)"
            R"("bytes_sent":3000,"bytes_received":1000,"volume":3000,"throughput":750,)"
            R"("direction":"src_to_dst","experiment_id":2,"activity_id":1,"experiment":null,)"
            R"("activity":null,"src_site":null,"dst_site":"B \"quoted\""})");
}

}  // namespace
}  // namespace flowmark::collector
