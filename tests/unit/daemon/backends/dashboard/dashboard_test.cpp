#include <gtest/gtest.h>
#include <simdjson.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "../../test_util.hpp"
#include "daemon/backends/dashboard/dashboard_backend.hpp"
#include "daemon/backends/dashboard/dashboard_state.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::daemon {
namespace {

using collector::Record;
using dashboard::DashboardLimits;
using dashboard::DashboardState;
using scitags::FlowState;

constexpr Micros kT0 = 1'796'600'000'000'000;  // a multiple of 10 s
constexpr Micros kSecond = 1'000'000;

Record record(std::uint16_t sport, std::uint64_t sent, std::string experiment = "atlas",
              std::string src_site = "A", std::string dst_site = "B") {
  Record r;
  r.src = *Endpoint::parse("192.0.2.1:" + std::to_string(sport));
  r.dst = *Endpoint::parse("192.0.2.2:443");
  r.start_time = kT0;
  r.has_usage = sent > 0;
  r.bytes_sent = sent;
  r.experiment_id = 2;
  r.experiment = std::move(experiment);
  r.src_site = std::move(src_site);
  r.dst_site = std::move(dst_site);
  return r;
}

struct Summary {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  explicit Summary(const std::string& json) {
    auto r = parser.parse(json);
    EXPECT_FALSE(r.error()) << json;
    doc = r.value();
  }
  std::uint64_t total(const char* key) { return doc["totals"][key].get_uint64().value(); }
};

TEST(DashboardState, CountsFlowsOpenFlowsAndBytes) {
  DashboardState s(DashboardLimits{});
  s.add(record(1, 0), 0, false, kT0);          // start
  s.add(record(1, 500), 500, false, kT0 + 1);  // ongoing: the same flow
  s.add(record(2, 0), 0, false, kT0 + 2);      // start of a second flow
  s.add(record(1, 800), 300, true, kT0 + 3);   // end of the first: 300 more bytes
  s.add(record(3, 70), 70, false, kT0 + 4);    // a flow first seen by an ongoing event
  s.add(record(4, 90), 90, true, kT0 + 5);     // a flow seen only at its end
  Summary j(s.summary_json(kT0 + 6));
  EXPECT_EQ(j.total("flows"), 4u);
  EXPECT_EQ(j.total("open_flows"), 2u);  // flows 2 and 3
  EXPECT_EQ(j.total("bytes"), 500u + 300 + 70 + 90);
  EXPECT_EQ(j.doc["bin_seconds"].get_uint64().value(), 10u);
  EXPECT_EQ(j.doc["window_seconds"].get_uint64().value(), 900u);
}

TEST(DashboardState, BinsBytesPerExperimentOverTheWindow) {
  DashboardLimits l;
  l.bins = 6;  // one minute of 10 s bins
  DashboardState s(l);
  s.add(record(1, 100, "atlas"), 100, false, kT0);
  s.add(record(2, 40, "cms"), 40, false, kT0 + 3 * kSecond);
  s.add(record(3, 7, "atlas"), 7, false, kT0 + 25 * kSecond);
  Record unnamed = record(4, 9, "");
  unnamed.experiment_id = 77;
  s.add(unnamed, 9, false, kT0 + 59 * kSecond);

  Summary j(s.summary_json(kT0 + 59 * kSecond));
  auto t = j.doc["throughput"];
  EXPECT_EQ(t["start"].get_int64().value(), kT0);
  std::map<std::string, std::vector<std::uint64_t>> series;
  for (auto x : t["series"].get_array()) {
    std::vector<std::uint64_t> v;
    for (auto b : x["bytes"].get_array()) v.push_back(b.get_uint64().value());
    series[std::string(x["experiment"].get_string().value())] = v;
  }
  using V = std::vector<std::uint64_t>;
  EXPECT_EQ(series["atlas"], (V{100, 0, 7, 0, 0, 0}));
  EXPECT_EQ(series["cms"], (V{40, 0, 0, 0, 0, 0}));
  EXPECT_EQ(series["77"], (V{0, 0, 0, 0, 0, 9}));  // unnamed: its id

  // 30 s later the first three bins have left the window, and their bytes with them.
  Summary later(s.summary_json(kT0 + 89 * kSecond));
  series.clear();
  for (auto x : later.doc["throughput"]["series"].get_array()) {
    std::vector<std::uint64_t> v;
    for (auto b : x["bytes"].get_array()) v.push_back(b.get_uint64().value());
    series[std::string(x["experiment"].get_string().value())] = v;
  }
  EXPECT_EQ(series.size(), 1u);  // cms (and atlas's first bytes) gone; atlas's 7 gone too
  EXPECT_EQ(series["77"], (V{0, 0, 9, 0, 0, 0}));
  // A bin reused by a later slot starts from zero.
  s.add(record(5, 1, "cms"), 1, false, kT0 + 60 * kSecond);  // the slot of kT0's bin
  Summary reused(s.summary_json(kT0 + 60 * kSecond));
  for (auto x : reused.doc["throughput"]["series"].get_array()) {
    if (x["experiment"].get_string().value() == "cms") {
      EXPECT_EQ(x["bytes"].at(5).get_uint64().value(), 1u);
    }
  }
}

TEST(DashboardState, TopSitePairsAndTheirBound) {
  DashboardLimits l;
  l.top_pairs = 2;
  l.max_pairs = 3;
  DashboardState s(l);
  s.add(record(1, 10, "atlas", "A", "B"), 10, false, kT0);
  s.add(record(2, 30, "atlas", "B", "A"), 30, false, kT0);
  s.add(record(3, 20, "atlas", "", "C"), 20, false, kT0);  // no source site
  s.add(record(4, 5, "atlas", "A", "B"), 5, false, kT0);
  s.add(record(5, 8, "atlas", "C", "D"), 8, false, kT0);  // a fourth pair: "other"
  s.add(record(6, 4, "atlas", "D", "C"), 4, false, kT0);  // and a fifth
  Summary j(s.summary_json(kT0));
  auto pairs = j.doc["site_pairs"].get_array().value();
  ASSERT_EQ(pairs.size(), 3u);  // the top 2, then "other"
  EXPECT_EQ(pairs.at(0)["src_site"].get_string().value(), "B");
  EXPECT_EQ(pairs.at(0)["bytes"].get_uint64().value(), 30u);
  EXPECT_TRUE(pairs.at(1)["src_site"].is_null());
  EXPECT_EQ(pairs.at(1)["dst_site"].get_string().value(), "C");
  EXPECT_EQ(pairs.at(1)["bytes"].get_uint64().value(), 20u);
  EXPECT_TRUE(pairs.at(2)["other"].get_bool().value());
  EXPECT_EQ(pairs.at(2)["bytes"].get_uint64().value(), 12u);
  EXPECT_EQ(pairs.at(2)["flows"].get_uint64().value(), 2u);
  EXPECT_EQ(s.folded_pairs(), 2u);
}

TEST(DashboardState, ExperimentsPastTheBoundAreSummedAsOther) {
  DashboardLimits l;
  l.max_series = 3;  // two named, then "other"
  DashboardState s(l);
  for (std::string e : {"a", "b", "c", "d"}) s.add(record(1, 10, e), 10, false, kT0);
  Summary j(s.summary_json(kT0));
  std::map<std::string, std::uint64_t> sums;
  for (auto x : j.doc["throughput"]["series"].get_array()) {
    std::uint64_t sum = 0;
    for (auto b : x["bytes"].get_array()) sum += b.get_uint64().value();
    sums[std::string(x["experiment"].get_string().value())] = sum;
  }
  EXPECT_EQ(sums, (std::map<std::string, std::uint64_t>{{"a", 10}, {"b", 10}, {"other", 20}}));
  EXPECT_EQ(s.folded_series(), 2u);
}

TEST(DashboardState, LatestRecordsNewestFirstOnePerFlowBounded) {
  DashboardLimits l;
  l.latest = 3;
  DashboardState s(l);
  for (std::uint16_t p = 1; p <= 4; ++p) s.add(record(p, 0), 0, false, kT0);
  Record ended = record(3, 42);
  ended.state = collector::RecordState::kComplete;
  ended.end_time = kT0 + kSecond;
  s.add(ended, 42, true, kT0);  // flow 3 again: replaces its older record, comes first
  Summary j(s.summary_json(kT0));
  auto latest = j.doc["latest"].get_array().value();
  ASSERT_EQ(latest.size(), 3u);
  EXPECT_EQ(latest.at(0)["src_port"].get_uint64().value(), 3u);
  EXPECT_EQ(latest.at(0)["state"].get_string().value(), "complete");
  EXPECT_EQ(latest.at(0)["volume"].get_uint64().value(), 42u);
  EXPECT_EQ(latest.at(1)["src_port"].get_uint64().value(), 4u);
  EXPECT_EQ(latest.at(2)["src_port"].get_uint64().value(), 2u);
}

TEST(DashboardState, OpenFlowsAreBounded) {
  DashboardLimits l;
  l.max_open = 2;
  DashboardState s(l);
  for (std::uint16_t p = 1; p <= 5; ++p) s.add(record(p, 0), 0, false, kT0);
  Summary j(s.summary_json(kT0));
  EXPECT_EQ(j.total("flows"), 5u);
  EXPECT_EQ(j.total("open_flows"), 2u);
  EXPECT_EQ(s.untracked(), 3u);
}

// ---- the backend over HTTP ----------------------------------------------------------------

struct Response {
  int status = 0;
  std::string head, body;
};

Response http(std::uint16_t port, std::string_view method, std::string_view path) {
  Response out;
  auto client = net::connect_tcp({*IpAddress::parse("127.0.0.1"), port});
  if (!client) {
    ADD_FAILURE() << client.error().message();
    return out;
  }
  std::string request = fmt::format("{} {} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", method, path);
  EXPECT_EQ(::write(client->get(), request.data(), request.size()),
            static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::read(client->get(), buf, sizeof buf)) > 0;) response.append(buf, n);
  auto split = response.find("\r\n\r\n");
  out.head = response.substr(0, split);
  if (split != std::string::npos) out.body = response.substr(split + 4);
  if (response.starts_with("HTTP/1.1 ")) out.status = std::stoi(response.substr(9, 3));
  return out;
}

