// The `firefly` backend on loopback: fireflies to collectors and to the flow's destination
// read by a real UDP socket and decoded, the syslog header option, `ongoing` fireflies for
// live flows on each tick (with the TCP state from the reader), and its configuration.
#include "daemon/backends/firefly/firefly_backend.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <thread>

#include <toml++/toml.h>

#include "../../test_util.hpp"
#include "../../udp_loopback.hpp"
#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using testing::UdpLoopback;

FlowEvent event(std::uint16_t sport, FlowState state = FlowState::kStart) {
  return testing::sample_event("127.0.0.1", "127.0.0.1", sport, state);
}

struct Fixture : testing::BackendFixture {
  scitags::FireflyDecoder decoder;

  Fixture() : BackendFixture("ff.example.org") {}
  Result<std::unique_ptr<Backend>> make(const std::string& text, FlowInfoReader reader = {},
                                        FlowDetailReader detail_reader = {}) {
    EXPECT_TRUE(register_firefly_backend(factories, reader, detail_reader));
    return BackendFixture::make("firefly", "ff", text);
  }
  std::uint64_t sends(std::string_view to, std::string_view outcome) const {
    return counters.value(
        "flowmark_firefly_sends_total",
        {{"backend", "ff"}, {"to", std::string(to)}, {"outcome", std::string(outcome)}});
  }
  // The next firefly at `rx`, decoded (fails the test when none comes).
  scitags::Firefly next(UdpLoopback& rx) {
    auto d = rx.receive();
    EXPECT_TRUE(d) << "no firefly within 5 s";
    if (!d) return {};
    auto f = decoder.decode(*d);
    EXPECT_TRUE(f) << *d;
    return f ? **f : scitags::Firefly{};
  }
};

TEST(FireflyBackend, CollectorsGetEachEventWithTheSyslogHeader) {
  UdpLoopback c1, c2;
  ASSERT_TRUE(c1.ok() && c2.ok());
  Fixture f;
  auto b = f.make("to_destination = false\ncollectors = ['" + c1.local().to_string() + "', '" +
                  c2.local().to_string() + "']\napplication = 'unit'");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1000));
  (*b)->flush();  // as the worker does after each batch
  for (auto* rx : {&c1, &c2}) {
    const auto got = f.next(*rx);
    EXPECT_TRUE(got.has_header);
    EXPECT_EQ(got.hostname, "ff.example.org");
    EXPECT_EQ(got.application, "unit");
    EXPECT_EQ(got.event.state, FlowState::kStart);
    EXPECT_EQ(got.event.src, event(1000).src);
    EXPECT_EQ(got.event.dst, event(1000).dst);
    EXPECT_EQ(got.event.experiment, 2u);
    EXPECT_EQ(got.event.activity, 1u);
    EXPECT_EQ(got.event.start_time, event(1000).start_time);
  }
  EXPECT_EQ(f.sends("collector", "sent"), 2u);
  EXPECT_EQ(f.sends("destination", "sent"), 0u);
  (*b)->stop();
}

// The fireflies sent together (between two flushes) carry one syslog timestamp: the clock is
// read once for them, even when it moved between their events; the next batch reads it again.
TEST(FireflyBackend, OneSyslogTimestampPerBatch) {
  UdpLoopback c;
  ASSERT_TRUE(c.ok());
  Fixture f;
  auto b = f.make("to_destination = false\ncollectors = ['" + c.local().to_string() + "']");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  auto clock_moved_past = [](Micros t) {  // waits (a condition) until the clock passed t
    while (now_micros() <= t) std::this_thread::yield();
  };
  const Micros before = now_micros();
  (*b)->on_event(event(1000));
  clock_moved_past(before + 1'000);
  (*b)->on_event(event(1001));
  (*b)->flush();
  const auto first = f.next(c), second = f.next(c);
  EXPECT_GE(first.header_time, before);
  EXPECT_EQ(second.header_time, first.header_time);
  clock_moved_past(first.header_time + 1'000);
  (*b)->on_event(event(1002));
  (*b)->flush();
  EXPECT_GT(f.next(c).header_time, first.header_time);
  (*b)->stop();
}

TEST(FireflyBackend, ToTheFlowsDestinationAtTheConfiguredPortWithoutHeader) {
  UdpLoopback dest;
  ASSERT_TRUE(dest.ok());
  Fixture f;
  auto b = f.make("port = " + std::to_string(dest.local().port) + "\nsyslog_header = false");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1001, FlowState::kEnd));
  (*b)->flush();  // as the worker does after each batch
  const auto got = f.next(dest);
  EXPECT_FALSE(got.has_header);
  EXPECT_EQ(got.event.state, FlowState::kEnd);
  EXPECT_EQ(got.event.end_time, event(1001, FlowState::kEnd).end_time);
  EXPECT_EQ(f.sends("destination", "sent"), 1u);
}

