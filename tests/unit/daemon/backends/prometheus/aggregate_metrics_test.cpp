// The prometheus backend's aggregate metrics: what each event adds to which group, the bound
// on groups and the overflow group, and the exposition a scraper reads.
#include "daemon/backends/prometheus/aggregate_metrics.hpp"

#include <gtest/gtest.h>
#include <prometheus/metric_family.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "../../test_util.hpp"
#include "daemon/backends/prometheus/prometheus_backend.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;
using Labels = AggregateMetrics::Labels;

constexpr std::string_view kRegistry = R"({"experiments":[
  {"expName":"atlas","expId":2,"activities":[{"activityName":"default","activityId":1},
                                            {"activityName":"perfSONAR","activityId":2}]}]})";

std::shared_ptr<const scitags::Registry> registry() {
  auto r = scitags::Registry::parse(kRegistry, "test");
  EXPECT_TRUE(r) << r.error().message();
  return std::make_shared<const scitags::Registry>(std::move(*r));
}

std::shared_ptr<collector::SiteMapHandle> sites() {
  collector::SiteMap m;
  EXPECT_TRUE(m.add("SITE-A", *Network::parse("192.0.2.0/24")));
  EXPECT_TRUE(m.add("SITE-A", *Network::parse("2001:db8:a::/48")));
  EXPECT_TRUE(m.add("SITE-B", *Network::parse("198.51.100.0/24")));
  return std::make_shared<collector::SiteMapHandle>(std::move(m));
}

FlowEvent event(FlowState state, std::string_view src, std::string_view dst, std::uint32_t exp = 2,
                std::uint32_t act = 1) {
  FlowEvent e;
  e.state = state;
  e.src = *Endpoint::parse(src);
  e.dst = *Endpoint::parse(dst);
  e.experiment = exp;
  e.activity = act;
  e.start_time = 1'700'000'000'000'000;
  return e;
}

FlowEvent with_usage(FlowEvent e, std::uint64_t sent, std::uint64_t received,
                     std::uint64_t previous) {
  e.usage = scitags::Usage{received, sent};
  e.previous_volume = previous;
  return e;
}

PrometheusBackend::Options options(std::size_t max_series = 100) {
  PrometheusBackend::Options o;
  o.listen = *PrometheusBackend::parse_listen("127.0.0.1:0");
  o.flow_metrics = false;
  o.max_aggregate_series = max_series;
  o.registry = registry();
  o.sites = sites();
  return o;
}

const AggregateMetrics::Group* group_of(const PrometheusBackend& b, const Labels& l) {
  auto a = b.aggregates();
  if (!a) return nullptr;
  static AggregateMetrics::Group copy;  // outlives the temporary copy of the state
  const auto* g = a->find(l);
  if (!g) return nullptr;
  copy = *g;
  return &copy;
}

TEST(AggregateMetrics, LabelsAreNamesOrIdsAndSitesOrEmpty) {
  collector::Record r;
  r.experiment_id = 2;
  r.activity_id = 9;
  r.experiment = "atlas";
  r.src_site = "SITE-A";
  EXPECT_EQ(AggregateMetrics::labels_of(r), (Labels{"atlas", "9", "SITE-A", ""}));
  r.activity = "default";
  r.dst_site = "SITE-B";
  EXPECT_EQ(AggregateMetrics::labels_of(r), (Labels{"atlas", "default", "SITE-A", "SITE-B"}));
  collector::Record unknown;
  unknown.experiment_id = 77;
  unknown.activity_id = 3;
  EXPECT_EQ(AggregateMetrics::labels_of(unknown), (Labels{"77", "3", "", ""}));
}

