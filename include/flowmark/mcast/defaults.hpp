// flowmark::mcast — the defaults of the multicast commands (port, TTL, group) and the
// largest payloads. The socket set-up itself (group checks, joins, send options, buffers)
// is flowmark::net's, shared with the firefly sender and listener: net/multicast.hpp and
// net/socket.hpp.
//
//   SenderConfig c{.group = {*IpAddress::parse(kDefaultGroup), kDefaultPort}};
//   if (payload.size() > max_payload(c.group.address.family())) ...
#pragma once

#include <cstddef>
#include <cstdint>

#include "flowmark/core/address.hpp"
#include "flowmark/net/multicast.hpp"

namespace flowmark::mcast {

inline constexpr std::uint16_t kDefaultPort = 59559;
inline constexpr int kDefaultTtl = 1;
inline constexpr const char* kDefaultGroup = "224.0.0.1";
// Largest UDP payload: 65535 - 8 (UDP) - 20 (IPv4). IPv6 allows 65527 without jumbograms.
inline constexpr std::size_t kMaxPayloadV4 = 65507;
inline constexpr std::size_t kMaxPayloadV6 = 65527;

inline std::size_t max_payload(Family f) noexcept {
  return f == Family::kV4 ? kMaxPayloadV4 : kMaxPayloadV6;
}

// The send options of SenderConfig and ReceiverConfig (interface, TTL, loopback), and the
// group check the options resolver applies.
using net::check_group;
using net::SendOptions;

}  // namespace flowmark::mcast
