// flowmark::core — IPv4/IPv6 addresses and endpoints.
//
// IpAddress is a small value type (family, 16 bytes, IPv6 scope id) that converts to and
// from text and sockaddr without allocating; Endpoint adds a port.
//
//   auto g = IpAddress::parse("ff02::1234%eth0");   // scope by interface name or index
//   if (g && g->is_multicast()) { ... }
//   auto e = Endpoint::parse("[2001:db8::1]:10514"); // or "192.0.2.1:10514"
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "flowmark/core/result.hpp"

namespace flowmark {

enum class Family : std::uint8_t { kV4 = 4, kV6 = 6 };

class IpAddress {
 public:
  IpAddress() = default;  // 0.0.0.0
  static IpAddress v4(std::uint32_t host_order);
  static IpAddress v4(const in_addr& a);
  static IpAddress v6(const in6_addr& a, std::uint32_t scope_id = 0);
  static IpAddress any(Family f);

  // Parses dotted-quad IPv4 or RFC 4291 IPv6 text, with an optional "%scope" where the
  // scope is an interface name or index. The error says what was wrong with the text.
  static Result<IpAddress> parse(std::string_view text);

  Family family() const noexcept { return family_; }
  bool is_v4() const noexcept { return family_ == Family::kV4; }
  bool is_v6() const noexcept { return family_ == Family::kV6; }
  std::uint32_t scope_id() const noexcept { return scope_id_; }
  void set_scope_id(std::uint32_t s) noexcept { scope_id_ = s; }
  // The IPv4 address in network order (only meaningful for is_v4()).
  in_addr in4() const noexcept;
  in6_addr in6() const noexcept;
  // Network-order bytes: 4 for IPv4, 16 for IPv6.
  const std::uint8_t* bytes() const noexcept { return bytes_.data(); }
  std::size_t size() const noexcept { return is_v4() ? 4 : 16; }

  bool is_unspecified() const noexcept;
  bool is_loopback() const noexcept;
  bool is_multicast() const noexcept;
  // Groups whose scope is one link or one interface (ff01::/16, ff02::/16): a join or a
  // send needs an interface.
  bool is_link_scoped_multicast() const noexcept;
  // Source-specific multicast ranges: 232.0.0.0/8 and ff3x::/32.
  bool is_ssm() const noexcept;
  // An address others reach us at: none of unspecified, loopback, multicast, link-local
  // (169.254/16, fe80::/10), private (10/8, 172.16/12, 192.168/16), shared CGNAT space
  // (100.64/10), unique-local (fc00::/7), 0/8, 240/4 and broadcast. The documentation
  // prefixes count as global: labs and tests use them as stand-ins for public addresses.
  // The service asks STUN for its public address when its own is not global.
  bool is_global() const noexcept;

  // Text without the scope ("ff02::1").
  std::string to_string() const;
  // Text with "%scope" (interface name when known) for IPv6 link-scoped addresses.
  std::string to_string_scoped() const;

  friend bool operator==(const IpAddress& a, const IpAddress& b) noexcept {
    return a.family_ == b.family_ && a.bytes_ == b.bytes_;
  }
  friend auto operator<=>(const IpAddress& a, const IpAddress& b) noexcept {
    if (auto c = a.family_ <=> b.family_; c != 0) return c;
    return a.bytes_ <=> b.bytes_;
  }

 private:
  std::array<std::uint8_t, 16> bytes_{};
  std::uint32_t scope_id_ = 0;
  Family family_ = Family::kV4;
};

struct Endpoint {
  IpAddress address;
  std::uint16_t port = 0;

  // "192.0.2.1:80", "[2001:db8::1]:80", "[fe80::1%eth0]:80". With default_port set, the
  // port may be left out ("192.0.2.1", "2001:db8::1").
  static Result<Endpoint> parse(std::string_view text, int default_port = -1);
  static Endpoint from_sockaddr(const sockaddr_storage& ss) noexcept;
  static Endpoint from_sockaddr(const sockaddr* sa) noexcept;
  // Fills ss; returns the length to pass to bind/connect/sendto.
  socklen_t to_sockaddr(sockaddr_storage& ss) const noexcept;
  std::string to_string() const;

  friend bool operator==(const Endpoint&, const Endpoint&) = default;
  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
};

// Parses a port: a decimal integer in 1..65535 (0 too when allow_zero).
Result<std::uint16_t> parse_port(std::string_view text, bool allow_zero = false);

}  // namespace flowmark