TEST(AggregateMetrics, GroupsAreBoundedAndTheRestFoldsIntoOther) {
  AggregateMetrics m(2);
  auto& a = m.group({"atlas", "default", "A", "B"});
  AggregateMetrics::flow_opened(a);
  auto& b = m.group({"atlas", "default", "B", "A"});
  AggregateMetrics::flow_opened(b);
  EXPECT_EQ(&m.group({"atlas", "default", "A", "B"}), &a);  // existing groups keep counting
  EXPECT_EQ(m.overflows(), 0u);
  auto& o1 = m.group({"cms", "default", "A", "B"});
  auto& o2 = m.group({"lhcb", "1", "", ""});
  EXPECT_EQ(&o1, &o2);
  EXPECT_NE(&o1, &a);
  AggregateMetrics::flow_opened(o1);
  AggregateMetrics::add_bytes(o1, 10);
  AggregateMetrics::flow_opened(o2);
  AggregateMetrics::add_bytes(o2, 5);
  EXPECT_EQ(m.groups(), 2u);
  EXPECT_EQ(m.overflows(), 2u);
  const auto* other = m.find({"other", "other", "other", "other"});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->flows, 2u);
  EXPECT_EQ(other->bytes, 15u);
  EXPECT_EQ(other->open, 2u);
  AggregateMetrics::flow_closed(*const_cast<AggregateMetrics::Group*>(other));
  AggregateMetrics::flow_closed(b);
  AggregateMetrics::flow_closed(b);  // never below zero
  EXPECT_EQ(b.open, 0u);
  EXPECT_EQ(b.flows, 1u);

  std::vector<prometheus::MetricFamily> out;
  m.collect(out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].name, "flowmark_collector_bytes_total");
  EXPECT_EQ(out[0].type, prometheus::MetricType::Counter);
  EXPECT_EQ(out[1].name, "flowmark_collector_flows_total");
  EXPECT_EQ(out[2].name, "flowmark_collector_open_flows");
  EXPECT_EQ(out[2].type, prometheus::MetricType::Gauge);
  EXPECT_EQ(out[3].name, "flowmark_collector_series_overflow_total");
  EXPECT_EQ(out[3].metric.at(0).counter.value, 2);
  ASSERT_EQ(out[0].metric.size(), 3u);  // two groups and "other"
  const auto& last = out[0].metric.back();
  ASSERT_EQ(last.label.size(), 4u);
  for (const auto& l : last.label) EXPECT_EQ(l.value, "other") << l.name;
  EXPECT_EQ(last.counter.value, 15);
  EXPECT_EQ(out[2].metric.back().gauge.value, 1);
}

TEST(AggregateMetrics, NothingCollectedButTheOverflowCounterWhileEmpty) {
  AggregateMetrics m;
  EXPECT_EQ(m.max_groups(), AggregateMetrics::kDefaultMaxGroups);
  std::vector<prometheus::MetricFamily> out;
  m.collect(out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "flowmark_collector_series_overflow_total");
  EXPECT_EQ(out[0].metric.at(0).counter.value, 0);
}

// start → ongoing → end of one flow: bytes grow by the volume increments, one flow, open
// back to zero.
TEST(PrometheusAggregates, OneFlowThroughItsLife) {
  PrometheusBackend b(options());
  const Labels ab{"atlas", "default", "SITE-A", "SITE-B"};
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.1:2345", "198.51.100.7:443"), 0, 0, 0));
  const auto* g = group_of(b, ab);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->flows, 1u);
  EXPECT_EQ(g->open, 1u);
  EXPECT_EQ(g->bytes, 0u);
  b.on_event(
      with_usage(event(FlowState::kOngoing, "192.0.2.1:2345", "198.51.100.7:443"), 1000, 40, 0));
  b.on_event(
      with_usage(event(FlowState::kOngoing, "192.0.2.1:2345", "198.51.100.7:443"), 2500, 80, 1000));
  g = group_of(b, ab);
  EXPECT_EQ(g->bytes, 2500u);
  EXPECT_EQ(g->flows, 1u);
  EXPECT_EQ(g->open, 1u);
  // Volume is max(sent, received): a flow whose source mostly receives counts that.
  b.on_event(
      with_usage(event(FlowState::kEnd, "192.0.2.1:2345", "198.51.100.7:443"), 2600, 9000, 2500));
  g = group_of(b, ab);
  EXPECT_EQ(g->bytes, 9000u);
  EXPECT_EQ(g->flows, 1u);
  EXPECT_EQ(g->open, 0u);
  EXPECT_EQ(b.live_flows(), 0u);
}

