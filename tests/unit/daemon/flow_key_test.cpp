#include "flowmark/daemon/flow_key.hpp"

#include <gtest/gtest.h>

#include <map>
#include <unordered_map>

namespace flowmark::daemon {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using scitags::Protocol;

FlowEvent event(std::string_view src, std::string_view dst, Protocol p = Protocol::kTcp) {
  FlowEvent e;
  e.protocol = p;
  e.src = *Endpoint::parse(src);
  e.dst = *Endpoint::parse(dst);
  return e;
}

TEST(FlowKey, IsTheEventsProtocolAndEndpoints) {
  auto a = event("192.0.2.1:2345", "198.51.100.7:443");
  auto b = a;
  b.state = FlowState::kEnd;  // the rest of the event is not part of the key
  b.experiment = 7;
  b.start_time = 12345;
  EXPECT_EQ(key_of(a), key_of(b));
  EXPECT_EQ(FlowKeyHash{}(key_of(a)), FlowKeyHash{}(key_of(b)));
  EXPECT_EQ(key_of(a).protocol, Protocol::kTcp);
  EXPECT_EQ(key_of(a).src, a.src);
  EXPECT_EQ(key_of(a).dst, a.dst);
}

TEST(FlowKey, EveryFieldTellsFlowsApart) {
  // Not canonical (unlike the observer's packet key): the two directions are two flows.
  const auto base = key_of(event("192.0.2.1:2345", "198.51.100.7:443"));
  const FlowKey others[] = {
      key_of(event("198.51.100.7:443", "192.0.2.1:2345")),
      key_of(event("192.0.2.1:2345", "198.51.100.7:443", Protocol::kUdp)),
      key_of(event("192.0.2.1:2346", "198.51.100.7:443")),
      key_of(event("192.0.2.1:2345", "198.51.100.7:444")),
      key_of(event("192.0.2.2:2345", "198.51.100.7:443")),
      key_of(event("192.0.2.1:2345", "198.51.100.8:443")),
      key_of(event("[::ffff:192.0.2.1]:2345", "198.51.100.7:443")),  // same address, IPv6 form
      key_of(event("[2001:db8::1]:2345", "[2001:db8::2]:443")),
  };
  std::unordered_map<FlowKey, int, FlowKeyHash> table{{base, -1}};
  std::map<FlowKey, int> ordered{{base, -1}};
  for (int i = 0; i < static_cast<int>(std::size(others)); ++i) {
    SCOPED_TRACE(i);
    EXPECT_NE(others[i], base);
    EXPECT_NE(FlowKeyHash{}(others[i]), FlowKeyHash{}(base));
    EXPECT_TRUE(table.emplace(others[i], i).second);
    EXPECT_TRUE(ordered.emplace(others[i], i).second);
  }
  EXPECT_EQ(table.size(), std::size(others) + 1);
  EXPECT_EQ(table.at(base), -1);
  EXPECT_EQ(ordered.size(), std::size(others) + 1);
}

TEST(FlowKey, OrderedByProtocolThenSourceThenDestination) {
  auto tcp_high = key_of(event("192.0.2.9:1", "192.0.2.9:1"));
  auto udp_low = key_of(event("192.0.2.1:1", "192.0.2.1:1", Protocol::kUdp));
  auto tcp_low_src = key_of(event("192.0.2.1:1", "192.0.2.9:9"));
  EXPECT_LT(tcp_high, udp_low);
  EXPECT_LT(tcp_low_src, tcp_high);
  EXPECT_LT(key_of(event("192.0.2.1:1", "192.0.2.1:1")),
            key_of(event("192.0.2.1:1", "192.0.2.1:2")));
}

}  // namespace
}  // namespace flowmark::daemon
