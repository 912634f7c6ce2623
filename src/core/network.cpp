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

}  // namespace

Result<Network> Network::parse(std::string_view text) {
  auto slash = text.find('/');
  FM_TRY(auto addr, IpAddress::parse(text.substr(0, slash)));
  unsigned max = addr.is_v4() ? 32 : 128;
  unsigned prefix = max;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (digits.empty() || ec != std::errc{} || p != digits.data() + digits.size() || prefix > max) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("'{}': prefix length must be 0..{}", text, max));
    }
  }
  Network n{masked(addr, prefix), static_cast<std::uint8_t>(prefix)};
  if (!(n.address == addr)) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}' has host bits set: did you mean {}?", text, n.to_string()));
  }
  return n;
}

bool Network::contains(const IpAddress& a) const noexcept {
  if (a.family() != address.family()) return false;
  return masked(a, prefix) == address;
}

std::string Network::to_string() const { return fmt::format("{}/{}", address.to_string(), prefix); }

bool any_contains(std::span<const Network> networks, const IpAddress& a) noexcept {
  for (const auto& n : networks) {
    if (n.contains(a)) return true;
  }
  return false;
}

}  // namespace flowmark
