// The observer's fast path (quick_decode) against the full decoder: it takes the common
// frames, declines the rest, and where it takes a frame its key, IP length and TCP flags are
// the full path's — for crafted frames, every truncation of them and random corruptions.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "observe/quick_decode.hpp"
#include "../testing/bytes.hpp"

namespace flowmark::observe::detail {
namespace {

using flowmark::testing::Bytes;
using flowmark::testing::put16;


struct Spec {
  bool v6 = false;
  unsigned proto = kProtoTcp;
  std::uint64_t tags = 0;   // EtherTypes of VLAN tags (0x8100 …), 16 bits each, outer lowest
  unsigned ihl = 5;         // IPv4 header length in words
  unsigned frag = 0;        // IPv4 flags + offset field
  bool hop_by_hop = false;  // IPv6: one extension header before the transport
  unsigned tcp_offset = 5;
  std::size_t payload = 12;
  int length_delta = 0;           // added to the IP length field (padding, cut captures)
  bool zero_payload_len = false;  // IPv6 payload length 0 (jumbogram / BIG TCP)
};

Bytes frame(const Spec& s) {
  Bytes l4;
  if (s.proto == kProtoTcp) {
    put16(l4, 40000), put16(l4, 443);
    for (int i = 0; i < 8; ++i) l4.push_back(static_cast<std::uint8_t>(i));
    l4.push_back(static_cast<std::uint8_t>(s.tcp_offset << 4)), l4.push_back(0x18);
    for (int i = 0; i < 6; ++i) l4.push_back(0);
  } else {
    put16(l4, 5353), put16(l4, 53), put16(l4, 8 + static_cast<unsigned>(s.payload)), put16(l4, 0);
  }
  l4.insert(l4.end(), s.payload, 0xab);
  Bytes b{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
  for (std::uint64_t t = s.tags; t != 0; t >>= 16) {
    const auto type = static_cast<unsigned>(t & 0xffff);
    put16(b, type), put16(b, 0x0123 + type % 7);
  }
  if (!s.v6) {
    put16(b, 0x0800);
    const unsigned total = s.ihl * 4 + static_cast<unsigned>(l4.size());
    b.push_back(static_cast<std::uint8_t>(0x40 | s.ihl)), b.push_back(0);
    put16(b, static_cast<unsigned>(static_cast<int>(total) + s.length_delta));
    put16(b, 0x1234), put16(b, s.frag);
    b.push_back(64), b.push_back(static_cast<std::uint8_t>(s.proto)), put16(b, 0);
    for (unsigned x : {192, 0, 2, 1, 198, 51, 100, 7}) b.push_back(static_cast<std::uint8_t>(x));
    for (unsigned i = 5; i < s.ihl; ++i) put16(b, 0x0101), put16(b, 0x0101);  // NOP options
  } else {
    put16(b, 0x86dd);
    const std::size_t ext = s.hop_by_hop ? 8 : 0;
    put16(b, 0x6000), put16(b, 0);
    put16(b, s.zero_payload_len
                 ? 0u
                 : static_cast<unsigned>(static_cast<int>(l4.size() + ext) + s.length_delta));
    b.push_back(static_cast<std::uint8_t>(s.hop_by_hop ? 0 : s.proto)), b.push_back(64);
    for (int a = 0; a < 2; ++a) {
      for (unsigned x : {0x20, 0x01, 0x0d, 0xb8}) b.push_back(static_cast<std::uint8_t>(x));
      for (int i = 0; i < 11; ++i) b.push_back(static_cast<std::uint8_t>(i * 3));
      b.push_back(static_cast<std::uint8_t>(a + 1));
    }
    if (s.hop_by_hop) {
      b.push_back(static_cast<std::uint8_t>(s.proto)), b.push_back(0);
      for (int i = 0; i < 6; ++i) b.push_back(i == 0 ? 1 : 0);
    }
  }
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

bool takes(const Bytes& f, bool key_vlan = false) {
  QuickPacket q;
  return quick_decode(LinkType::kEthernet, f.data(), f.size(), key_vlan, q);
}
bool agrees(const Bytes& f, LinkType link = LinkType::kEthernet) {
  const auto s = std::as_bytes(std::span(f));
  return quick_decode_agrees(link, s, false) && quick_decode_agrees(link, s, true);
}

std::vector<Spec> specs() {
  std::vector<Spec> v;
  for (bool six : {false, true})
    for (unsigned proto : {kProtoTcp, kProtoUdp}) {
      v.push_back({.v6 = six, .proto = proto});
      v.push_back({.v6 = six, .proto = proto, .tags = 0x8100});
      v.push_back({.v6 = six, .proto = proto, .tags = 0x8100'88a8});
      v.push_back({.v6 = six, .proto = proto, .tags = 0x8100'8100'9100});
      v.push_back({.v6 = six, .proto = proto, .length_delta = -4});  // cut capture
      v.push_back({.v6 = six, .proto = proto, .length_delta = 9});   // longer than captured
      v.push_back({.v6 = six, .proto = proto, .payload = 0});
    }
  v.push_back({.ihl = 7});
  v.push_back({.ihl = 4});
  v.push_back({.ihl = 15});
  v.push_back({.frag = 0x4000});  // DF: a whole packet
  v.push_back({.frag = 0x2000});  // first fragment
  v.push_back({.frag = 0x0003});  // later fragment
  v.push_back({.tcp_offset = 4});
  v.push_back({.proto = kProtoIcmp});
  v.push_back({.proto = kProtoSctp});
  v.push_back({.length_delta = -40});  // total length below the header length
  v.push_back({.v6 = true, .hop_by_hop = true});
  v.push_back({.v6 = true, .zero_payload_len = true});
  v.push_back({.v6 = true, .proto = kProtoIcmpv6});
  return v;
}

TEST(QuickDecode, TakesTheCommonFramesAndDeclinesTheRest) {
  EXPECT_TRUE(takes(frame({})));
  EXPECT_TRUE(takes(frame({.proto = kProtoUdp})));
  EXPECT_TRUE(takes(frame({.v6 = true})));
  EXPECT_TRUE(takes(frame({.v6 = true, .proto = kProtoUdp, .tags = 0x8100})));
  EXPECT_TRUE(takes(frame({.tags = 0x8100'88a8})));
  EXPECT_TRUE(takes(frame({.ihl = 7})));
  EXPECT_TRUE(takes(frame({.frag = 0x4000})));
  EXPECT_TRUE(takes(frame({.v6 = true, .zero_payload_len = true})));
  EXPECT_FALSE(takes(frame({.tags = 0x8100'8100'9100})));  // the full path's job
  EXPECT_FALSE(takes(frame({.frag = 0x2000})));
  EXPECT_FALSE(takes(frame({.frag = 0x0003})));
  EXPECT_FALSE(takes(frame({.proto = kProtoIcmp})));
  EXPECT_FALSE(takes(frame({.proto = kProtoSctp})));
  EXPECT_FALSE(takes(frame({.v6 = true, .hop_by_hop = true})));
  EXPECT_FALSE(takes(frame({.tcp_offset = 4})));
  EXPECT_FALSE(takes(frame({.ihl = 4})));
  EXPECT_FALSE(takes(frame({.length_delta = -40})));
  const Bytes f = frame({});
  QuickPacket q;
  EXPECT_FALSE(quick_decode(LinkType::kRaw, f.data() + 14, f.size() - 14, false, q));
}

TEST(QuickDecode, TheVlanIsInTheKeyOnlyWhenAsked) {
  const Bytes f = frame({.tags = 0x8100});
  QuickPacket plain, keyed;
  ASSERT_TRUE(quick_decode(LinkType::kEthernet, f.data(), f.size(), false, plain));
  ASSERT_TRUE(quick_decode(LinkType::kEthernet, f.data(), f.size(), true, keyed));
  EXPECT_EQ(plain.key.vlan(), 0);
  EXPECT_EQ(keyed.key.vlan(), 0x0123 + 0x8100 % 7);
  EXPECT_NE(plain.key.hash, keyed.key.hash);
}

TEST(QuickDecode, AgreesWithTheFullDecoderOnEveryFrameAndEveryCut) {
  std::size_t taken = 0, tried = 0;
  for (const Spec& s : specs()) {
    const Bytes f = frame(s);
    for (std::size_t n = 0; n <= f.size(); ++n) {
      const Bytes cut(f.begin(), f.begin() + static_cast<std::ptrdiff_t>(n));
      ASSERT_TRUE(agrees(cut)) << "spec v6=" << s.v6 << " proto=" << s.proto << " cut at " << n;
      taken += takes(cut);
      ++tried;
    }
  }
  EXPECT_GT(taken, 0u);
  EXPECT_LT(taken, tried);
}

TEST(QuickDecode, AgreesWithTheFullDecoderOnCorruptedFrames) {
  std::mt19937 rng(2026);
  const std::vector<Spec> all = specs();
  std::size_t taken = 0;
  for (int i = 0; i < 200'000; ++i) {
    Bytes f = frame(all[rng() % all.size()]);
    // Corrupt 1–4 bytes of the headers (the first 80), sometimes with interesting values.
    for (unsigned k = 1 + rng() % 4; k-- > 0;) {
      const std::size_t at = rng() % std::min<std::size_t>(f.size(), 80);
      static constexpr std::uint8_t kValues[] = {0x00, 0x08, 0x45, 0x60, 0x81, 0x86, 0xdd,
                                                 0x88, 0xa8, 0x91, 0x06, 0x11, 0xff, 0x40};
      f[at] = rng() % 2 ? kValues[rng() % sizeof kValues] : static_cast<std::uint8_t>(rng());
    }
    if (rng() % 4 == 0) f.resize(rng() % (f.size() + 1));
    ASSERT_TRUE(agrees(f)) << "case " << i;
    taken += takes(f);
  }
  EXPECT_GT(taken, 10'000u);
}

}  // namespace
}  // namespace flowmark::observe::detail
