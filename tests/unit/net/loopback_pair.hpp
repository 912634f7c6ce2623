// Test helper: a listening socket and connected TCP pairs on loopback (port 0), on the
// shared socket set-up of flowmark::net.
#pragma once

#include <sys/socket.h>

#include <optional>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::testing {

inline Endpoint local_of(int fd) { return net::local_endpoint(fd).value_or(Endpoint{}); }

// A listener on 127.0.0.1:0 or [::1]:0; nullopt when the family is not available.
inline std::optional<UniqueFd> listen_loopback(Family f, int backlog = 128) {
  auto fd =
      net::listen_tcp({*IpAddress::parse(f == Family::kV4 ? "127.0.0.1" : "::1"), 0}, backlog);
  if (!fd) return std::nullopt;
  return std::move(*fd);
}

struct TcpPair {
  UniqueFd client;
  UniqueFd server;  // the accepted end
  Endpoint client_end;
  Endpoint server_end;
};

inline std::optional<TcpPair> connect_pair(int listener) {
  TcpPair p;
  auto client = net::connect_tcp(local_of(listener));
  if (!client) return std::nullopt;
  p.client = std::move(*client);
  p.server.reset(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!p.server) return std::nullopt;
  p.client_end = local_of(p.client.get());
  p.server_end = local_of(p.server.get());
  return p;
}

}  // namespace flowmark::testing
