// The `sockets` source: configuration, and start / end events for a real loopback
// connection through an EventLoop.
#include "daemon/sources/sockets/sockets_source.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "../net/loopback_pair.hpp"
#include "test_util.hpp"

namespace flowmark::daemon::sockets {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;

using testing::TestSink;

Result<SocketsOptions> parse(std::string_view text, const scitags::Registry* registry = nullptr) {
  toml::table table = toml::parse(text);
  Section s(&table, "[source.conns]");
  s.mark_used("type");
  FM_TRY(auto o, parse_sockets_options(s, registry));
  FM_TRY_VOID(s.finish());
  return o;
}

TEST(SocketsSourceConfig, Defaults) {
  auto o = parse("type = 'sockets'");
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->period_seconds, 2.0);
  EXPECT_TRUE(o->tcp);
  EXPECT_FALSE(o->udp);
  EXPECT_TRUE(o->tracker.skip_private);
  EXPECT_FALSE(o->tracker.announce_existing);
  EXPECT_TRUE(o->tracker.ports.empty());
  EXPECT_EQ(o->tracker.tag, (Tag{0, 0}));
}

TEST(SocketsSourceConfig, EveryKey) {
  auto o = parse(R"(
    period = 0.5
    protocols = ["tcp", "udp"]
    internal_networks = ["10.0.0.0/8", "2001:db8::/32"]
    skip_private = false
    announce_existing = true
    ports = ["443", "8000-8100"]
    experiment = 2
    activity = "3"
  )");
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->period_seconds, 0.5);
  EXPECT_TRUE(o->tcp && o->udp);
  EXPECT_EQ(o->tracker.internal_networks.size(), 2u);
  EXPECT_FALSE(o->tracker.skip_private);
  EXPECT_TRUE(o->tracker.announce_existing);
  EXPECT_EQ(o->tracker.ports, (std::vector<PortRange>{{443, 443}, {8000, 8100}}));
  EXPECT_EQ(o->tracker.tag, (Tag{2, 3}));
  EXPECT_EQ(parse("ports = 5201")->tracker.ports, (std::vector<PortRange>{{5201, 5201}}));
}

TEST(SocketsSourceConfig, IperfPreset) {
  auto o = parse(R"(
    preset = "iperf"
    choices = ["2:1", "3:4"]
  )");
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->tracker.ports, (std::vector<PortRange>{{5201, 5201}}));
  EXPECT_EQ(o->tracker.choices, (std::vector<Tag>{{2, 1}, {3, 4}}));
}

TEST(SocketsSourceConfig, NamesThroughTheRegistry) {
  auto reg = scitags::Registry::parse(
      R"({"experiments":[{"expName":"atlas","expId":2,
          "activities":[{"activityName":"perfSONAR","activityId":2}]}]})",
      "test");
  ASSERT_TRUE(reg) << reg.error().message();
  auto o = parse("experiment = 'atlas'\nactivity = 'perfSONAR'", &*reg);
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->tracker.tag, (Tag{2, 2}));
  o = parse("preset = 'iperf'\nchoices = ['atlas:perfSONAR']", &*reg);
  ASSERT_TRUE(o) << o.error().message();
  EXPECT_EQ(o->tracker.choices, (std::vector<Tag>{{2, 2}}));
}

TEST(SocketsSourceConfig, ErrorsNameTheKey) {
  auto expect_error = [](std::string_view text, std::string_view needle) {
    auto o = parse(text);
    ASSERT_FALSE(o) << text;
    EXPECT_NE(o.error().message().find(needle), std::string::npos) << o.error().message();
  };
  expect_error("protocols = ['sctp']", "[source.conns] protocols: 'sctp' is not one of");
  expect_error("period = 0", "[source.conns] period");
  expect_error("ports = ['9-1']", "[source.conns] ports");
  expect_error("experiment = 'atlas'\nactivity = 1", "no registry is loaded");
  expect_error("experiment = 2", "give both, or neither");
  expect_error("choices = ['2:1']", "only used with preset");
  expect_error("preset = 'iperf'\nchoices = ['2-1']", "experiment:activity");
  expect_error("preset = 'nope'", "[source.conns] preset");
  expect_error("internal_networks = ['10.0.0.1/8']", "host bits");
  expect_error("typo = 1", "unknown key typo");
}

