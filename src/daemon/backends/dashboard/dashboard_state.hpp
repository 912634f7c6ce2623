// flowmark::daemon::dashboard — what the dashboard page shows, kept in memory and bounded:
// totals (flows, open flows, bytes), bytes per time bin per experiment over a sliding window
// (the stacked throughput chart), bytes and flows per site pair (the top pairs table) and the
// latest flow records. Built from the records the dashboard backend makes of its events;
// read as one JSON document (GET /api/summary).
//
//   DashboardState state(DashboardLimits{});
//   state.add(record, /*added_bytes=*/r.volume() - e.previous_volume, /*ended=*/false, now);
//   std::string json = state.summary_json(now);
//
// Bounds (DashboardLimits): `bins` bins of `bin` each; at most `max_series` experiments
// charted (later ones are summed under "other"); at most `max_pairs` site pairs (later ones
// summed in one row marked "other"); `latest` records; at most `max_open` open flows
// remembered (a flow not remembered is counted again if another of its events comes: flows
// is then an over-estimate, and `untracked()` says how often that happened).
//
// Thread-safe: add() on the backend's worker thread, summary_json() on civetweb's threads,
// one mutex; summary_json() formats at most bins × series numbers, top_pairs rows and
// `latest` records under it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "flowmark/collector/record.hpp"
#include "flowmark/core/time.hpp"

namespace flowmark::daemon::dashboard {

struct DashboardLimits {
  Micros bin = 10'000'000;           // width of one throughput bin, µs
  std::size_t bins = 90;             // bins in the window (15 minutes of 10 s)
  std::size_t max_series = 32;       // experiments charted; the rest under "other"
  std::size_t max_pairs = 1000;      // site pairs accounted; the rest in one "other" row
  std::size_t top_pairs = 10;        // rows of the top pairs table
  std::size_t latest = 50;           // latest flow records kept
  std::size_t max_open = 1'000'000;  // open flows remembered (~100 bytes each)
};

class DashboardState {
 public:
  explicit DashboardState(DashboardLimits limits);

  // One event's record. `added_bytes`: the volume the flow carried since its previous event;
  // `ended`: the event was an end (the flow is no longer open). `now` places the bytes in
  // a bin.
  void add(const collector::Record& r, std::uint64_t added_bytes, bool ended, Micros now);

  // {"now":µs,"bin_seconds":10,"window_seconds":900,
  //  "totals":{"flows":N,"open_flows":N,"bytes":N},
  //  "throughput":{"start":µs of the first bin,"bin_seconds":10,
  //                "series":[{"experiment":"atlas","bytes":[N per bin, oldest first]}, ...]},
  //  "site_pairs":[{"src_site":"A"|null,"dst_site":"B"|null,"bytes":N,"flows":N
  //                 [,"other":true]}, ... by bytes, largest first],
  //  "latest":[record JSON (collector::append_json), newest first]}
  std::string summary_json(Micros now) const;

  std::uint64_t untracked() const;      // flows not remembered as open (max_open)
  std::uint64_t folded_pairs() const;   // events summed in the "other" site pair
  std::uint64_t folded_series() const;  // events summed in the "other" experiment

 private:
  struct FlowId {
    scitags::Protocol protocol = scitags::Protocol::kTcp;
    Endpoint src, dst;
    Micros start_time = 0;
    friend bool operator==(const FlowId&, const FlowId&) = default;
  };
  struct FlowIdHash {
    std::size_t operator()(const FlowId& id) const noexcept;
  };
  struct PairTotals {
    std::uint64_t bytes = 0, flows = 0;
  };
  struct Bin {
    std::int64_t slot = -1;            // time / bin width; -1: never used
    std::vector<std::uint64_t> bytes;  // by series index
  };
  static FlowId id_of(const collector::Record& r);
  std::size_t series_of(const collector::Record& r);

  const DashboardLimits limits_;
  mutable std::mutex mutex_;
  std::uint64_t flows_ = 0, bytes_ = 0;
  std::uint64_t untracked_ = 0, folded_pairs_ = 0, folded_series_ = 0;
  std::unordered_set<FlowId, FlowIdHash> open_;
  std::vector<std::string> series_;  // experiment labels; the last may be "other"
  std::unordered_map<std::string, std::size_t> series_index_;
  std::size_t other_series_ = SIZE_MAX;
  std::vector<Bin> bins_;
  // Key: src_site + '\0' + dst_site (site names have no NUL).
  std::unordered_map<std::string, PairTotals> pairs_;
  PairTotals other_pair_;
  struct Latest {
    std::size_t hash;  // of the record's FlowId: most comparisons stop here
    collector::Record record;
  };
  std::deque<Latest> latest_;  // newest first
};

}  // namespace flowmark::daemon::dashboard
