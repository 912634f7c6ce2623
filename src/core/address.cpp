#include "flowmark/core/address.hpp"

#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <fmt/format.h>

namespace flowmark {

IpAddress IpAddress::v4(std::uint32_t host_order) {
  IpAddress a;
  a.family_ = Family::kV4;
  a.bytes_[0] = static_cast<std::uint8_t>(host_order >> 24);
  a.bytes_[1] = static_cast<std::uint8_t>(host_order >> 16);
  a.bytes_[2] = static_cast<std::uint8_t>(host_order >> 8);
  a.bytes_[3] = static_cast<std::uint8_t>(host_order);
  return a;
}

IpAddress IpAddress::v4(const in_addr& in) {
  IpAddress a;
  a.family_ = Family::kV4;
  std::memcpy(a.bytes_.data(), &in, 4);
  return a;
}

IpAddress IpAddress::v6(const in6_addr& in, std::uint32_t scope_id) {
  IpAddress a;
  a.family_ = Family::kV6;
  std::memcpy(a.bytes_.data(), &in, 16);
  a.scope_id_ = scope_id;
  return a;
}

IpAddress IpAddress::any(Family f) {
  IpAddress a;
  a.family_ = f;
  return a;
}

namespace {

// Dotted-quad IPv4 as glibc's inet_pton(AF_INET) accepts it — four decimal octets 0..255
// without leading zeros, nothing else — into host order; false for anything else (inet_pton
// then decides, and says why). No NUL-terminated copy, no libc call: the named pipe parses two
// addresses a line.
bool parse_dotted_quad(std::string_view text, std::uint32_t& out) noexcept {
  if (text.size() < 7 || text.size() > 15) return false;
  const char* p = text.data();
  const char* const end = p + text.size();
  // The digit at q, or 10 and more for anything else (or the end).
  auto digit = [&](const char* q) -> unsigned {
    return q == end ? 10u : static_cast<unsigned>(static_cast<unsigned char>(*q)) - '0';
  };
  std::uint32_t v = 0;
  for (int octet = 0; octet < 4; ++octet) {
    if (octet > 0) {
      if (p == end || *p != '.') return false;
      ++p;
    }
    unsigned n = digit(p);
    if (n > 9) return false;
    ++p;
    if (unsigned d = digit(p); d <= 9) {
      if (n == 0) return false;  // a leading zero
      n = n * 10 + d;
      ++p;
      if (d = digit(p); d <= 9) {
        n = n * 10 + d;
        ++p;
        if (n > 255 || digit(p) <= 9) return false;
      }
    }
    v = v << 8 | n;
  }
  if (p != end) return false;
  out = v;
  return true;
}

}  // namespace

Result<IpAddress> IpAddress::parse(std::string_view text) {
  if (std::uint32_t host = 0; parse_dotted_quad(text, host)) return v4(host);
  if (text.empty()) return fail(Errc::kInvalidArgument, "empty address");
  if (text.size() > INET6_ADDRSTRLEN + IF_NAMESIZE)
    return fail(Errc::kInvalidArgument, fmt::format("'{}' is too long for an IP address", text));
  std::string_view scope;
  if (auto pct = text.find('%'); pct != std::string_view::npos) {
    scope = text.substr(pct + 1);
    text = text.substr(0, pct);
    if (scope.empty())
      return fail(Errc::kInvalidArgument, fmt::format("'{}%': empty scope after '%'", text));
  }
  if (text.size() > INET6_ADDRSTRLEN)
    return fail(Errc::kInvalidArgument, fmt::format("'{}' is too long for an IP address", text));
  char buf[INET6_ADDRSTRLEN + 1];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  if (text.find(':') == std::string_view::npos) {
    in_addr in{};
    if (inet_pton(AF_INET, buf, &in) != 1)
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}' is not an IPv4 address (expected a.b.c.d)", text));
    if (!scope.empty())
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}%{}': a scope is only valid on IPv6 addresses", text, scope));
    return v4(in);
  }
  in6_addr in6{};
  if (inet_pton(AF_INET6, buf, &in6) != 1)
    return fail(Errc::kInvalidArgument, fmt::format("'{}' is not an IPv6 address", text));
  std::uint32_t scope_id = 0;
  if (!scope.empty()) {
    auto [p, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), scope_id);
    if (ec != std::errc() || p != scope.data() + scope.size()) {
      std::string name(scope);
      scope_id = if_nametoindex(name.c_str());
      if (scope_id == 0)
        return fail(Errc::kNotFound,
                    fmt::format("'{}%{}': no interface named '{}'", text, scope, scope));
    }
  }
  return v6(in6, scope_id);
}

in_addr IpAddress::in4() const noexcept {
  in_addr in{};
  std::memcpy(&in, bytes_.data(), 4);
  return in;
}

in6_addr IpAddress::in6() const noexcept {
  in6_addr in{};
  std::memcpy(&in, bytes_.data(), 16);
  return in;
}

bool IpAddress::is_unspecified() const noexcept {
  for (std::size_t i = 0; i < size(); ++i)
    if (bytes_[i] != 0) return false;
  return true;
}

bool IpAddress::is_loopback() const noexcept {
  if (is_v4()) return bytes_[0] == 127;
  for (int i = 0; i < 15; ++i)
    if (bytes_[i] != 0) return false;
  return bytes_[15] == 1;
}

