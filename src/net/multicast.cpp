#include "flowmark/net/multicast.hpp"

#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include <fmt/format.h>

#include "flowmark/net/socket.hpp"

#ifndef IPV6_MULTICAST_ALL
#define IPV6_MULTICAST_ALL 29
#endif

namespace flowmark::net {
Result<void> check_group(const IpAddress& group, const std::optional<Interface>& iface) {
  if (!group.is_multicast())
    return fail(Errc::kInvalidArgument,
                fmt::format("{} is not a multicast group (use 224.0.0.0/4 or ff00::/8)",
                            group.to_string()));
  if (group.is_link_scoped_multicast() && !iface && group.scope_id() == 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("{} is a link-scoped IPv6 group: name the interface with --iface "
                            "or as {}%IFACE",
                            group.to_string(), group.to_string()));
  return {};
}

Result<void> check_ttl(int ttl) {
  if (ttl < 0 || ttl > 255)
    return fail(Errc::kInvalidArgument, fmt::format("TTL {} is out of range (0..255)", ttl));
  return {};
}

Result<void> apply_send_options(int fd, Family family, const SendOptions& o) {
  FM_TRY_VOID(check_ttl(o.ttl));
  if (family == Family::kV4) {
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IP, IP_MULTICAST_TTL, o.ttl, "IP_MULTICAST_TTL"));
    FM_TRY_VOID(
        set_int_option(fd, IPPROTO_IP, IP_MULTICAST_LOOP, o.loop ? 1 : 0, "IP_MULTICAST_LOOP"));
    if (o.iface) {
      ip_mreqn req{};
      req.imr_ifindex = static_cast<int>(o.iface->index);
      if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &req, sizeof req) != 0)
        return fail_errno(fmt::format("cannot send multicast on {}", o.iface->name));
    }
  } else {
    FM_TRY_VOID(
        set_int_option(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, o.ttl, "IPV6_MULTICAST_HOPS"));
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, o.loop ? 1 : 0,
                               "IPV6_MULTICAST_LOOP"));
    if (o.iface) {
      auto index = static_cast<int>(o.iface->index);
      if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &index, sizeof index) != 0)
        return fail_errno(fmt::format("cannot send multicast on {}", o.iface->name));
    }
  }
  return {};
}

Result<void> join_group(int fd, const IpAddress& group, const IpAddress* source,
                        std::uint32_t ifindex) {
  const int level = group.is_v4() ? IPPROTO_IP : IPPROTO_IPV6;
  // Only the groups joined on this socket are delivered to it (Linux default: all groups
  // joined by any socket on the host, for a socket bound to the wildcard address).
  if (group.is_v4()) {
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IP, IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL"));
  } else {
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0, "IPV6_MULTICAST_ALL"));
  }
  if (ifindex == 0) ifindex = group.scope_id();
  int rc = 0;
  const char* op = nullptr;
  if (source == nullptr) {
    group_req req{};
    req.gr_interface = ifindex;
    Endpoint{group, 0}.to_sockaddr(req.gr_group);
    rc = setsockopt(fd, level, MCAST_JOIN_GROUP, &req, sizeof req);
    op = "MCAST_JOIN_GROUP";
  } else {
    if (source->family() != group.family())
      return fail(Errc::kInvalidArgument,
                  fmt::format("source {} and group {} are of different address families",
                              source->to_string(), group.to_string()));
    group_source_req req{};
    req.gsr_interface = ifindex;
    Endpoint{group, 0}.to_sockaddr(req.gsr_group);
    Endpoint{*source, 0}.to_sockaddr(req.gsr_source);
    rc = setsockopt(fd, level, MCAST_JOIN_SOURCE_GROUP, &req, sizeof req);
    op = "MCAST_JOIN_SOURCE_GROUP";
  }
  if (rc == 0) return {};
  const int err = errno;
  std::string what = source == nullptr ? fmt::format("cannot join {}", group.to_string())
                                       : fmt::format("cannot join ({}, {})", source->to_string(),
                                                     group.to_string());
  char name[IF_NAMESIZE];
  if (ifindex != 0 && if_indextoname(ifindex, name) != nullptr) what += fmt::format(" on {}", name);
  std::string hint;
  switch (err) {
    case ENODEV:
      hint = ifindex == 0 ? " — no route to the group; name an interface with --iface or add "
                            "one (ip route add 224.0.0.0/4 dev IFACE)"
                          : " — the interface cannot do multicast (ip link set IFACE "
                            "multicast on)";
      break;
    case EADDRINUSE: hint = " — already joined on this socket"; break;
    case ENOBUFS: hint = " — too many memberships (raise net.ipv4.igmp_max_memberships)"; break;
    case EPERM:
    case EACCES: hint = " — not permitted"; break;
    default: break;
  }
  return fail(Errc::kRefused, fmt::format("{}: {} ({}){}", what, std::strerror(err), op, hint));
}

Result<GroupSocket> open_group_socket(const GroupSocketConfig& config) {
  if (config.groups.empty()) return fail(Errc::kInvalidArgument, "no group to join");
  const Family family = config.groups.front().family();
  for (const auto& g : config.groups) {
    if (g.family() != family)
      return fail(Errc::kInvalidArgument,
                  fmt::format("groups {} and {} are of different address families; run one "
                              "receiver per family",
                              config.groups.front().to_string(), g.to_string()));
    FM_TRY_VOID(check_group(g, config.iface));
  }
  for (const auto& s : config.sources) {
    if (s.family() != family || s.is_multicast() || s.is_unspecified())
      return fail(
          Errc::kInvalidArgument,
          fmt::format("source {} must be a unicast address of the groups' family", s.to_string()));
  }
  if (config.bind && config.bind->family() != family)
    return fail(Errc::kInvalidArgument, fmt::format("bind address {} is not of the groups' family",
                                                    config.bind->to_string()));
  GroupSocket out;
  out.family = family;
  FM_TRY(out.fd, open_udp_socket(family));
  const int fd = out.fd.get();
  FM_TRY_VOID(set_reuse_address(fd));
  FM_TRY_VOID(enable_packet_info(fd, family));
  FM_TRY_VOID(set_receive_buffer(fd, config.rcvbuf));
  FM_TRY_VOID(bind_to(fd, {config.bind.value_or(IpAddress::any(family)), config.port}));
  FM_TRY(const Endpoint local, local_endpoint(fd));
  out.port = local.port;
  const std::uint32_t ifindex = config.iface ? config.iface->index : 0;
  for (const auto& g : config.groups) {
    if (config.sources.empty()) {
      FM_TRY_VOID(join_group(fd, g, nullptr, ifindex));
    } else {
      for (const auto& s : config.sources) FM_TRY_VOID(join_group(fd, g, &s, ifindex));
    }
  }
  return out;
}

}  // namespace flowmark::net
