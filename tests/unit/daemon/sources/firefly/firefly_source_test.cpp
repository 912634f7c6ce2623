// The `firefly` source on loopback: fireflies sent by a real UDP socket become flow events
// in the sink through the service's EventLoop; rejected datagrams and senders outside the
// allow list are counted by reason and push nothing; its configuration.
#include "daemon/sources/firefly/firefly_source.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "../../test_util.hpp"
#include "../../udp_loopback.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using testing::UdpLoopback;

FlowEvent event(std::uint16_t sport) {
  FlowEvent e;
  e.src = {*IpAddress::parse("192.0.2.1"), sport};
  e.dst = {*IpAddress::parse("192.0.2.2"), 5777};
  e.experiment = 2;
  e.activity = 9;
  e.start_time = 1'742'896'800'000'000;
  return e;
}

struct Fixture : testing::SourceFixture {
  std::uint16_t port = testing::free_udp_port();
  Endpoint at{*IpAddress::parse("127.0.0.1"), port};
  scitags::FireflyEncoder encoder{{.hostname = "sender"}};

  Fixture() { EXPECT_TRUE(register_firefly_source(factories)); }
  Result<std::unique_ptr<Source>> make(const std::string& extra = "") {
    return SourceFixture::make("firefly", "ffin",
                               "bind = '127.0.0.1'\nport = " + std::to_string(port) + "\n" + extra);
  }
  std::uint64_t rejected(std::string_view reason) const {
    return counters.value("flowmark_source_rejected_total",
                          {{"source", "ffin"}, {"reason", std::string(reason)}});
  }
  std::uint64_t received() const {
    return counters.value("flowmark_firefly_datagrams_total", {{"source", "ffin"}});
  }
  std::string wire(const FlowEvent& e) { return std::string(*encoder.encode(e, e.start_time)); }
};

TEST(FireflySource, FirefliesBecomeEvents) {
  Fixture f;
  auto src = f.make();
  ASSERT_TRUE(src) << src.error().message();
  ASSERT_TRUE((*src)->start(f.loop, f.sink));
  UdpLoopback tx;
  ASSERT_TRUE(tx.send_to(f.at, f.wire(event(1000))));
  FlowEvent end = event(1001);
  end.state = FlowState::kEnd;
  end.end_time = end.start_time + 5;
  ASSERT_TRUE(tx.send_to(f.at, f.wire(end)));
  ASSERT_TRUE(f.run_until([&] { return f.sink.events.size() == 2; }));
  EXPECT_EQ(f.sink.events[0].src, event(1000).src);
  EXPECT_EQ(f.sink.events[0].dst, event(1000).dst);
  EXPECT_EQ(f.sink.events[0].experiment, 2u);
  EXPECT_EQ(f.sink.events[0].activity, 9u);
  EXPECT_EQ(f.sink.events[1].state, FlowState::kEnd);
  EXPECT_EQ(f.sink.events[1].end_time, end.end_time);
  EXPECT_EQ(f.received(), 2u);
  (*src)->stop();
  (*src)->stop();  // idempotent
}

TEST(FireflySource, RejectedDatagramsAreCountedByReasonAndPushNothing) {
  Fixture f;
  auto src = f.make();
  ASSERT_TRUE(src) << src.error().message();
  ASSERT_TRUE((*src)->start(f.loop, f.sink));
  UdpLoopback tx;
  ASSERT_TRUE(tx.send_to(f.at, "<134>1 not a firefly"));
  ASSERT_TRUE(tx.send_to(f.at, "{\"version\": 1"));
  ASSERT_TRUE(tx.send_to(f.at, f.wire(event(1002))));  // the marker: comes after both
  ASSERT_TRUE(f.run_until([&] { return !f.sink.events.empty(); }));
  EXPECT_EQ(f.sink.events.size(), 1u);
  EXPECT_EQ(f.sink.events[0].src.port, 1002);
  EXPECT_EQ(f.received(), 3u);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < scitags::kRejectKinds; ++i)
    total += f.rejected(scitags::to_string(static_cast<scitags::Reject>(i)));
  EXPECT_EQ(total, 2u);
}