TEST(SocketsSource, LoopbackConnectionStartsAndEnds) {
  auto listener = testing::listen_loopback(Family::kV4);
  ASSERT_TRUE(listener);
  const auto port = testing::local_of(listener->get()).port;
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop) << loop.error().message();

  SocketsOptions o;
  o.period_seconds = 0.02;
  o.tracker.skip_private = false;
  o.tracker.ports = {{port, port}};  // only ours: other loopback traffic on this host is not
  o.tracker.tag = {7, 3};
  Counters counters;
  SocketsSource source("test", o, counters);
  TestSink sink;
  auto started = source.start(*loop, sink);
  ASSERT_TRUE(started) << started.error().message();

  // Runs the loop until `done` or two seconds have passed.
  auto run_until = [&](auto done, std::chrono::milliseconds limit = std::chrono::seconds(2)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < until) {
      auto r = loop->run_once(std::chrono::milliseconds(10));
      if (!r) return false;
    }
    return done();
  };
  const Labels src{{"source", "test"}};
  ASSERT_TRUE(run_until([&] { return counters.value("flowmark_sockets_polls_total", src) >= 1; }));
  EXPECT_TRUE(sink.events.empty());

  auto pair = testing::connect_pair(listener->get());
  ASSERT_TRUE(pair);
  ASSERT_TRUE(run_until([&] { return sink.count(FlowState::kStart) >= 2; }));
  ASSERT_EQ(sink.events.size(), 2u);
  for (const auto& e : sink.events) {
    EXPECT_EQ(e.state, FlowState::kStart);
    EXPECT_EQ(e.protocol, scitags::Protocol::kTcp);
    EXPECT_EQ(e.experiment, 7u);
    EXPECT_EQ(e.activity, 3u);
    EXPECT_GT(e.start_time, 0);
    EXPECT_TRUE(e.tcp);
    const bool client_side = e.src == pair->client_end && e.dst == pair->server_end;
    const bool server_side = e.src == pair->server_end && e.dst == pair->client_end;
    EXPECT_TRUE(client_side || server_side) << e.src.to_string() << " → " << e.dst.to_string();
  }
  EXPECT_NE(sink.events[0].src, sink.events[1].src);

  pair->client.reset();
  pair->server.reset();
  ASSERT_TRUE(run_until([&] { return sink.count(FlowState::kEnd) >= 2; }));
  // Stays quiet afterwards (TIME_WAIT, then gone): exactly one end per connection.
  const auto polls = counters.value("flowmark_sockets_polls_total", src);
  run_until([&] { return counters.value("flowmark_sockets_polls_total", src) >= polls + 3; });
  EXPECT_EQ(sink.count(FlowState::kStart), 2u);
  EXPECT_EQ(sink.count(FlowState::kEnd), 2u);
  for (const auto& e : sink.events) {
    if (e.state != FlowState::kEnd) continue;
    EXPECT_GT(e.end_time, 0);
    EXPECT_GE(e.end_time, e.start_time);
  }
  EXPECT_EQ(counters.sum("flowmark_sockets_events_total", {{"state", "start"}}), 2u);
  EXPECT_EQ(counters.sum("flowmark_sockets_events_total", {{"state", "end"}}), 2u);
  EXPECT_EQ(counters.sum("flowmark_sockets_netlink_errors_total"), 0u);
  EXPECT_GT(counters.value("flowmark_sockets_seen_total", src), 0u);

  source.stop();
  source.stop();  // idempotent
  const auto after = sink.events.size();
  run_until([] { return false; }, std::chrono::milliseconds(100));  // nothing fires any more
  EXPECT_EQ(sink.events.size(), after);
}

TEST(SocketsSource, Registers) {
  SourceFactories factories("source");
  ASSERT_TRUE(register_sockets_source(factories));
  EXPECT_TRUE(factories.contains("sockets"));
  EXPECT_FALSE(register_sockets_source(factories));  // twice is an error
  toml::table table = toml::parse("type = 'sockets'\nperiod = 1");
  Section s(&table, "[source.conns]");
  s.mark_used("type");
  Counters counters;
  ServiceContext context{.counters = counters, .registry = nullptr, .hostname = "test"};
  auto made = factories.create("sockets", s, context);
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_TRUE(s.finish());
}

}  // namespace
}  // namespace flowmark::daemon::sockets