TEST(PrometheusAggregates, AVolumeBelowThePreviousAddsNothing) {
  PrometheusBackend b(options());
  const Labels ab{"atlas", "default", "SITE-A", "SITE-B"};
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"), 500, 0, 0));
  b.on_event(with_usage(event(FlowState::kOngoing, "192.0.2.1:1", "198.51.100.7:2"), 400, 0, 500));
  b.on_event(event(FlowState::kOngoing, "192.0.2.1:1", "198.51.100.7:2"));  // no usage
  EXPECT_EQ(group_of(b, ab)->bytes, 500u);
}

TEST(PrometheusAggregates, FlowsWhoseStartWasNotSeenCountOnce) {
  PrometheusBackend b(options());
  const Labels ab{"atlas", "default", "SITE-A", "SITE-B"};
  // An end alone: one flow, its volume, never open.
  b.on_event(with_usage(event(FlowState::kEnd, "192.0.2.1:10", "198.51.100.7:20"), 700, 0, 0));
  auto g = *group_of(b, ab);
  EXPECT_EQ(g.flows, 1u);
  EXPECT_EQ(g.open, 0u);
  EXPECT_EQ(g.bytes, 700u);
  // An ongoing first: one flow, open, and its end closes it without counting it again.
  b.on_event(with_usage(event(FlowState::kOngoing, "192.0.2.1:11", "198.51.100.7:20"), 50, 0, 0));
  b.on_event(with_usage(event(FlowState::kOngoing, "192.0.2.1:11", "198.51.100.7:20"), 80, 0, 50));
  g = *group_of(b, ab);
  EXPECT_EQ(g.flows, 2u);
  EXPECT_EQ(g.open, 1u);
  b.on_event(with_usage(event(FlowState::kEnd, "192.0.2.1:11", "198.51.100.7:20"), 90, 0, 80));
  g = *group_of(b, ab);
  EXPECT_EQ(g.flows, 2u);
  EXPECT_EQ(g.open, 0u);
  EXPECT_EQ(g.bytes, 790u);
}

TEST(PrometheusAggregates, ARestartOnTheSameTupleIsANewFlow) {
  PrometheusBackend b(options());
  const Labels ab{"atlas", "default", "SITE-A", "SITE-B"};
  auto first = event(FlowState::kStart, "192.0.2.1:10", "198.51.100.7:20");
  b.on_event(first);
  b.on_event(first);  // the same start again (same start time): not a new flow
  auto second = first;
  second.start_time += 5'000'000;
  b.on_event(second);
  auto g = *group_of(b, ab);
  EXPECT_EQ(g.flows, 2u);
  EXPECT_EQ(g.open, 1u);
}

