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

namespace flowmark::testing {

class UdpLoopback {
 public:
  UdpLoopback() : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    Endpoint at{*IpAddress::parse("127.0.0.1"), 0};
    sockaddr_storage ss{};
    const auto len = at.to_sockaddr(ss);
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0) {
      socklen_t l = sizeof ss;
      ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &l);
      local_ = Endpoint::from_sockaddr(ss);
    }
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
