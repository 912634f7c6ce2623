// Test helper: a UDP socket on 127.0.0.1 port 0 that waits (with a deadline) for datagrams,
// and sends to an endpoint — the far end of a source or backend under test.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::testing {

class UdpLoopback {
 public:
  UdpLoopback() {
    auto fd = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0});
    if (!fd) return;
    fd_ = std::move(*fd);
    if (auto at = net::local_endpoint(fd_.get())) local_ = *at;
  }
  bool ok() const { return local_.port != 0; }
  const Endpoint& local() const { return local_; }

  // The next datagram, or nullopt after `timeout`.
  std::optional<std::string> receive(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    std::string buf(65536, '\0');
    const auto n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
    if (n < 0) return std::nullopt;
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }

  bool send_to(const Endpoint& to, std::string_view data) {
    sockaddr_storage ss{};
    const auto len = to.to_sockaddr(ss);
    return ::sendto(fd_.get(), data.data(), data.size(), 0, reinterpret_cast<sockaddr*>(&ss),
                    len) == static_cast<ssize_t>(data.size());
  }

 private:
  UniqueFd fd_;
  Endpoint local_;
};

// A UDP port on 127.0.0.1 free at the time of the call (for configs that do not take 0).
inline std::uint16_t free_udp_port() { return UdpLoopback().local().port; }

}  // namespace flowmark::testing
