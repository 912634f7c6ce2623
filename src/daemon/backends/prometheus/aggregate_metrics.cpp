#include "daemon/backends/prometheus/aggregate_metrics.hpp"

#include <prometheus/metric_family.h>

#include <utility>

namespace flowmark::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

std::vector<ClientMetric::Label> to_labels(const AggregateMetrics::Labels& l) {
  return {{"experiment", l.experiment},
          {"activity", l.activity},
          {"src_site", l.src_site},
          {"dst_site", l.dst_site}};
}

}  // namespace

AggregateMetrics::Labels AggregateMetrics::labels_of(const collector::Record& r) {
  Labels l;
  l.experiment = r.experiment.empty() ? std::to_string(r.experiment_id) : r.experiment;
  l.activity = r.activity.empty() ? std::to_string(r.activity_id) : r.activity;
  l.src_site = r.src_site;
  l.dst_site = r.dst_site;
  return l;
}

AggregateMetrics::Group& AggregateMetrics::group(Labels labels) {
  if (auto it = groups_.find(labels); it != groups_.end()) return it->second;
  if (groups_.size() < max_groups_) return groups_.try_emplace(std::move(labels)).first->second;
  ++overflows_;
  if (!overflow_) overflow_.emplace();
  return *overflow_;
}

const AggregateMetrics::Group* AggregateMetrics::find(const Labels& labels) const {
  if (labels == Labels{kOverflowLabel, kOverflowLabel, kOverflowLabel, kOverflowLabel} &&
      overflow_) {
    return &*overflow_;
  }
  auto it = groups_.find(labels);
  return it == groups_.end() ? nullptr : &it->second;
}

void AggregateMetrics::collect(std::vector<MetricFamily>& out) const {
  MetricFamily bytes{"flowmark_collector_bytes_total",
                     "Volume (max of bytes sent and received) of the flows, by experiment, "
                     "activity and the sites of source and destination",
                     MetricType::Counter,
                     {}};
  MetricFamily flows{"flowmark_collector_flows_total",
                     "Flows seen (a start event, or the first event of a flow whose start was "
                     "not seen), by experiment, activity and sites",
                     MetricType::Counter,
                     {}};
  MetricFamily open{"flowmark_collector_open_flows",
                    "Flows seen and not yet ended, by experiment, activity and sites",
                    MetricType::Gauge,
                    {}};
  const std::size_t n = groups_.size() + (overflow_ ? 1 : 0);
  bytes.metric.reserve(n);
  flows.metric.reserve(n);
  open.metric.reserve(n);
  auto add = [&](const Labels& l, const Group& g) {
    auto labels = to_labels(l);
    auto& b = bytes.metric.emplace_back();
    b.label = labels;
    b.counter.value = static_cast<double>(g.bytes);
    auto& f = flows.metric.emplace_back();
    f.label = labels;
    f.counter.value = static_cast<double>(g.flows);
    auto& o = open.metric.emplace_back();
    o.label = std::move(labels);
    o.gauge.value = static_cast<double>(g.open);
  };
  for (const auto& [labels, g] : groups_) add(labels, g);
  if (overflow_) add({kOverflowLabel, kOverflowLabel, kOverflowLabel, kOverflowLabel}, *overflow_);
  // Families without samples are left out, as prometheus-cpp does.
  if (n > 0) {
    out.push_back(std::move(bytes));
    out.push_back(std::move(flows));
    out.push_back(std::move(open));
  }
  MetricFamily overflow{"flowmark_collector_series_overflow_total",
                        "Flows counted in the experiment=\"other\" group because their own "
                        "group would have passed max_aggregate_series",
                        MetricType::Counter,
                        {}};
  overflow.metric.emplace_back().counter.value = static_cast<double>(overflows_);
  out.push_back(std::move(overflow));
}

}  // namespace flowmark::daemon
