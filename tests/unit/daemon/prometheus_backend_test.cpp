#include "daemon/backends/prometheus/prometheus_backend.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include <toml++/toml.h>

#include "flowmark/net/socket.hpp"
#include "test_util.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;
using scitags::TcpInfo;

// GET /metrics (the status must be 200): the exposition.
std::string scrape(std::uint16_t port) {
  auto r = testing::http_get(port, "/metrics");
  EXPECT_TRUE(r.status.starts_with("HTTP/1.1 200")) << r.status;
  return r.body;
}

// The value of the sample whose line starts with `series` ("name{labels}" or "name"), if any.
std::optional<double> sample(const std::string& text, std::string_view series) {
  std::size_t at = 0;
  while ((at = text.find(series, at)) != std::string::npos) {
    bool line_start = at == 0 || text[at - 1] == '\n';
    std::size_t after = at + series.size();
    if (line_start && after < text.size() && text[after] == ' ') {
      return std::strtod(text.c_str() + after + 1, nullptr);
    }
    at = after;
  }
  return std::nullopt;
}

constexpr std::string_view kLabels =
    R"({src="192.0.2.1",dst="2001:db8::2",exp="2",act="17",flow="2345:5777"})";

FlowEvent start_event() {
  FlowEvent e;
  e.state = FlowState::kStart;
  e.src = *Endpoint::parse("192.0.2.1:2345");
  e.dst = *Endpoint::parse("[2001:db8::2]:5777");
  e.experiment = 2;
  e.activity = 17;
  TcpInfo t;
  t.rtt_us = 12500;
  t.rtt_var_us = 3000;
  t.cwnd = 10;
  t.ssthresh = 2147483647;
  t.mss = 1448;
  t.pmtu = 1500;
  t.bytes_sent = 123456789012ULL;
  t.bytes_acked = 123456000000ULL;
  t.bytes_received = 4242;
  t.segs_out = 900;
  t.segs_in = 450;
  t.retrans = 3;
  t.pacing_rate = 250000000;
  t.delivery_rate = 125000000;
  e.tcp = t;
  return e;
}

PrometheusBackend::Options loopback(const Counters* counters = nullptr) {
  PrometheusBackend::Options o;
  o.listen = *PrometheusBackend::parse_listen("127.0.0.1:0");
  o.counters = counters;
  return o;
}

TEST(PrometheusBackend, ParsesListenAddresses) {
  auto a = PrometheusBackend::parse_listen("127.0.0.1:9000");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->to_string(), "127.0.0.1:9000");
  auto b = PrometheusBackend::parse_listen("[::1]:9000");
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->address.is_v6());
  EXPECT_EQ(b->port, 9000);
  auto c = PrometheusBackend::parse_listen("0.0.0.0:0");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->port, 0);
  for (const char* bad :
       {"9000", "localhost:9000", "::1:9000", "127.0.0.1:70000", "[::1]9000", "127.0.0.1:"}) {
    EXPECT_FALSE(PrometheusBackend::parse_listen(bad)) << bad;
  }
}

TEST(PrometheusBackend, ConfigDefaultsAndErrors) {
  Counters counters;
  ServiceContext context{counters, nullptr, "host"};
  BackendFactories factories("backend");
  ASSERT_TRUE(register_prometheus_backend(factories));
  EXPECT_TRUE(factories.contains("prometheus"));

  toml::table empty;
  Section s(&empty, "[backend.metrics]");
  auto b = PrometheusBackend::from_config(s, context);
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_TRUE(s.finish());
  // No reader: nothing to poll.
  EXPECT_EQ((*b)->tick_interval().count(), 0);

  auto bad = toml::parse(R"(listen = "localhost:9000")");
  Section s2(&bad, "[backend.metrics]");
  auto e = factories.create("prometheus", s2, context);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("[backend.metrics] listen: 'localhost:9000'"),
            std::string::npos)
      << e.error().message();

  auto zero = toml::parse("poll_interval = 0");
  Section s3(&zero, "[backend.metrics]");
  EXPECT_FALSE(factories.create("prometheus", s3, context));

  auto set = toml::parse(R"(listen = "0.0.0.0:9100"
poll_interval = 2
flow_metrics = false)");
  Section s4(&set, "[backend.metrics]");
  auto ok = PrometheusBackend::from_config(
      s4, context, [](const FlowEvent&) -> std::optional<TcpInfo> { return std::nullopt; });
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_TRUE(s4.finish());
  EXPECT_EQ((*ok)->tick_interval().count(), 0);  // flow metrics off: no polling
}

