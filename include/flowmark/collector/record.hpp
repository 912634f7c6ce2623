// flowmark::collector — Record, one flow as a collector accounts for it: the start, ongoing
// and end fireflies (or any source's events) of one flow joined by the pipeline, with what
// the Scitags collector computes from them (duration, volume, throughput), the registry's
// names and the sites of both endpoints. Store, Kafka, metrics and dashboard all take it.
//
//   auto r = make_record(event, registry, sites.get().get());
//   r.volume();        // max(bytes sent, bytes received)
//   std::string json;  append_json(r, json);
//
// Direction: the 5-tuple is kept as the source stated it (the Scitags collector swaps source
// and destination when received > sent, and so loses the flow's identity); `direction()`
// says which way the larger volume went instead.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "flowmark/collector/site_map.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::collector {

// open: started, not ended (also: flushed at shutdown); complete: its end event came;
// timed_out: silent for [service] flow_timeout; evicted: ended to keep max_live_flows.
enum class RecordState : std::uint8_t { kOpen, kComplete, kTimedOut, kEvicted };
std::string_view to_string(RecordState s) noexcept;  // "open", "complete", "timed_out", "evicted"
std::optional<RecordState> parse_record_state(std::string_view s) noexcept;

// Which way the larger volume went: src_to_dst when sent >= received (sent > 0), dst_to_src
// when received > sent, unknown without usage or with none carried.
enum class Direction : std::uint8_t { kUnknown, kSrcToDst, kDstToSrc };
std::string_view to_string(Direction d) noexcept;  // "", "src_to_dst", "dst_to_src"

struct Record {
  scitags::Protocol protocol = scitags::Protocol::kTcp;
  Endpoint src, dst;
  Micros start_time = 0;
  Micros end_time = 0;  // 0 while open
  Micros updated = 0;   // time of the event this record was made from
  bool has_usage = false;
  std::uint64_t bytes_sent = 0, bytes_received = 0;  // as seen from the source (usage)
  std::uint32_t experiment_id = 0, activity_id = 0;  // as sent, known to the registry or not
  std::string experiment, activity;                  // registry names; empty: unknown (null)
  std::string src_site, dst_site;                    // empty: no site contains the address
  RecordState state = RecordState::kOpen;

  std::uint64_t volume() const noexcept {
    return bytes_sent > bytes_received ? bytes_sent : bytes_received;
  }
  // Seconds from start to end (to `updated` while open); 0 when not positive.
  double duration() const noexcept;
  // volume / duration in bytes per second; 0 when the duration is 0.
  double throughput() const noexcept;
  Direction direction() const noexcept;
};

// The record of the flow an event describes. State: start/ongoing → open; end → by the
// event's end_reason (ended → complete, expired → timed_out, evicted → evicted, shutdown →
// open with no end time). Names from `registry` and sites from `sites` when given.
Record make_record(const scitags::FlowEvent& e, const scitags::Registry* registry,
                   const SiteMap* sites);

// One JSON object, no newline:
// {"protocol":"tcp","src_ip":"192.0.2.1","src_port":2345,"dst_ip":"192.0.2.2","dst_port":443,
//  "start_time":"2026-12-07T04:30:00.000000+00:00","end_time":null|"...","state":"complete",
//  "duration":12.5,"bytes_sent":N,"bytes_received":N,"volume":N,"throughput":N (bytes/s),
//  "direction":"src_to_dst"|"dst_to_src"|null,"experiment_id":2,"activity_id":1,
//  "experiment":"atlas"|null,"activity":"..."|null,"src_site":"..."|null,"dst_site":...|null}
void append_json(const Record& r, std::string& out);

}  // namespace flowmark::collector