TEST(FireflySource, SendersOutsideTheAllowListAreCountedNotPushed) {
  Fixture f;
  auto src = f.make("allow = ['10.0.0.0/8']");
  ASSERT_TRUE(src) << src.error().message();
  ASSERT_TRUE((*src)->start(f.loop, f.sink));
  UdpLoopback tx;  // 127.0.0.1: not allowed
  ASSERT_TRUE(tx.send_to(f.at, f.wire(event(1003))));
  ASSERT_TRUE(f.run_until([&] { return f.rejected("sender_not_allowed") == 1; }));
  EXPECT_TRUE(f.sink.events.empty());
}

TEST(FireflySource, AllowListAdmitsItsNetworks) {
  Fixture f;
  auto src = f.make("allow = ['127.0.0.0/8']");
  ASSERT_TRUE(src) << src.error().message();
  ASSERT_TRUE((*src)->start(f.loop, f.sink));
  UdpLoopback tx;
  ASSERT_TRUE(tx.send_to(f.at, f.wire(event(1004))));
  ASSERT_TRUE(f.run_until([&] { return f.sink.events.size() == 1; }));
  EXPECT_EQ(f.rejected("sender_not_allowed"), 0u);
}

TEST(FireflySource, ConfigurationErrorsNameTheKey) {
  Fixture f;
  for (const char* bad :
       {"group = '10.0.0.1'", "allow = ['not a network']", "interface = 'nosuchif0'"}) {
    auto src = f.make(bad);
    ASSERT_FALSE(src) << bad;
    const std::string key = std::string(bad).substr(0, std::string(bad).find(' '));
    EXPECT_NE(src.error().message().find(key), std::string::npos) << src.error().message();
  }
}

}  // namespace
}  // namespace flowmark::daemon

namespace flowmark::daemon {
namespace {

TEST(FireflySource, ThreadsShareThePortAndLoseNothingTheyRead) {
  Fixture f;
  auto src = f.make("threads = 3\n");
  ASSERT_TRUE(src) << src.error().message();
  ASSERT_TRUE((*src)->start(f.loop, f.sink));
  // Several senders (the kernel spreads them over the sockets by address and port), each
  // sending a few fireflies and one malformed datagram.
  constexpr int kSenders = 8, kEach = 50;
  std::vector<std::unique_ptr<UdpLoopback>> tx;
  for (int s = 0; s < kSenders; ++s) {
    tx.push_back(std::make_unique<UdpLoopback>());
    for (int i = 0; i < kEach; ++i) {
      ASSERT_TRUE(tx.back()->send_to(
          f.at, f.wire(event(static_cast<std::uint16_t>(1000 + s * kEach + i)))));
    }
    ASSERT_TRUE(tx.back()->send_to(f.at, "not a firefly"));
  }
  ASSERT_TRUE(f.run_until([&] {
    return f.sink.events.size() == kSenders * kEach &&
           f.received() == static_cast<std::uint64_t>(kSenders * (kEach + 1));
  }));
  std::vector<int> seen(kSenders * kEach, 0);
  for (const auto& e : f.sink.events) ++seen.at(e.src.port - 1000);
  for (int n : seen) EXPECT_EQ(n, 1);
  (*src)->stop();
  EXPECT_EQ(f.rejected("bad_header"), static_cast<std::uint64_t>(kSenders));
}

TEST(FireflySource, ThreadsNeedAUnicastSource) {
  Fixture f;
  auto src = f.make("threads = 2\ngroup = '239.1.2.3'\n");
  ASSERT_FALSE(src);
  EXPECT_NE(src.error().message().find("threads"), std::string::npos);
  EXPECT_FALSE(f.make("threads = 0\n"));
}

}  // namespace
}  // namespace flowmark::daemon
