// flowmark::mcast — the socket set-up shared by senders and receivers.
//
// Everything here validates first and then applies: a unicast address given as a group,
// a link-scoped IPv6 group without an interface or a TTL out of range is an
// Errc::kInvalidArgument naming the value; a join the kernel refuses is Errc::kRefused
// with the kernel's reason and what to try.
#pragma once

#include <cstdint>
#include <optional>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/result.hpp"

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

// What a socket that sends to a group needs to know.
struct SendOptions {
  std::optional<Interface> iface;  // outgoing interface; none = the route decides
  int ttl = kDefaultTtl;           // TTL / hop limit, 0..255
  bool loop = true;                // deliver to receivers on this host too
};

// Checks that `group` is a multicast address usable with `iface` (link-scoped IPv6
// groups need an interface, given or as the address's scope).
Result<void> check_group(const IpAddress& group, const std::optional<Interface>& iface);
Result<void> check_ttl(int ttl);

// A UDP socket of the group's family (IPv6 sockets are IPv6-only), close-on-exec.
Result<UniqueFd> open_udp_socket(Family family);
// TTL / hop limit, loopback and outgoing interface for multicast sends.
Result<void> apply_send_options(int fd, Family family, const SendOptions& o);
// Joins (any-source) or (source, group) on iface (index 0: the kernel picks by route).
Result<void> join_group(int fd, const IpAddress& group, const IpAddress* source,
                        std::uint32_t ifindex);
// Sets SO_RCVBUF (SO_RCVBUFFORCE when privileged, so the limit is not rmem_max).
Result<void> set_receive_buffer(int fd, int bytes);
Result<void> set_send_buffer(int fd, int bytes);

}  // namespace flowmark::mcast
