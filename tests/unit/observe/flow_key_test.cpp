// The observer's flow hash: the same for both directions of a flow, different when any
// part of the key differs, and spread evenly over a table for addresses and ports as
// regular as a capture's (consecutive clients, a few server ports).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <unordered_set>
#include <vector>

#include "observe/flow_key.hpp"

namespace flowmark::observe::detail {
namespace {

AddrWords v4(std::uint32_t a) {
  AddrWords w;
  w.w0 = a;
  return w;
}
AddrWords v6(std::uint64_t hi, std::uint64_t lo) {
  AddrWords w;
  w.w0 = hi;
  w.w1 = lo;
  return w;
}

TEST(FlowHash, BothDirectionsAlike) {
  const AddrWords a = v4(0x0100000a), b = v4(0x0200000a);
  const AddrWords c = v6(0xb80d0120, 1), d = v6(0xb80d0120, 2);
  for (const auto& [x, y, f] : {std::tuple{a, b, std::uint8_t{0}}, std::tuple{c, d, kKeyV6}}) {
    const PacketKey k = make_key(x, y, 40000, 443, 0, 6, f);
    const PacketKey r = make_key(y, x, 443, 40000, 0, 6, f);
    EXPECT_EQ(k.hash, r.hash);
    EXPECT_EQ(k.tail_fwd, r.tail_rev);
    // The flow's canonical key hashes alike too.
    EXPECT_EQ(hash_key(canonical(k)), k.hash);
    EXPECT_EQ(hash_key(canonical(r)), k.hash);
  }
}

TEST(FlowHash, EveryPartOfTheKeyCounts) {
  const AddrWords a = v4(0x0100000a), b = v4(0x0200000a);
  const std::uint32_t h = make_key(a, b, 40000, 443, 0, 6, 0).hash;
  EXPECT_NE(make_key(v4(0x0300000a), b, 40000, 443, 0, 6, 0).hash, h);
  EXPECT_NE(make_key(a, b, 40001, 443, 0, 6, 0).hash, h);
  EXPECT_NE(make_key(a, b, 40000, 444, 0, 6, 0).hash, h);
  EXPECT_NE(make_key(a, b, 443, 40000, 0, 6, 0).hash, h);  // ports swapped, not the hosts
  EXPECT_NE(make_key(a, b, 40000, 443, 7, 6, 0).hash, h);  // VLAN
  EXPECT_NE(make_key(a, b, 40000, 443, 0, 17, 0).hash, h);
  EXPECT_NE(make_key(a, b, 40000, 443, 0, 6, kKeyPortless).hash, h);
}

// 2^16 flows into 2^16 slots: a uniform hash leaves e^-1 of the slots empty.
TEST(FlowHash, SpreadsRegularKeysEvenly) {
  constexpr std::size_t kFlows = 1 << 16;
  for (const bool ipv6 : {false, true}) {
    std::vector<std::uint32_t> slots(kFlows, 0);
    std::unordered_set<std::uint32_t> distinct;
    for (std::uint32_t i = 0; i < kFlows; ++i) {
      const AddrWords client = ipv6 ? v6(0xb80d0120, i / 4) : v4(0x0a000000 + i / 4);
      const AddrWords server = ipv6 ? v6(0xb80d0120, 0x100 + i % 8) : v4(0xc6336400 + i % 8);
      const auto port = static_cast<std::uint16_t>(20000 + i % 4);
      const std::uint32_t h =
          make_key(client, server, port, 443, 0, 6, ipv6 ? kKeyV6 : std::uint8_t{0}).hash;
      distinct.insert(h);
      ++slots[reduce(h, kFlows)];
    }
    std::size_t empty = 0;
    for (const auto n : slots) empty += n == 0;
    const double expected = kFlows * std::exp(-1.0);
    EXPECT_NEAR(static_cast<double>(empty), expected, expected * 0.03) << "ipv6 " << ipv6;
    EXPECT_GE(distinct.size(), kFlows - 8) << "ipv6 " << ipv6;
  }
}

}  // namespace
}  // namespace flowmark::observe::detail