TEST(FireflyBackend, OngoingFirefliesForLiveFlowsOnEachTick) {
  UdpLoopback coll;
  ASSERT_TRUE(coll.ok());
  Fixture f;
  int reads = 0;
  auto b = f.make("to_destination = false\ncollectors = ['" + coll.local().to_string() +
                      "']\nongoing_interval = 30",
                  [&](const FlowEvent&) -> std::optional<scitags::TcpInfo> {
                    ++reads;
                    scitags::TcpInfo t;
                    t.bytes_acked = 4000;
                    t.bytes_received = 300;
                    return t;
                  });
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ((*b)->tick_interval(), std::chrono::seconds(30));
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(2000));
  (*b)->flush();  // as the worker does after each batch
  (*b)->on_event(event(2001));
  (*b)->flush();  // as the worker does after each batch
  EXPECT_EQ(f.next(coll).event.state, FlowState::kStart);
  EXPECT_EQ(f.next(coll).event.state, FlowState::kStart);
  (*b)->on_event(event(2001, FlowState::kEnd));
  (*b)->flush();  // as the worker does after each batch
  EXPECT_EQ(f.next(coll).event.state, FlowState::kEnd);
  (*b)->on_tick();  // only 2000 is live
  const auto ongoing = f.next(coll);
  EXPECT_EQ(ongoing.event.state, FlowState::kOngoing);
  EXPECT_EQ(ongoing.event.src.port, 2000);
  ASSERT_TRUE(ongoing.event.usage);
  EXPECT_EQ(ongoing.event.usage->sent, 4000u);
  EXPECT_EQ(ongoing.event.usage->received, 300u);
  EXPECT_EQ(reads, 1);
  // The marker: a later datagram arrives, and nothing came between (no ongoing for 2001).
  (*b)->on_event(event(2002));
  (*b)->flush();  // as the worker does after each batch
  EXPECT_EQ(f.next(coll).event.src.port, 2002);
  EXPECT_EQ(f.sends("collector", "sent"), 5u);
}

TEST(FireflyBackend, TcpInfoOnlyWhenAsked) {
  UdpLoopback coll;
  ASSERT_TRUE(coll.ok());
  Fixture f;
  int reads = 0;
  auto reader = [&](const FlowEvent&) -> std::optional<scitags::TcpInfo> {
    ++reads;
    scitags::TcpInfo t;
    t.rtt_us = 1234;
    return t;
  };
  auto b = f.make(
      "to_destination = false\ntcp_info = true\ncollectors = ['" + coll.local().to_string() + "']",
      reader);
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(3000));
  (*b)->flush();  // as the worker does after each batch
  const auto got = f.next(coll);
  EXPECT_EQ(reads, 1);
  bool netlink = false;
  for (const auto& [k, v] : got.extra) netlink |= k == "netlink" && v.find("1234") != v.npos;
  EXPECT_TRUE(netlink) << "the TCP state travels as the \"netlink\" member";
}

TEST(FireflyBackend, ConfigurationErrorsNameTheKey) {
  Fixture f, g;
  auto nowhere = f.make("to_destination = false");
  ASSERT_FALSE(nowhere);
  EXPECT_NE(nowhere.error().message().find("collectors"), std::string::npos)
      << nowhere.error().message();
  auto ttl = g.make("ttl = 300");
  ASSERT_FALSE(ttl);
  EXPECT_NE(ttl.error().message().find("ttl"), std::string::npos) << ttl.error().message();
}

// ongoing_shape: flowd-go's lean form of the TCP statistics in ongoing fireflies (from the
// detail reader), its 1 s period by default; start and end fireflies are unchanged.
TEST(FireflyBackend, OngoingShapeLeanWithFlowdGosPeriod) {
  UdpLoopback coll;
  ASSERT_TRUE(coll.ok());
  Fixture f;
  int reads = 0;
  auto b = f.make("to_destination = false\ncollectors = ['" + coll.local().to_string() +
                      "']\nongoing_shape = 'lean'",
                  {}, [&](const FlowEvent&) -> std::optional<scitags::TcpDetail> {
                    ++reads;
                    scitags::TcpDetail d;
                    d.snd_mss = 1428;
                    d.bytes_acked = 4000;
                    d.bytes_received = 300;
                    return d;
                  });
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_EQ((*b)->tick_interval(), std::chrono::seconds(1));
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(4000));
  (*b)->flush();  // as the worker does after each batch
  const auto start = f.next(coll);
  EXPECT_EQ(start.event.state, FlowState::kStart);
  EXPECT_TRUE(start.extra.empty());
  (*b)->on_tick();
  const auto ongoing = f.next(coll);
  EXPECT_EQ(ongoing.event.state, FlowState::kOngoing);
  EXPECT_EQ(reads, 1);
  ASSERT_TRUE(ongoing.event.usage);
  EXPECT_EQ(ongoing.event.usage->sent, 4000u);
  ASSERT_EQ(ongoing.extra.size(), 1u);
  EXPECT_EQ(ongoing.extra[0].first, "netlink");
  EXPECT_NE(ongoing.extra[0].second.find(R"("tcpInfo":{"Retransmits":0,)"), std::string::npos)
      << ongoing.extra[0].second;
  EXPECT_NE(ongoing.extra[0].second.find(R"("sndMss":1428)"), std::string::npos)
      << ongoing.extra[0].second;
  (*b)->stop();
}

TEST(FireflyBackend, OngoingShapeErrors) {
  Fixture f, g, h;
  auto bad = f.make("ongoing_shape = 'full'");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("ongoing_shape"), std::string::npos)
      << bad.error().message();
  auto off = g.make("ongoing_shape = 'compatible'\nongoing_interval = 0");
  ASSERT_FALSE(off);
  EXPECT_NE(off.error().message().find("ongoing_interval = 0"), std::string::npos)
      << off.error().message();
  auto both = h.make("ongoing_shape = 'flowmark'\nongoing_interval = 5");
  ASSERT_TRUE(both) << both.error().message();
  EXPECT_EQ((*both)->tick_interval(), std::chrono::seconds(5));
}

TEST(FireflyBackend, UnresolvableCollectorFailsAtStart) {
  Fixture f;
  auto b = f.make("collectors = ['not an address!']");
  ASSERT_TRUE(b) << b.error().message();
  auto r = (*b)->start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("not an address!"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace flowmark::daemon