TEST(PrometheusBackend, ExportsFlowSeriesAndRemovesThemAtTheEnd) {
  PrometheusBackend b(loopback());
  ASSERT_TRUE(b.start());
  ASSERT_NE(b.port(), 0);

  std::string before = scrape(b.port());
  EXPECT_EQ(sample(before, "flowmark_live_flows"), 0.0);
  EXPECT_EQ(before.find("flow_tcp_"), std::string::npos) << before;

  b.on_event(start_event());
  std::string text = scrape(b.port());
  EXPECT_NE(text.find("# TYPE flow_tcp_rtt gauge\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# HELP flow_tcp_rtt Smoothed round-trip time of the flow, in seconds"),
            std::string::npos);
  EXPECT_NE(text.find("# TYPE flow_tcp_bytes_sent counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE flow_tcp_retrans counter\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE flow_tcp_pacing_rate gauge\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE flowmark_live_flows gauge\n"), std::string::npos);
  auto at = [&](std::string_view metric) { return sample(text, std::string(metric) += kLabels); };
  EXPECT_DOUBLE_EQ(at("flow_tcp_rtt").value_or(-1), 0.0125);
  EXPECT_DOUBLE_EQ(at("flow_tcp_rtt_var").value_or(-1), 0.003);
  EXPECT_EQ(at("flow_tcp_cwnd"), 10.0);
  EXPECT_EQ(at("flow_tcp_ssthresh"), 2147483647.0);
  EXPECT_EQ(at("flow_tcp_bytes_sent"), 123456789012.0);
  EXPECT_EQ(at("flow_tcp_bytes_acked"), 123456000000.0);
  EXPECT_EQ(at("flow_tcp_bytes_received"), 4242.0);
  EXPECT_EQ(at("flow_tcp_segs_out"), 900.0);
  EXPECT_EQ(at("flow_tcp_segs_in"), 450.0);
  EXPECT_EQ(at("flow_tcp_retrans"), 3.0);
  EXPECT_EQ(at("flow_tcp_pacing_rate"), 250000000.0);
  EXPECT_EQ(at("flow_tcp_delivery_rate"), 125000000.0);
  EXPECT_EQ(at("flow_tcp_mss"), 1448.0);
  EXPECT_EQ(at("flow_tcp_pmtu"), 1500.0);
  EXPECT_EQ(sample(text, "flowmark_live_flows"), 1.0);

  // A second flow, UDP and without TCP information: counted, but no invented TCP series.
  FlowEvent udp = start_event();
  udp.protocol = scitags::Protocol::kUdp;
  udp.tcp.reset();
  b.on_event(udp);
  text = scrape(b.port());
  EXPECT_EQ(sample(text, "flowmark_live_flows"), 2.0);
  std::size_t rtt_lines = 0;
  for (std::size_t p = 0; (p = text.find("\nflow_tcp_rtt{", p)) != std::string::npos; ++p) {
    ++rtt_lines;
  }
  EXPECT_EQ(rtt_lines, 1u);

  FlowEvent end = start_event();
  end.state = FlowState::kEnd;
  end.tcp.reset();
  b.on_event(end);
  text = scrape(b.port());
  EXPECT_EQ(text.find("flow_tcp_"), std::string::npos) << text;  // every series of the flow
  EXPECT_EQ(sample(text, "flowmark_live_flows"), 1.0);
  b.stop();
  b.stop();  // idempotent
}