bool IpAddress::is_global() const noexcept {
  if (is_unspecified() || is_loopback() || is_multicast()) return false;
  const auto b0 = bytes_[0], b1 = bytes_[1];
  if (is_v4()) {
    return !(b0 == 0 || b0 == 10 || b0 >= 240 ||  // this network, private, reserved
             (b0 == 100 && (b1 & 0xc0) == 64) ||  // 100.64.0.0/10 (CGNAT)
             (b0 == 169 && b1 == 254) ||          // 169.254.0.0/16 (link-local)
             (b0 == 172 && (b1 & 0xf0) == 16) ||  // 172.16.0.0/12
             (b0 == 192 && b1 == 168));           // 192.168.0.0/16
  }
  if ((b0 & 0xfe) == 0xfc) return false;                // fc00::/7 (unique local)
  if (b0 == 0xfe && (b1 & 0xc0) == 0x80) return false;  // fe80::/10 (link-local)
  // ::ffff:a.b.c.d: the IPv4 address decides.
  static constexpr std::array<std::uint8_t, 12> kMapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::equal(kMapped.begin(), kMapped.end(), bytes_.begin())) {
    return IpAddress::v4(static_cast<std::uint32_t>(bytes_[12]) << 24 |
                         static_cast<std::uint32_t>(bytes_[13]) << 16 |
                         static_cast<std::uint32_t>(bytes_[14]) << 8 | bytes_[15])
        .is_global();
  }
  return true;
}

bool IpAddress::is_multicast() const noexcept {
  return is_v4() ? (bytes_[0] & 0xf0) == 0xe0 : bytes_[0] == 0xff;
}

bool IpAddress::is_link_scoped_multicast() const noexcept {
  if (!is_v6() || bytes_[0] != 0xff) return false;
  const int scope = bytes_[1] & 0x0f;
  return scope == 1 || scope == 2;
}

bool IpAddress::is_ssm() const noexcept {
  if (is_v4()) return bytes_[0] == 232;
  // ff3x::/32 — flags P and T set (0x3), prefix length 0, network prefix 0.
  return bytes_[0] == 0xff && (bytes_[1] & 0xf0) == 0x30 && bytes_[2] == 0 && bytes_[3] == 0;
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
  return buf;
}

std::string IpAddress::to_string_scoped() const {
  if (!is_v6() || scope_id_ == 0) return to_string();
  char name[IF_NAMESIZE];
  if (if_indextoname(scope_id_, name) != nullptr) return fmt::format("{}%{}", to_string(), name);
  return fmt::format("{}%{}", to_string(), scope_id_);
}

Result<std::uint16_t> parse_port(std::string_view text, bool allow_zero) {
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size())
    return fail(Errc::kInvalidArgument, fmt::format("port '{}' is not a number", text));
  if (v > 65535 || (v == 0 && !allow_zero))
    return fail(Errc::kInvalidArgument,
                fmt::format("port {} is out of range ({}..65535)", text, allow_zero ? 0 : 1));
  return static_cast<std::uint16_t>(v);
}

Result<Endpoint> Endpoint::parse(std::string_view text, int default_port) {
  std::string_view host = text;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos)
      return fail(Errc::kInvalidArgument, fmt::format("'{}': missing ']'", text));
    host = text.substr(1, close - 1);
    auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return fail(Errc::kInvalidArgument, fmt::format("'{}': expected ':' after ']'", text));
      port = rest.substr(1);
    }
  } else if (auto colon = text.rfind(':');
             colon != std::string_view::npos && text.find(':') == colon) {
    host = text.substr(0, colon);  // exactly one ':' — IPv4 with a port
    port = text.substr(colon + 1);
  }
  FM_TRY(auto addr, IpAddress::parse(host));
  Endpoint e{addr, 0};
  if (port.empty()) {
    if (default_port < 0)
      return fail(Errc::kInvalidArgument, fmt::format("'{}': a port is required", text));
    e.port = static_cast<std::uint16_t>(default_port);
  } else {
    FM_TRY(e.port, parse_port(port));
  }
  return e;
}

Endpoint Endpoint::from_sockaddr(const sockaddr* sa) noexcept {
  if (sa->sa_family == AF_INET) {
    const auto* s4 = reinterpret_cast<const sockaddr_in*>(sa);
    return {IpAddress::v4(s4->sin_addr), ntohs(s4->sin_port)};
  }
  const auto* s6 = reinterpret_cast<const sockaddr_in6*>(sa);
  return {IpAddress::v6(s6->sin6_addr, s6->sin6_scope_id), ntohs(s6->sin6_port)};
}

Endpoint Endpoint::from_sockaddr(const sockaddr_storage& ss) noexcept {
  return from_sockaddr(reinterpret_cast<const sockaddr*>(&ss));
}

socklen_t Endpoint::to_sockaddr(sockaddr_storage& ss) const noexcept {
  std::memset(&ss, 0, sizeof ss);
  if (address.is_v4()) {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    s4->sin_addr = address.in4();
    return sizeof(sockaddr_in);
  }
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  s6->sin6_family = AF_INET6;
  s6->sin6_port = htons(port);
  s6->sin6_addr = address.in6();
  s6->sin6_scope_id = address.scope_id();
  return sizeof(sockaddr_in6);
}

std::string Endpoint::to_string() const {
  if (address.is_v6()) return fmt::format("[{}]:{}", address.to_string_scoped(), port);
  return fmt::format("{}:{}", address.to_string(), port);
}

}  // namespace flowmark
