#include "flowmark/net/socket.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

#include <fmt/format.h>

namespace flowmark::net {
namespace {

Result<UniqueFd> open_socket(Family family, int type, int protocol) {
  const int domain = family == Family::kV4 ? AF_INET : AF_INET6;
  UniqueFd fd(::socket(domain, type | SOCK_CLOEXEC, protocol));
  if (!fd)
    return fail_errno(
        fmt::format("cannot create a {} socket", protocol == IPPROTO_UDP ? "UDP" : "TCP"));
  if (family == Family::kV6) {
    int one = 1;
    if (setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
      return fail_errno("setsockopt(IPV6_V6ONLY)");
  }
  return fd;
}

// bind_to + listen, with "cannot listen on <local>" errors.
Result<void> listen_on(int fd, const Endpoint& local, int backlog) {
  FM_TRY_VOID(bind_to(fd, local, "cannot listen on"));
  if (::listen(fd, backlog) != 0)
    return fail_errno(fmt::format("cannot listen on {}", local.to_string()));
  return {};
}

}  // namespace

Result<void> set_int_option(int fd, int level, int name, int value, const char* what) {
  if (setsockopt(fd, level, name, &value, sizeof value) != 0)
    return fail_errno(fmt::format("setsockopt({}, {})", what, value));
  return {};
}

Result<UniqueFd> open_udp_socket(Family family, int flags) {
  return open_socket(family, SOCK_DGRAM | flags, IPPROTO_UDP);
}

Result<UniqueFd> open_tcp_socket(Family family, int flags) {
  return open_socket(family, SOCK_STREAM | flags, IPPROTO_TCP);
}

Result<void> bind_to(int fd, const Endpoint& local, std::string_view doing,
                     std::string_view in_use_hint) {
  sockaddr_storage ss{};
  const socklen_t len = local.to_sockaddr(ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) == 0) return {};
  const int err = errno;
  std::string hint;
  switch (err) {
    case EADDRINUSE: hint = fmt::format(" — {}", in_use_hint); break;
    case EADDRNOTAVAIL: hint = " — not a local address"; break;
    case EACCES: hint = " — ports below 1024 need root or CAP_NET_BIND_SERVICE"; break;
    default: break;
  }
  return std::unexpected(
      Error(std::error_code(err, std::system_category()),
            fmt::format("{} {}: {}{}", doing, local.to_string(), std::strerror(err), hint)));
}

Result<Endpoint> local_endpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
    return fail_errno("getsockname");
  return Endpoint::from_sockaddr(ss);
}

Result<UniqueFd> bind_udp(const Endpoint& local, int flags) {
  FM_TRY(UniqueFd fd, open_udp_socket(local.address.family(), flags));
  FM_TRY_VOID(bind_to(fd.get(), local));
  return fd;
}

Result<UniqueFd> listen_tcp(const Endpoint& local, int backlog) {
  FM_TRY(UniqueFd fd, open_tcp_socket(local.address.family()));
  FM_TRY_VOID(listen_on(fd.get(), local, backlog));
  return fd;
}

Result<UniqueFd> listen_tcp_dual_stack(std::uint16_t port, int backlog) {
  const Endpoint local{IpAddress::any(Family::kV6), port};
  FM_TRY(UniqueFd fd, open_tcp_socket(Family::kV6));
  FM_TRY_VOID(set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0, "IPV6_V6ONLY"));
  FM_TRY_VOID(listen_on(fd.get(), local, backlog));
  return fd;
}

Result<void> connect_to(int fd, const Endpoint& to) {
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EINPROGRESS)
    return fail_errno(fmt::format("cannot connect to {}", to.to_string()));
  return {};
}

Result<UniqueFd> connect_tcp(const Endpoint& to, int flags) {
  FM_TRY(UniqueFd fd, open_tcp_socket(to.address.family(), flags));
  FM_TRY_VOID(connect_to(fd.get(), to));
  return fd;
}

Result<void> set_reuse_address(int fd) {
  return set_int_option(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
}

Result<void> set_reuse_port(int fd) {
  return set_int_option(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
}

Result<void> set_receive_buffer(int fd, int bytes) {
  if (bytes <= 0) return {};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) == 0) return {};
  return set_int_option(fd, SOL_SOCKET, SO_RCVBUF, bytes, "SO_RCVBUF");
}

Result<void> set_send_buffer(int fd, int bytes) {
  if (bytes <= 0) return {};
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) == 0) return {};
  return set_int_option(fd, SOL_SOCKET, SO_SNDBUF, bytes, "SO_SNDBUF");
}

Result<void> enable_packet_info(int fd, Family family) {
  if (family == Family::kV4) {
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IP, IP_PKTINFO, 1, "IP_PKTINFO"));
  } else {
    FM_TRY_VOID(set_int_option(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO"));
  }
  return set_int_option(fd, SOL_SOCKET, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
}

}  // namespace flowmark::net
