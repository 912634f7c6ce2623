// flowmark::scitags — FlowEvent, the one description of a flow every part of flowmark
// passes around: sources produce it, the pipeline completes it, backends encode it.
//
//   FlowEvent e;
//   e.state = FlowState::kStart;  e.protocol = Protocol::kTcp;
//   e.src = *Endpoint::parse("192.0.2.1:2345");  e.dst = *Endpoint::parse("192.0.2.2:5777");
//   e.experiment = 2;  e.activity = 1;  e.start_time = now_micros();
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/time.hpp"

namespace flowmark::scitags {

enum class FlowState : std::uint8_t { kStart, kOngoing, kEnd };
enum class Protocol : std::uint8_t { kTcp, kUdp };
// Why an end event was sent: the flow ended (its source said so), or the pipeline ended it —
// silent for flow_timeout (expired), pushed out to keep max_live_flows (evicted), or still
// live when the service stopped (shutdown: a collector records such a flow as open).
enum class EndReason : std::uint8_t { kEnded, kExpired, kEvicted, kShutdown };

std::string_view to_string(FlowState s) noexcept;  // "start", "ongoing", "end"
std::string_view to_string(Protocol p) noexcept;   // "tcp", "udp"
std::optional<FlowState> parse_flow_state(std::string_view s) noexcept;
std::optional<Protocol> parse_protocol(std::string_view s) noexcept;
std::string_view to_string(EndReason r) noexcept;  // "ended", "expired", "evicted", "shutdown"

// Bytes carried by the flow so far, as seen from its source.
struct Usage {
  std::uint64_t received = 0;
  std::uint64_t sent = 0;
  friend bool operator==(const Usage&, const Usage&) = default;
};

// TCP state of the flow (from netlink INET_DIAG_INFO); times in microseconds, rates in
// bytes per second.
struct TcpInfo {
  std::uint32_t rtt_us = 0, rtt_var_us = 0;
  std::uint32_t cwnd = 0, ssthresh = 0, mss = 0, pmtu = 0;
  std::uint64_t bytes_sent = 0, bytes_acked = 0, bytes_received = 0;
  std::uint64_t segs_out = 0, segs_in = 0, retrans = 0;
  std::uint64_t pacing_rate = 0, delivery_rate = 0;
  friend bool operator==(const TcpInfo&, const TcpInfo&) = default;
};

struct FlowEvent {
  FlowState state = FlowState::kStart;
  Protocol protocol = Protocol::kTcp;
  Endpoint src;
  Endpoint dst;
  std::uint32_t experiment = 0;
  std::uint32_t activity = 0;
  Micros start_time = 0;    // 0: not known
  Micros current_time = 0;  // 0: not known (encoders use the time of encoding)
  Micros end_time = 0;      // 0: not known / not ended
  std::optional<Usage> usage;
  std::optional<TcpInfo> tcp;
  EndReason end_reason = EndReason::kEnded;  // end events only
  // The volume (max of sent and received) of the usage the pipeline forwarded for this flow
  // before this event (0 for a start): a backend that sums volumes adds the difference,
  // without keeping per-flow state of its own.
  std::uint64_t previous_volume = 0;

  friend bool operator==(const FlowEvent&, const FlowEvent&) = default;
};

}  // namespace flowmark::scitags
