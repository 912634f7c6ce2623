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
namespace detail {
// (1 << 32) | the hash for the common frames (Ethernet, IPv4 or IPv6 carrying TCP, UDP or
// SCTP), taken without a decode; 0 for the others. A plain integer: a FlowHash returned from
// another translation unit is loaded back by the caller across narrower stores (a failed
// store-to-load forwarding, which waits for the store buffer to drain).
std::uint64_t quick_flow_hash(LinkType link, std::span<const std::byte> frame) noexcept;
// The others, decoded.
FlowHash full_flow_hash(LinkType link, std::span<const std::byte> frame) noexcept;
}  // namespace detail

inline FlowHash flow_hash(LinkType link, std::span<const std::byte> frame) noexcept {
  if (const std::uint64_t q = detail::quick_flow_hash(link, frame); q != 0) [[likely]] {
    const auto h = static_cast<std::uint32_t>(q);
    return {h, h, false};
  }
  return detail::full_flow_hash(link, frame);
}

}  // namespace flowmark::observe
