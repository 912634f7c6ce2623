#include "flowmark/net/resolve.hpp"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>

#include <fmt/format.h>

namespace flowmark::net {
namespace {

bool looks_like_address(std::string_view host) noexcept {
  if (host.find(':') != std::string_view::npos) return true;
  return std::all_of(host.begin(), host.end(),
                     [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

}  // namespace

Result<Endpoint> resolve_endpoint(std::string_view text, std::uint16_t default_port) {
  auto literal = Endpoint::parse(text, default_port);
  if (literal) return *literal;
  std::string_view host = text;
  std::string_view port;
  if (auto colon = text.rfind(':'); colon != std::string_view::npos && text.find(':') == colon) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty() || text.front() == '[' || looks_like_address(host))
    return std::unexpected(std::move(literal.error()));
  std::uint16_t p = default_port;
  if (!port.empty()) {
    FM_TRY(p, parse_port(port));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* res = nullptr;
  const std::string name(host);
  if (int rc = getaddrinfo(name.c_str(), nullptr, &hints, &res); rc != 0 || res == nullptr)
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}' is neither an address nor a host name that "
                            "resolves: {}",
                            name, gai_strerror(rc)));
  Endpoint e = Endpoint::from_sockaddr(res->ai_addr);
  freeaddrinfo(res);
  e.port = p;
  return e;
}

}  // namespace flowmark::net