struct DashboardBackendTest : ::testing::Test {
  testing::TempDir dir{"fm-dash"};
  testing::BackendFixture f{"host"};
  void SetUp() override {
    ASSERT_TRUE(register_dashboard_backend(f.factories));
    std::ofstream(dir.path() / "index.html") << "<!doctype html><title>t</title>";
    std::ofstream(dir.path() / "app.js") << "poll();";
  }
  std::unique_ptr<Backend> make(const std::string& extra = "") {
    auto b = f.make("dashboard", "dash",
                    "listen = '127.0.0.1:0'\nstatic_dir = '" + dir.path().string() + "'\n" + extra);
    EXPECT_TRUE(b) << b.error().message();
    return b ? std::move(*b) : nullptr;
  }
};

TEST_F(DashboardBackendTest, ServesThePageAndTheSummary) {
  auto b = make();
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->start());
  auto port = static_cast<DashboardBackend&>(*b).port();
  ASSERT_NE(port, 0);

  auto index = http(port, "GET", "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body, "<!doctype html><title>t</title>");
  EXPECT_NE(index.head.find("Content-Type: text/html"), std::string::npos) << index.head;
  auto js = http(port, "GET", "/app.js");
  EXPECT_EQ(js.body, "poll();");
  EXPECT_NE(js.head.find("text/javascript"), std::string::npos);
  EXPECT_EQ(http(port, "HEAD", "/app.js").body, "");
  EXPECT_EQ(http(port, "GET", "/../etc/passwd").status, 404);
  EXPECT_EQ(http(port, "GET", "/nothing.js").status, 404);
  EXPECT_EQ(http(port, "POST", "/api/summary").status, 405);

  // Events: bytes are the volume minus what was forwarded before.
  FlowEvent start = testing::sample_event("192.0.2.1", "192.0.2.2", 4000);
  b->on_event(start);
  FlowEvent ongoing = start;
  ongoing.state = FlowState::kOngoing;
  ongoing.usage = scitags::Usage{.received = 10, .sent = 1000};
  b->on_event(ongoing);
  FlowEvent end = testing::sample_event("192.0.2.1", "192.0.2.2", 4000, FlowState::kEnd);
  end.usage = scitags::Usage{.received = 10, .sent = 2500};
  end.previous_volume = 1000;
  b->on_event(end);

  auto api = http(port, "GET", "/api/summary");
  EXPECT_EQ(api.status, 200);
  EXPECT_NE(api.head.find("application/json"), std::string::npos);
  EXPECT_NE(api.head.find("Cache-Control: no-store"), std::string::npos);
  Summary j(api.body);
  EXPECT_EQ(j.total("flows"), 1u);
  EXPECT_EQ(j.total("open_flows"), 0u);
  EXPECT_EQ(j.total("bytes"), 2500u);
  auto latest = j.doc["latest"].at(0);
  EXPECT_EQ(latest["experiment"].get_string().value(), "atlas");  // the registry's name
  EXPECT_EQ(latest["state"].get_string().value(), "complete");
  b->stop();
  EXPECT_EQ(f.counters.value("flowmark_dashboard_requests_total",
                             {{"backend", "dash"}, {"outcome", "not_found"}}),
            2u);
  EXPECT_EQ(f.counters.value("flowmark_dashboard_requests_total",
                             {{"backend", "dash"}, {"outcome", "bad_method"}}),
            1u);
}