TEST(PrometheusBackend, ExportsTheServiceCounters) {
  Counters counters;
  counters.counter("flowmark_source_events_total", {{"source", "pipe"}}, "Events by source")
      .store(7);
  counters.gauge("flowmark_backend_queue_depth", {{"backend", "fireflies"}}, "Queued events")
      .store(3);
  counters.counter("flowmark_source_rejected_total", {{"source", "pipe"}, {"reason", "bad_port"}},
                   "Input rejected by a source, by reason");
  // Same name again after another family: must come out as one family.
  counters.counter("flowmark_source_events_total", {{"source", "firefly"}}).store(5);
  counters.counter("flowmark_backend_dropped_total", {{"backend", "fireflies"}, {"reason", "full"}},
                   "Events dropped by a backend");
  PrometheusBackend b(loopback(&counters));
  ASSERT_TRUE(b.start());

  std::string text = scrape(b.port());
  EXPECT_NE(text.find("# HELP flowmark_source_events_total Events by source\n"
                      "# TYPE flowmark_source_events_total counter\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(sample(text, R"(flowmark_source_events_total{source="pipe"})"), 7.0);
  EXPECT_EQ(sample(text, R"(flowmark_source_events_total{source="firefly"})"), 5.0);
  std::size_t types = 0;
  for (std::size_t p = 0;
       (p = text.find("# TYPE flowmark_source_events_total", p)) != std::string::npos; ++p) {
    ++types;
  }
  EXPECT_EQ(types, 1u);
  EXPECT_NE(text.find("# TYPE flowmark_backend_queue_depth gauge\n"), std::string::npos);
  EXPECT_EQ(sample(text, R"(flowmark_backend_queue_depth{backend="fireflies"})"), 3.0);
  EXPECT_EQ(sample(text, R"(flowmark_source_rejected_total{source="pipe",reason="bad_port"})"),
            0.0);

  // Read at scrape time: no copies to keep in step.
  counters.counter("flowmark_source_rejected_total", {{"source", "pipe"}, {"reason", "bad_port"}})
      .fetch_add(4);
  counters.counter("flowmark_backend_dropped_total", {{"backend", "fireflies"}, {"reason", "full"}})
      .fetch_add(9);
  text = scrape(b.port());
  EXPECT_EQ(sample(text, R"(flowmark_source_rejected_total{source="pipe",reason="bad_port"})"),
            4.0);
  EXPECT_EQ(sample(text, R"(flowmark_backend_dropped_total{backend="fireflies",reason="full"})"),
            9.0);
}

TEST(PrometheusBackend, TickRefreshesFromTheReader) {
  int calls = 0;
  PrometheusBackend::Options o = loopback();
  o.poll_interval = std::chrono::seconds(2);
  o.reader = [&](const FlowEvent& e) -> std::optional<TcpInfo> {
    ++calls;
    if (e.src.port != 2345) return std::nullopt;  // "not found": keeps the last values
    TcpInfo t = *start_event().tcp;
    t.rtt_us = 40000;
    t.bytes_sent += 1000;
    t.retrans = 5;
    return t;
  };
  PrometheusBackend b(std::move(o));
  EXPECT_EQ(b.tick_interval(), std::chrono::milliseconds(2000));
  ASSERT_TRUE(b.start());

  b.on_event(start_event());
  FlowEvent other = start_event();
  other.src.port = 4000;
  b.on_event(other);
  FlowEvent udp = start_event();
  udp.protocol = scitags::Protocol::kUdp;
  b.on_event(udp);
  b.on_tick();
  EXPECT_EQ(calls, 2);  // the TCP flows only

  std::string text = scrape(b.port());
  EXPECT_DOUBLE_EQ(sample(text, std::string("flow_tcp_rtt") += kLabels).value_or(-1), 0.04);
  EXPECT_EQ(sample(text, std::string("flow_tcp_bytes_sent") += kLabels), 123456790012.0);
  EXPECT_EQ(sample(text, std::string("flow_tcp_retrans") += kLabels), 5.0);
  EXPECT_DOUBLE_EQ(
      sample(text,
             R"(flow_tcp_rtt{src="192.0.2.1",dst="2001:db8::2",exp="2",act="17",flow="4000:5777"})")
          .value_or(-1),
      0.0125);
}

// The worker thread's events and ticks against civetweb's scrape threads (run under TSan too).
TEST(PrometheusBackend, EventsTicksAndScrapesConcurrently) {
  PrometheusBackend::Options o = loopback();
  o.reader = [](const FlowEvent& e) -> std::optional<TcpInfo> {
    TcpInfo t = *start_event().tcp;
    t.rtt_us = e.src.port;
    return t;
  };
  PrometheusBackend b(std::move(o));
  ASSERT_TRUE(b.start());
  constexpr int kFlows = 50;
  std::atomic<bool> done{false};
  std::thread worker([&] {
    for (int round = 0; round < 200; ++round) {
      for (int i = 0; i < kFlows; ++i) {
        FlowEvent e = start_event();
        e.src.port = static_cast<std::uint16_t>(10000 + i);
        e.state = (round + i) % 3 == 0 ? FlowState::kEnd : FlowState::kStart;
        b.on_event(e);
      }
      b.on_tick();
    }
    done = true;
  });
  int scrapes = 0;
  while (!done.load() || scrapes < 5) {
    std::string text = scrape(b.port());
    auto live = sample(text, "flowmark_live_flows");
    ASSERT_TRUE(live);
    EXPECT_LE(*live, kFlows);
    EXPECT_EQ(text.find("# TYPE flow_tcp_rtt gauge"), text.rfind("# TYPE flow_tcp_rtt gauge"));
    ++scrapes;
  }
  worker.join();
  for (int i = 0; i < kFlows; ++i) {
    FlowEvent e = start_event();
    e.src.port = static_cast<std::uint16_t>(10000 + i);
    e.state = FlowState::kEnd;
    b.on_event(e);
  }
  EXPECT_EQ(b.live_flows(), 0u);
  EXPECT_EQ(scrape(b.port()).find("flow_tcp_"), std::string::npos);
}

TEST(PrometheusBackend, FlowMetricsOffKeepsOnlyTheServiceSeries) {
  PrometheusBackend::Options o = loopback();
  o.flow_metrics = false;
  PrometheusBackend b(std::move(o));
  ASSERT_TRUE(b.start());
  b.on_event(start_event());
  std::string text = scrape(b.port());
  EXPECT_EQ(text.find("flow_tcp_"), std::string::npos);
  EXPECT_EQ(sample(text, "flowmark_live_flows"), 1.0);
}

TEST(PrometheusBackend, ListensOnAllAddressesAndStopWakesTheServerByAKnock) {
  PrometheusBackend::Options o;
  o.listen = *PrometheusBackend::parse_listen("0.0.0.0:0");
  PrometheusBackend b(std::move(o));
  ASSERT_TRUE(b.start());
  const Endpoint at{*IpAddress::parse("127.0.0.1"), b.port()};
  EXPECT_NE(scrape(at.port).find("flowmark_live_flows 0"), std::string::npos);
  EXPECT_EQ(b.stop_knocks(), 0u);
  // civetweb's accept thread looks at its stop flag only between polls of up to 2 s: alone,
  // it would sit out the poll. stop() connects to the port (on loopback for 0.0.0.0) until
  // the server is gone, and no client of ours connects meanwhile.
  b.stop();
  EXPECT_GE(b.stop_knocks(), 1u);
  // The server is gone: nothing accepts there and the port can be bound again
  // (SO_REUSEADDR as civetweb: the scrape's connection may linger in TIME_WAIT).
  auto refused = net::connect_tcp(at);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::connection_refused) << refused.error().message();
  auto again = net::open_tcp_socket(Family::kV4);
  ASSERT_TRUE(again);
  ASSERT_TRUE(net::set_reuse_address(again->get()));
  auto bound = net::bind_to(again->get(), {IpAddress::any(Family::kV4), at.port});
  EXPECT_TRUE(bound) << bound.error().message();
}

TEST(PrometheusBackend, BindFailureNamesTheAddress) {
  PrometheusBackend first(loopback());
  ASSERT_TRUE(first.start());
  PrometheusBackend::Options o;
  o.listen = *PrometheusBackend::parse_listen("127.0.0.1:" + std::to_string(first.port()));
  PrometheusBackend second(std::move(o), "[backend.metrics]");
  auto r = second.start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("[backend.metrics] listen: cannot listen on 127.0.0.1:" +
                                     std::to_string(first.port()) + ": Address already in use"),
            std::string::npos)
      << r.error().message();

  // 192.0.2.1 (TEST-NET-1) is on no interface of this host.
  PrometheusBackend::Options foreign;
  foreign.listen = *PrometheusBackend::parse_listen("192.0.2.1:0");
  auto r2 = PrometheusBackend(std::move(foreign)).start();
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message().find("cannot listen on 192.0.2.1:0"), std::string::npos)
      << r2.error().message();
}

TEST(PrometheusBackend, Ipv6ListenWorksOrSaysWhy) {
  PrometheusBackend::Options o;
  o.listen = *PrometheusBackend::parse_listen("[::1]:0");
  PrometheusBackend b(std::move(o));
  auto r = b.start();
  if (r) {
    EXPECT_NE(b.port(), 0);
  } else {
    // Debian 12's civetweb is built without IPv6.
    EXPECT_NE(r.error().message().find("cannot listen on [::1]:0: the installed civetweb was "
                                       "built without IPv6 support"),
              std::string::npos)
        << r.error().message();
  }
}

}  // namespace
}  // namespace flowmark::daemon
