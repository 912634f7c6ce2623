// flowmark::core — IP networks (prefixes) and address classes: the building blocks of
// classification rules, internal-network lists and sender allow-lists.
//
//   FM_TRY(auto net, Network::parse("10.0.0.0/8"));
//   net.contains(*IpAddress::parse("10.1.2.3"));     // true
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark {

struct Network {
  IpAddress address;  // host bits cleared
  std::uint8_t prefix = 0;

  // "10.0.0.0/8", "2001:db8::/32"; a bare address is a host route (/32 or /128). Host bits
  // set after the prefix are an error ("10.0.0.1/8 has host bits set: did you mean
  // 10.0.0.0/8?").
  static Result<Network> parse(std::string_view text);
  bool contains(const IpAddress& a) const noexcept;
  std::string to_string() const;
  friend bool operator==(const Network&, const Network&) = default;
};

bool any_contains(std::span<const Network> networks, const IpAddress& a) noexcept;

}  // namespace flowmark