// A reload frees the registry the backend was created with while an unchanged backend keeps
// running: the backend's names come from its own copy (the ASan build sees a use after free
// otherwise).
TEST_F(DashboardBackendTest, OutlivesTheRegistryItWasCreatedWith) {
  auto registry = std::make_unique<scitags::Registry>(scitags::Registry::builtin());
  f.ctx.registry = registry.get();
  auto b = make();
  ASSERT_TRUE(b && b->start());
  registry.reset();
  f.ctx.registry = nullptr;
  b->on_event(testing::sample_event("192.0.2.1", "192.0.2.2", 4000));
  Summary j(http(static_cast<DashboardBackend&>(*b).port(), "GET", "/api/summary").body);
  EXPECT_EQ(j.doc["latest"].at(0)["experiment"].get_string().value(), "atlas");
  b->stop();
}

TEST_F(DashboardBackendTest, ConfigErrorsNameTheKey) {
  auto bad = [&](const std::string& text) {
    auto b = f.make("dashboard", "dash", text);
    EXPECT_FALSE(b) << text;
    return b ? std::string() : b.error().message();
  };
  EXPECT_NE(bad("listen = 'localhost:80'").find("[backend.dash] listen"), std::string::npos);
  EXPECT_NE(bad("bin = 0").find("bin"), std::string::npos);
  EXPECT_NE(bad("window = 1\nbin = 120").find("bin"), std::string::npos);
  EXPECT_NE(bad("window = 1440\nbin = 1").find("wider bin"), std::string::npos);
  EXPECT_NE(bad("latest = 0").find("latest"), std::string::npos);

  auto b = f.make("dashboard", "dash", "listen = '127.0.0.1:0'\nstatic_dir = '/nonexistent'");
  ASSERT_TRUE(b);
  auto started = (*b)->start();
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message().find("static_dir: /nonexistent has no index.html"),
            std::string::npos)
      << started.error().message();
}

