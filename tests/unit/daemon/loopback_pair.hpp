// Test helper: a listening socket and connected TCP pairs on loopback (port 0).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"

namespace flowmark::testing {

inline Endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  return Endpoint::from_sockaddr(ss);
}

// A listener on 127.0.0.1:0 or [::1]:0; nullopt when the family is not available.
inline std::optional<UniqueFd> listen_loopback(Family f, int backlog = 128) {
  UniqueFd fd(::socket(f == Family::kV4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return std::nullopt;
  Endpoint at{*IpAddress::parse(f == Family::kV4 ? "127.0.0.1" : "::1"), 0};
  sockaddr_storage ss{};
  const auto len = at.to_sockaddr(ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return std::nullopt;
  if (::listen(fd.get(), backlog) != 0) return std::nullopt;
  return fd;
}

struct TcpPair {
  UniqueFd client;
  UniqueFd server;  // the accepted end
  Endpoint client_end;
  Endpoint server_end;
};

inline std::optional<TcpPair> connect_pair(int listener) {
  const Endpoint to = local_of(listener);
  TcpPair p;
  p.client.reset(::socket(to.address.is_v4() ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!p.client) return std::nullopt;
  sockaddr_storage ss{};
  const auto len = to.to_sockaddr(ss);
  if (::connect(p.client.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return std::nullopt;
  p.server.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!p.server) return std::nullopt;
  p.client_end = local_of(p.client.get());
  p.server_end = local_of(p.server.get());
  return p;
}

}  // namespace flowmark::testing