TEST(PrometheusAggregates, GroupsByNamesIdsAndSites) {
  PrometheusBackend b(options());
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"), 1, 0, 0));
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.2:1", "198.51.100.8:2"), 2, 0, 0));
  // Reverse direction: a group of its own (the 5-tuple is kept as sent).
  b.on_event(with_usage(event(FlowState::kStart, "198.51.100.8:2", "192.0.2.2:1"), 4, 0, 0));
  // Another activity; an activity the registry does not know; an unknown experiment.
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.3:1", "198.51.100.7:2", 2, 2), 8, 0, 0));
  b.on_event(
      with_usage(event(FlowState::kStart, "192.0.2.4:1", "198.51.100.7:2", 2, 33), 16, 0, 0));
  b.on_event(
      with_usage(event(FlowState::kStart, "192.0.2.5:1", "198.51.100.7:2", 99, 1), 32, 0, 0));
  // No site for 203.0.113.9; IPv6 site networks as well.
  b.on_event(with_usage(event(FlowState::kStart, "203.0.113.9:1", "[2001:db8:a::9]:2"), 64, 0, 0));
  auto a = b.aggregates();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->groups(), 6u);
  EXPECT_EQ(a->find({"atlas", "default", "SITE-A", "SITE-B"})->bytes, 3u);
  EXPECT_EQ(a->find({"atlas", "default", "SITE-A", "SITE-B"})->flows, 2u);
  EXPECT_EQ(a->find({"atlas", "default", "SITE-B", "SITE-A"})->bytes, 4u);
  EXPECT_EQ(a->find({"atlas", "perfSONAR", "SITE-A", "SITE-B"})->bytes, 8u);
  EXPECT_EQ(a->find({"atlas", "33", "SITE-A", "SITE-B"})->bytes, 16u);
  EXPECT_EQ(a->find({"99", "1", "SITE-A", "SITE-B"})->bytes, 32u);
  EXPECT_EQ(a->find({"atlas", "default", "", "SITE-A"})->bytes, 64u);
  EXPECT_EQ(a->overflows(), 0u);
}

TEST(PrometheusAggregates, NewGroupsPastTheBoundGoToOther) {
  PrometheusBackend b(options(2));
  for (int i = 0; i < 5; ++i) {  // five experiments: five groups wanted, two allowed
    auto e = event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2", 100 + i, 1);
    e.src.port = static_cast<std::uint16_t>(1000 + i);
    b.on_event(with_usage(e, 10, 0, 0));
  }
  // A flow of an existing group still counts there.
  b.on_event(
      with_usage(event(FlowState::kStart, "192.0.2.1:9", "198.51.100.7:2", 100, 1), 1, 0, 0));
  // The end of an overflowed flow closes it in "other".
  auto end = event(FlowState::kEnd, "192.0.2.1:1004", "198.51.100.7:2", 104, 1);
  b.on_event(with_usage(end, 10, 0, 10));
  auto a = b.aggregates();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->groups(), 2u);
  EXPECT_EQ(a->overflows(), 3u);
  EXPECT_EQ(a->find({"100", "1", "SITE-A", "SITE-B"})->flows, 2u);
  const auto* other = a->find({"other", "other", "other", "other"});
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(other->flows, 3u);
  EXPECT_EQ(other->bytes, 30u);
  EXPECT_EQ(other->open, 2u);
}

TEST(PrometheusAggregates, ZeroSeriesTurnsThemOff) {
  PrometheusBackend b(options(0));
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"), 1, 0, 0));
  EXPECT_FALSE(b.aggregates());
  EXPECT_EQ(b.live_flows(), 1u);
}

TEST(PrometheusAggregates, ConfigKey) {
  Counters counters;
  ServiceContext context{counters, nullptr, "host"};
  toml::table empty;
  Section s(&empty, "[backend.metrics]");
  auto b = PrometheusBackend::from_config(s, context);
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->aggregates());
  EXPECT_EQ((*b)->aggregates()->max_groups(), AggregateMetrics::kDefaultMaxGroups);

  auto set = toml::parse("max_aggregate_series = 0");
  Section s2(&set, "[backend.metrics]");
  auto off = PrometheusBackend::from_config(s2, context);
  ASSERT_TRUE(off) << off.error().message();
  EXPECT_TRUE(s2.finish());
  EXPECT_FALSE((*off)->aggregates());

  auto bad = toml::parse("max_aggregate_series = -1");
  Section s3(&bad, "[backend.metrics]");
  auto e = PrometheusBackend::from_config(s3, context);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("max_aggregate_series"), std::string::npos)
      << e.error().message();
}

