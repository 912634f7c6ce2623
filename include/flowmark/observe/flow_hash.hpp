// flowmark::observe — which worker a frame belongs to, for an observer split over N threads
// (`flowmark observe --workers N`): a symmetric hash of the frame's two IP addresses, so that
// both directions of a flow, its non-first fragments (no ports) and the ICMP errors quoting
// it (hashed by the quoted packet's addresses) reach the same worker, whose own Observer
// holds the flow.
//
//   const std::uint32_t w = flow_hash(LinkType::kEthernet, frame).hash % workers;
// An ICMP error quoting a flow that is not held counts in a 3-tuple flow of its own
// addresses instead: `own` names that flow's worker (the caller asks the quoted flow's
// observer, Observer::quotes_held_flow, which one applies).
//
// Only the addresses are hashed (not the protocol or ports): an ICMP error a host sends about
// a packet it received (port unreachable, packet too big) then shares a worker with both the
// flow it quotes and its own 3-tuple ICMP flow. Frames that are not IP hash to 0.
#pragma once

#include <cstdint>
#include <span>

#include "flowmark/observe/packet.hpp"

namespace flowmark::observe {

// hash: of the flow the frame belongs to (for an ICMP error, the quoted packet's flow);
// own: of the frame's own addresses (equal to hash but for ICMP errors); quotes: an ICMP
// error quoting a packet.
struct FlowHash {
  std::uint32_t hash = 0, own = 0;
  bool quotes = false;
};
FlowHash flow_hash(LinkType link, std::span<const std::byte> frame) noexcept;

}  // namespace flowmark::observe
