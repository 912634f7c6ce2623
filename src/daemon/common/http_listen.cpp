#include "daemon/common/http_listen.hpp"

#include <civetweb.h>
#include <fmt/format.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <system_error>
#include <thread>

#include "flowmark/net/socket.hpp"

namespace flowmark::daemon {

Result<Endpoint> parse_listen(std::string_view text) {
  std::string_view host, port;
  if (text.starts_with('[')) {
    auto close = text.find("]:");
    if (close == std::string_view::npos) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}' is not [IPV6]:PORT (e.g. \"[::1]:9000\")", text));
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}' is not ADDRESS:PORT (e.g. \"127.0.0.1:9000\", "
                              "\"0.0.0.0:9000\", \"[::1]:9000\")",
                              text));
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  auto address = IpAddress::parse(host);
  if (!address) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}': {} (an IP address is needed, not a host name)", text,
                            address.error().message()));
  }
  auto p = parse_port(port, /*allow_zero=*/true);
  if (!p) return fail(Errc::kInvalidArgument, fmt::format("'{}': {}", text, p.error().message()));
  return Endpoint{*address, *p};
}

Result<void> check_civetweb_family(std::string_view where, const Endpoint& e) {
  if (!e.address.is_v6() || mg_check_feature(8) != 0) return {};
  return fail(Errc::kUnsupported,
              fmt::format("{} listen: cannot listen on {}: the installed civetweb was built "
                          "without IPv6 support — listen on an IPv4 address (127.0.0.1 or "
                          "0.0.0.0) or install a civetweb built with IPv6",
                          where, e.to_string()));
}

Error listen_error(std::string_view where, const Endpoint& e, std::string_view otherwise) {
  int err = 0;
  if (auto fd = net::open_tcp_socket(e.address.family()); !fd) {
    err = fd.error().code().value();
  } else {
    // As civetweb does; without it the probe could only be stricter than civetweb's bind.
    [[maybe_unused]] auto reuse = net::set_reuse_address(fd->get());
    if (auto bound = net::bind_to(fd->get(), e); !bound) err = bound.error().code().value();
  }
  const std::string address = e.to_string();
  if (err == 0) {
    return Error(make_error_code(Errc::kRefused),
                 fmt::format("{} listen: cannot listen on {}: {}", where, address, otherwise));
  }
  std::string_view hint;
  if (err == EADDRINUSE) {
    hint = " — another process listens there: stop it or choose another port in `listen`";
  } else if (err == EACCES) {
    hint = " — ports below 1024 need root or CAP_NET_BIND_SERVICE: choose a port >= 1024";
  } else if (err == EADDRNOTAVAIL) {
    hint = " — no interface of this host has that address";
  }
  return Error(std::error_code(err, std::generic_category()),
               fmt::format("{} listen: cannot listen on {}: {}{}", where, address,
                           std::strerror(err), hint));
}

void stop_http_server(mg_context* server, const Endpoint& listen, std::uint16_t port,
                      std::string_view where) noexcept {
  if (!server) return;
  Endpoint knock{listen.address, port};
  if (knock.address.is_unspecified()) {
    knock.address =
        IpAddress::parse(knock.address.is_v4() ? "127.0.0.1" : "::1").value_or(IpAddress());
  }
  std::atomic<bool> stopped{false};
  std::thread waker;
  try {
    waker = std::thread([&] {
      while (!stopped.load() && net::connect_tcp(knock, SOCK_NONBLOCK).has_value()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  } catch (const std::system_error& ex) {
    spdlog::debug("{}: no thread to wake the HTTP server ({}): stopping takes up to 2 s", where,
                  ex.what());
  }
  mg_stop(server);
  stopped = true;
  if (waker.joinable()) waker.join();
}

}  // namespace flowmark::daemon