// The context's registry is copied: the backend keeps its names after the service's own
// registry is gone (a reload replaces it while an unchanged backend keeps running).
TEST(PrometheusAggregates, KeepsItsOwnCopyOfTheRegistry) {
  Counters counters;
  auto reg = std::make_unique<scitags::Registry>(*registry());
  ServiceContext context{counters, reg.get(), "host"};
  context.sites = sites();
  toml::table empty;
  Section s(&empty, "[backend.metrics]");
  auto b = PrometheusBackend::from_config(s, context);
  ASSERT_TRUE(b) << b.error().message();
  reg.reset();
  (*b)->on_event(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"));
  ASSERT_NE(group_of(**b, {"atlas", "default", "SITE-A", "SITE-B"}), nullptr);
}

// A new site map (SIGHUP) names the sites of the flows that start after it; a flow stays in
// the group it was first counted in, so its end closes it there.
TEST(PrometheusAggregates, ANewSiteMapAppliesToNewFlows) {
  auto o = options();
  auto handle = o.sites;
  PrometheusBackend b(std::move(o));
  b.on_event(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"));
  collector::SiteMap renamed;
  ASSERT_TRUE(renamed.add("SITE-A2", *Network::parse("192.0.2.0/24")));
  handle->set(std::move(renamed));
  b.on_event(event(FlowState::kStart, "192.0.2.1:3", "198.51.100.7:2"));
  b.on_event(event(FlowState::kEnd, "192.0.2.1:1", "198.51.100.7:2"));
  auto a = b.aggregates();
  ASSERT_TRUE(a);
  const auto* old_group = a->find({"atlas", "default", "SITE-A", "SITE-B"});
  const auto* new_group = a->find({"atlas", "default", "SITE-A2", ""});
  ASSERT_NE(old_group, nullptr);
  ASSERT_NE(new_group, nullptr);
  EXPECT_EQ(old_group->flows, 1u);
  EXPECT_EQ(old_group->open, 0u);
  EXPECT_EQ(new_group->flows, 1u);
  EXPECT_EQ(new_group->open, 1u);
}

// GET /metrics: the exposition.
std::string scrape(std::uint16_t port) { return testing::http_get(port, "/metrics").body; }

TEST(PrometheusAggregates, Exposition) {
  PrometheusBackend b(options());
  ASSERT_TRUE(b.start());
  b.on_event(with_usage(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.7:2"), 12345, 0, 0));
  b.on_event(with_usage(event(FlowState::kEnd, "203.0.113.1:1", "198.51.100.7:2", 99, 4), 7, 0, 0));
  const std::string text = scrape(b.port());
  b.stop();
  for (const char* line : {
           "# TYPE flowmark_collector_bytes_total counter",
           "flowmark_collector_bytes_total{experiment=\"atlas\",activity=\"default\","
           "src_site=\"SITE-A\",dst_site=\"SITE-B\"} 12345\n",
           "flowmark_collector_bytes_total{experiment=\"99\",activity=\"4\",src_site=\"\","
           "dst_site=\"SITE-B\"} 7\n",
           "# TYPE flowmark_collector_flows_total counter",
           "flowmark_collector_flows_total{experiment=\"atlas\",activity=\"default\","
           "src_site=\"SITE-A\",dst_site=\"SITE-B\"} 1\n",
           "# TYPE flowmark_collector_open_flows gauge",
           "flowmark_collector_open_flows{experiment=\"atlas\",activity=\"default\","
           "src_site=\"SITE-A\",dst_site=\"SITE-B\"} 1\n",
           "flowmark_collector_open_flows{experiment=\"99\",activity=\"4\",src_site=\"\","
           "dst_site=\"SITE-B\"} 0\n",
           "flowmark_collector_series_overflow_total 0\n",
           "flowmark_live_flows 1\n",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\nin:\n" << text;
  }
}

}  // namespace
}  // namespace flowmark::daemon
