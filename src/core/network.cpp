#include "flowmark/core/network.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace flowmark {
namespace {

IpAddress masked(const IpAddress& a, unsigned prefix) {
  in6_addr bytes{};
  std::copy_n(a.bytes(), a.size(), bytes.s6_addr);
  for (unsigned i = 0; i < a.size(); ++i) {
    unsigned bits = prefix > i * 8 ? std::min(8u, prefix - i * 8) : 0;
    bytes.s6_addr[i] &= static_cast<std::uint8_t>(bits == 0 ? 0 : 0xFF << (8 - bits));
  }
  if (a.is_v4()) {
    in_addr v4{};
    std::copy_n(bytes.s6_addr, 4, reinterpret_cast<std::uint8_t*>(&v4));
    return IpAddress::v4(v4);
  }
  return IpAddress::v6(bytes);
}

bool in(const IpAddress& a, std::string_view net) {
  auto n = Network::parse(net);
  return n && n->contains(a);
}

}  // namespace

Result<Network> Network::parse(std::string_view text) {
  auto slash = text.find('/');
  FM_TRY(auto addr, IpAddress::parse(text.substr(0, slash)));
  unsigned max = addr.is_v4() ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc{} || p != digits.data() + digits.size() ||
        prefix > max) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}': prefix length must be 0..{}", text, max));
    }
  }
  Network n{masked(addr, prefix), static_cast<std::uint8_t>(prefix)};
  if (!(n.address == addr)) {
    return fail(Errc::kInvalidArgument, fmt::format("'{}' has host bits set: did you mean {}?",
                                                    text, n.to_string()));
  }
  return n;
}

bool Network::contains(const IpAddress& a) const noexcept {
  if (a.family() != address.family()) return false;
  return masked(a, prefix) == address;
}

std::string Network::to_string() const {
  return fmt::format("{}/{}", address.to_string(), prefix);
}

bool any_contains(std::span<const Network> networks, const IpAddress& a) noexcept {
  for (const auto& n : networks) {
    if (n.contains(a)) return true;
  }
  return false;
}

bool is_global(const IpAddress& a) noexcept {
  if (a.is_unspecified() || a.is_loopback() || a.is_multicast()) return false;
  static constexpr std::string_view kV4[] = {
      "0.0.0.0/8",     "10.0.0.0/8",      "100.64.0.0/10",   "127.0.0.0/8",
      "169.254.0.0/16", "172.16.0.0/12",  "192.0.0.0/24",    "192.0.2.0/24",
      "192.168.0.0/16", "198.18.0.0/15",  "198.51.100.0/24", "203.0.113.0/24",
      "240.0.0.0/4"};
  static constexpr std::string_view kV6[] = {"fc00::/7", "fe80::/10", "2001:db8::/32",
                                             "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64"};
  if (a.is_v4()) {
    for (auto n : kV4) {
      if (in(a, n)) return false;
    }
    return true;
  }
  for (auto n : kV6) {
    if (in(a, n)) return false;
  }
  return true;
}

}  // namespace flowmark
