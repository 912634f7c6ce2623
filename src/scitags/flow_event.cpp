#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::scitags {

std::string_view to_string(FlowState s) noexcept {
  switch (s) {
    case FlowState::kStart: return "start";
    case FlowState::kOngoing: return "ongoing";
    case FlowState::kEnd: return "end";
  }
  return "?";
}

std::string_view to_string(Protocol p) noexcept { return p == Protocol::kTcp ? "tcp" : "udp"; }

std::string_view to_string(EndReason r) noexcept {
  switch (r) {
    case EndReason::kEnded: return "ended";
    case EndReason::kExpired: return "expired";
    case EndReason::kEvicted: return "evicted";
    case EndReason::kShutdown: return "shutdown";
  }
  return "ended";
}

std::optional<FlowState> parse_flow_state(std::string_view s) noexcept {
  if (s == "start") return FlowState::kStart;
  if (s == "ongoing") return FlowState::kOngoing;
  if (s == "end") return FlowState::kEnd;
  return std::nullopt;
}

std::optional<Protocol> parse_protocol(std::string_view s) noexcept {
  if (s == "tcp") return Protocol::kTcp;
  if (s == "udp") return Protocol::kUdp;
  return std::nullopt;
}

}  // namespace flowmark::scitags
