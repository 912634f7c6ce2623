// The `observer` source on the loopback interface (a live capture: root or CAP_NET_RAW):
// UDP datagrams sent by the test become a start event while the flow lives and an end
// event with the bytes seen when the source stops; the filter keeps other traffic out.
#include "daemon/sources/observer/observer_source.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "../../test_util.hpp"
#include "../../udp_loopback.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using testing::UdpLoopback;

struct Fixture : testing::SourceFixture {
  Fixture() { EXPECT_TRUE(register_observer_source(factories)); }
  Result<std::unique_ptr<Source>> make(const std::string& text) {
    return SourceFixture::make("observer", "wire", text);
  }
};

// Only a missing privilege may skip: the capture of lo works for root on any Linux.
#define START_OR_SKIP(src, f)                                                             \
  do {                                                                                    \
    if (auto r_ = (src)->start((f).loop, (f).sink); !r_) {                                \
      const auto& c_ = r_.error().code();                                                 \
      if (c_ == std::errc::operation_not_permitted || c_ == std::errc::permission_denied) \
        GTEST_SKIP() << "no capture privilege: " << r_.error().message();                 \
      FAIL() << r_.error().message();                                                     \
    }                                                                                     \
  } while (0)

TEST(ObserverSource, UdpFlowStartsWhileLiveAndEndsWithItsBytesAtStop) {
  UdpLoopback server, client, other;
  ASSERT_TRUE(server.ok() && client.ok() && other.ok());
  Fixture f;
  auto src = f.make("interface = 'lo'\nfilter = 'udp port " + std::to_string(server.local().port) +
                    "'\nexperiment = 2\nactivity = 9");
  ASSERT_TRUE(src) << src.error().message();
  START_OR_SKIP(*src, f);
  // The capture is open once start() returns: the first datagram is seen.
  ASSERT_TRUE(other.send_to(client.local(), std::string(50, 'o')));  // filtered out
  ASSERT_TRUE(client.send_to(server.local(), std::string(100, 'x')));
  ASSERT_TRUE(f.run_until([&] { return !f.sink.events.empty(); }));
  ASSERT_EQ(f.sink.events.size(), 1u);
  const FlowEvent start = f.sink.events[0];  // a copy: the vector grows
  EXPECT_EQ(start.state, FlowState::kStart);
  EXPECT_EQ(start.protocol, scitags::Protocol::kUdp);
  EXPECT_EQ(start.src, client.local());
  EXPECT_EQ(start.dst, server.local());
  EXPECT_EQ(start.experiment, 2u);
  EXPECT_EQ(start.activity, 9u);
  EXPECT_GT(start.start_time, 0);
  ASSERT_TRUE(server.receive());
  ASSERT_TRUE(client.send_to(server.local(), std::string(100, 'y')));
  ASSERT_TRUE(server.receive());
  // The second datagram was captured: count it before stopping (the marker of the end).
  ASSERT_TRUE(f.run_until([&] {
    return f.counters.value("flowmark_observer_packets_total", {{"source", "wire"}}) >= 2;
  }));
  (*src)->stop();  // finishes the observer: every live flow ends
  ASSERT_EQ(f.sink.events.size(), 2u);
  const FlowEvent& end = f.sink.events[1];
  EXPECT_EQ(end.state, FlowState::kEnd);
  EXPECT_EQ(end.src, client.local());
  EXPECT_EQ(end.dst, server.local());
  ASSERT_TRUE(end.usage);
  EXPECT_GE(end.usage->sent, 200u);  // two 100-byte payloads and their headers
  EXPECT_EQ(end.usage->received, 0u);
  EXPECT_GE(end.end_time, end.start_time);
  EXPECT_EQ(end.start_time, start.start_time);
}

TEST(ObserverSource, UnknownInterfaceFailsAtStartNamingIt) {
  Fixture f;
  auto src = f.make("interface = 'nosuchif0'");
  ASSERT_TRUE(src) << src.error().message();
  auto r = (*src)->start(f.loop, f.sink);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("nosuchif0"), std::string::npos) << r.error().message();
}

TEST(ObserverSource, ConfigurationNeedsAnInterface) {
  Fixture f;
  auto src = f.make("filter = 'udp'");
  ASSERT_FALSE(src);
  EXPECT_NE(src.error().message().find("interface"), std::string::npos) << src.error().message();
}

}  // namespace
}  // namespace flowmark::daemon
