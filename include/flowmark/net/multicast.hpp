// flowmark::net — multicast socket set-up shared by the mcast commands and the firefly
// sender and listener: group checks, send options (TTL, loopback, interface), any-source
// and source-specific joins, and a receiving socket joined to its groups.
//
// Everything validates first and then applies: a unicast address given as a group, a
// link-scoped IPv6 group without an interface or a TTL out of range is an
// Errc::kInvalidArgument naming the value; a join the kernel refuses is Errc::kRefused with
// the kernel's reason and what to try.
//
//   FM_TRY(auto s, open_group_socket({.groups = {g}, .port = 10514, .rcvbuf = 32 << 20}));
//   DatagramReader reader(65536, 64);
//   FM_TRY(auto batch, reader.read(s.fd.get()));   // each datagram says its group
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::net {

// What a socket that sends to a group needs to know.
struct SendOptions {
  std::optional<Interface> iface;  // outgoing interface; none = the route decides
  int ttl = 1;                     // TTL / hop limit, 0..255
  bool loop = true;                // deliver to receivers on this host too
};

// Checks that `group` is a multicast address usable with `iface` (link-scoped IPv6
// groups need an interface, given or as the address's scope).
Result<void> check_group(const IpAddress& group, const std::optional<Interface>& iface);
Result<void> check_ttl(int ttl);

// TTL / hop limit, loopback and outgoing interface for multicast sends.
Result<void> apply_send_options(int fd, Family family, const SendOptions& o);
// Joins (any-source) or (source, group) on iface (index 0: the kernel picks by route or by
// the group's scope). Turns IP(V6)_MULTICAST_ALL off first: only the groups joined on this
// socket are delivered to it.
Result<void> join_group(int fd, const IpAddress& group, const IpAddress* source,
                        std::uint32_t ifindex);

struct GroupSocketConfig {
  std::vector<IpAddress> groups;   // every group to join (one address family)
  std::vector<IpAddress> sources;  // if any: join (S, G) for each source and group
  std::uint16_t port = 0;          // 0: an ephemeral port (see GroupSocket::port)
  std::optional<Interface> iface;  // join on this interface (none: by route / scope)
  std::optional<IpAddress> bind;   // local bind address (default: the wildcard)
  int rcvbuf = 0;                  // SO_RCVBUF in bytes (0: kernel default)
};

struct GroupSocket {
  UniqueFd fd;
  std::uint16_t port = 0;  // the bound port
  Family family = Family::kV4;
};

// One UDP socket for all the groups of one family: SO_REUSEADDR (several receivers on one
// host may share the group and port), packet info and timestamps on, the receive buffer,
// bound to the port, joined to every group.
Result<GroupSocket> open_group_socket(const GroupSocketConfig& config);

}  // namespace flowmark::net