TEST_F(DashboardBackendTest, BusyPortIsNamed) {
  auto first = make();
  ASSERT_TRUE(first && first->start());
  auto port = static_cast<DashboardBackend&>(*first).port();
  auto second =
      f.make("dashboard", "dash2",
             fmt::format("listen = '127.0.0.1:{}'\nstatic_dir = '{}'", port, dir.path().string()));
  ASSERT_TRUE(second);
  auto started = (*second)->start();
  ASSERT_FALSE(started);
  EXPECT_NE(started.error().message().find("another process listens there"), std::string::npos)
      << started.error().message();
}

TEST_F(DashboardBackendTest, EventsAndRequestsConcurrently) {
  auto b = make("latest = 5");
  ASSERT_TRUE(b && b->start());
  auto port = static_cast<DashboardBackend&>(*b).port();
  constexpr int kFlows = 2000;
  std::thread worker([&] {
    for (int i = 0; i < kFlows; ++i) {
      FlowEvent e = testing::sample_event("192.0.2.1", "192.0.2.2",
                                          static_cast<std::uint16_t>(1000 + i), FlowState::kEnd);
      e.usage = scitags::Usage{.received = 0, .sent = 3};
      b->on_event(e);
    }
  });
  for (int i = 0; i < 20; ++i) {
    Summary j(http(port, "GET", "/api/summary").body);
    EXPECT_LE(j.total("flows"), static_cast<std::uint64_t>(kFlows));
    EXPECT_EQ(j.total("bytes"), 3 * j.total("flows"));  // one snapshot, consistent
  }
  worker.join();
  Summary j(http(port, "GET", "/api/summary").body);
  EXPECT_EQ(j.total("flows"), static_cast<std::uint64_t>(kFlows));
  EXPECT_EQ(j.total("bytes"), 3u * kFlows);
  b->stop();
}

}  // namespace
}  // namespace flowmark::daemon
