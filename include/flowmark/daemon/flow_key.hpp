// flowmark::daemon — FlowKey, the service's 5-tuple: protocol and both endpoints of a
// FlowEvent, as the source reported them. The pipeline's live-flow table and each backend's
// own table of the flows it has been told of are keyed by it.
//
//   std::unordered_map<FlowKey, Live, FlowKeyHash> flows;
//   flows.try_emplace(key_of(event), ...);
//   std::map<FlowKey, Series> ordered;   // FlowKey is ordered too (protocol, src, dst)
//
// Not the observer's packet key (src/observe/flow_key.hpp): that one is canonical (both
// directions are one flow), packed for the per-packet hash table, and lives on the hot path.
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "flowmark/core/address.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::daemon {

struct FlowKey {
  scitags::Protocol protocol = scitags::Protocol::kTcp;
  Endpoint src, dst;
  friend bool operator==(const FlowKey&, const FlowKey&) = default;
  friend auto operator<=>(const FlowKey&, const FlowKey&) = default;
};

inline FlowKey key_of(const scitags::FlowEvent& e) noexcept { return {e.protocol, e.src, e.dst}; }

struct FlowKeyHash {
  // Word-wise multiply-xorshift over everything operator== compares (both addresses' 16
  // bytes, the ports, protocol and family). It was byte-wise FNV-1a: 6.5 % of flowmarkd's
  // CPU on the pipe -> firefly benchmark, one multiply per byte.
  std::size_t operator()(const FlowKey& k) const noexcept {
    auto word = [](const IpAddress& a, std::size_t i) {
      std::uint64_t w;
      std::memcpy(&w, a.bytes() + 8 * i, 8);  // bytes() is always 16 bytes long
      return w;
    };
    auto mix = [](std::uint64_t h) {
      h *= 0x9E3779B97F4A7C15ULL;
      return h ^ (h >> 32);
    };
    std::uint64_t h = static_cast<std::uint64_t>(k.protocol) |
                      static_cast<std::uint64_t>(k.src.port) << 8 |
                      static_cast<std::uint64_t>(k.dst.port) << 24 |
                      static_cast<std::uint64_t>(k.src.address.family()) << 40 |
                      static_cast<std::uint64_t>(k.dst.address.family()) << 48;
    h = mix(h ^ word(k.src.address, 0));
    h = mix(h ^ word(k.src.address, 1));
    h = mix(h ^ word(k.dst.address, 0));
    h = mix(h ^ word(k.dst.address, 1));
    return static_cast<std::size_t>(h);
  }
};

}  // namespace flowmark::daemon
