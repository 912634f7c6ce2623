// flowmark::daemon — the prometheus backend's aggregate metrics: what a collector accounts
// for, summed per (experiment, activity, source site, destination site) instead of per flow.
//
//   flowmark_collector_bytes_total{experiment,activity,src_site,dst_site}  counter
//   flowmark_collector_flows_total{experiment,activity,src_site,dst_site}  counter
//   flowmark_collector_open_flows{experiment,activity,src_site,dst_site}   gauge
//   flowmark_collector_series_overflow_total                                counter
//
//   AggregateMetrics m(10000);
//   auto* g = m.group(AggregateMetrics::labels_of(record));
//   m.flow_opened(*g);  m.add_bytes(*g, 1500);  m.flow_closed(*g);
//   std::vector<prometheus::MetricFamily> out;  m.collect(out);
//
// Labels: experiment and activity are the registry's names, or the numeric id where the
// registry has no name; src_site and dst_site are the site names of the site map, or the
// empty string where no site contains the address (Prometheus reads an empty label as an
// absent one: `src_site=""` selects that traffic).
//
// Bounded cardinality: at most max_groups groups (each three series) ever exist, plus one
// overflow group whose four labels are "other". Every new flow of a group that did not fit
// is counted there and in flowmark_collector_series_overflow_total; the groups that exist
// keep counting. Groups are never removed (their counters must not go backwards), so the
// bound holds for the backend's lifetime.
//
// Not thread-safe: the backend's State guards it with its mutex.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "flowmark/collector/record.hpp"

namespace prometheus {
struct MetricFamily;
}

namespace flowmark::daemon {

// One group's values. At namespace scope, not nested: clang does not see a nested struct
// with member initializers as default-constructible inside its enclosing class.
struct AggregateGroup {
  std::uint64_t bytes = 0;  // sum of volume increments
  std::uint64_t flows = 0;  // flows first seen in this group
  std::uint64_t open = 0;   // flows seen and not yet ended
};

class AggregateMetrics {
 public:
  // The default bound: 10,000 groups are 30,000 series, about 2 MB of labels and a scrape of
  // a few MB — within what one Prometheus target is expected to carry.
  static constexpr std::size_t kDefaultMaxGroups = 10000;
  static constexpr const char* kOverflowLabel = "other";

  struct Labels {
    std::string experiment, activity, src_site, dst_site;
    friend auto operator<=>(const Labels&, const Labels&) = default;
    friend bool operator==(const Labels&, const Labels&) = default;
  };

  using Group = AggregateGroup;

  explicit AggregateMetrics(std::size_t max_groups = kDefaultMaxGroups) : max_groups_(max_groups) {}

  // The labels of the group a flow's record belongs to (names or ids; site or "").
  static Labels labels_of(const collector::Record& r);

  // The group of `labels`, created when there is room, else the overflow group (and the
  // overflow counter goes up). The reference stays valid for the object's lifetime.
  Group& group(Labels labels);

  static void flow_opened(Group& g) noexcept {
    ++g.flows;
    ++g.open;
  }
  // Never below zero: an end for a flow not counted open changes nothing.
  static void flow_closed(Group& g) noexcept {
    if (g.open > 0) --g.open;
  }
  static void add_bytes(Group& g, std::uint64_t n) noexcept { g.bytes += n; }

  // Appends the four families (one sample per group; the overflow counter always, 0 too).
  void collect(std::vector<prometheus::MetricFamily>& out) const;

  std::size_t groups() const noexcept { return groups_.size(); }  // without the overflow group
  std::uint64_t overflows() const noexcept { return overflows_; }
  std::size_t max_groups() const noexcept { return max_groups_; }
  // Null when no such group exists (tests, diagnostics).
  const Group* find(const Labels& labels) const;

 private:
  std::size_t max_groups_;
  std::map<Labels, Group, std::less<>> groups_;  // ordered: a stable exposition order
  std::optional<Group> overflow_;                // exists once something overflowed
  std::uint64_t overflows_ = 0;
};

}  // namespace flowmark::daemon
