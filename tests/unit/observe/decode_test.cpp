#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flowmark/observe/packet.hpp"

namespace flowmark::observe {
namespace {

using V4 = std::array<std::uint8_t, 4>;
using V6 = std::array<std::uint8_t, 16>;

constexpr V4 kA4{192, 0, 2, 1}, kB4{198, 51, 100, 7};
constexpr V6 kA6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
constexpr V6 kB6{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};

// Builds a frame byte by byte, header after header. IP length fields are filled in by
// done(): each IP header covers everything after it (a quoted packet inside an ICMP error
// included), unless the test overwrites them with set16().
class Frame {
 public:
  Frame& u8(unsigned v) {
    b_.push_back(static_cast<std::uint8_t>(v));
    return *this;
  }
  Frame& u16(unsigned v) { return u8(v >> 8).u8(v); }
  Frame& u32(std::uint32_t v) { return u16(v >> 16).u16(v & 0xffff); }
  Frame& fill(std::size_t n, unsigned v = 0) {
    b_.insert(b_.end(), n, static_cast<std::uint8_t>(v));
    return *this;
  }
  template <std::size_t N>
  Frame& bytes(const std::array<std::uint8_t, N>& a) {
    b_.insert(b_.end(), a.begin(), a.end());
    return *this;
  }

  // --- link layers ---
  Frame& ether(unsigned type) {
    return u32(0x02000000).u16(0x0001).u32(0x02000000).u16(0x0002).u16(type);
  }
  Frame& vlan(unsigned tci, unsigned type) { return u16(tci).u16(type); }
  Frame& mpls(std::uint32_t label, bool bottom) {
    return u32(label << 12 | (bottom ? 0x100u : 0u) | 64u);
  }
  // Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
  Frame& sll(unsigned protocol) {
    return u16(0).u16(1).u16(6).u32(0x02000000).u32(0x00010000).u16(protocol);
  }
  // Linux cooked v2: protocol, reserved, ifindex, ARPHRD, packet type, address length,
  // 8 address bytes.
  Frame& sll2(unsigned protocol) {
    return u16(protocol).u16(0).u32(2).u16(1).u8(0).u8(6).u32(0x02000000).u32(0x00010000);
  }

  // --- IP ---
  Frame& ipv4(unsigned proto, V4 src, V4 dst, unsigned option_words = 0, unsigned frag = 0,
              unsigned id = 0x1234, unsigned ttl = 64) {
    v4_.push_back(b_.size());
    u8(0x40 | (5 + option_words)).u8(0).u16(0).u16(id).u16(frag).u8(ttl).u8(proto).u16(0);
    bytes(src).bytes(dst);
    return fill(option_words * 4, 1);  // NOP options
  }
  Frame& ipv6(unsigned next, V6 src, V6 dst, unsigned hop_limit = 64) {
    v6_.push_back(b_.size());
    u32(0x60000000).u16(0).u8(next).u8(hop_limit).bytes(src).bytes(dst);
    return *this;
  }
  // Hop-by-hop, routing, destination options: (units + 1) * 8 octets.
  Frame& ext(unsigned next, unsigned units) {
    u8(next).u8(units);
    return fill((units + 1) * 8 - 2, 0);
  }
  Frame& frag6(unsigned next, unsigned offset, bool more, std::uint32_t id) {
    return u8(next).u8(0).u16(offset << 3 | (more ? 1u : 0u)).u32(id);
  }
  // Authentication header: (units + 2) * 4 octets.
  Frame& ah(unsigned next, unsigned units) {
    u8(next).u8(units).u16(0).u32(0x1000).u32(1);
    return fill((units + 2) * 4 - 12, 0xaa);
  }

  // --- transport ---
  Frame& tcp(unsigned sport, unsigned dport, unsigned flags, unsigned option_words = 0) {
    u16(sport).u16(dport).u32(1000).u32(2000).u8((5 + option_words) << 4).u8(flags);
    u16(65535).u16(0).u16(0);
    return fill(option_words * 4, 1);
  }
  Frame& udp(unsigned sport, unsigned dport) { return u16(sport).u16(dport).u16(0).u16(0); }
  Frame& sctp(unsigned sport, unsigned dport) { return u16(sport).u16(dport).u32(7).u32(0); }
  Frame& icmp(unsigned type, unsigned code, std::uint32_t rest = 0) {
    return u8(type).u8(code).u16(0).u32(rest);
  }

  std::vector<std::uint8_t> done() {
    for (std::size_t at : v4_) put16(at + 2, b_.size() - at);
    for (std::size_t at : v6_) put16(at + 4, b_.size() - at - 40);
    return b_;
  }

 private:
  void put16(std::size_t at, std::size_t v) {
    b_[at] = static_cast<std::uint8_t>(v >> 8);
    b_[at + 1] = static_cast<std::uint8_t>(v);
  }
  std::vector<std::uint8_t> b_;
  std::vector<std::size_t> v4_, v6_;
};

void set16(std::vector<std::uint8_t>& f, std::size_t at, unsigned v) {
  f[at] = static_cast<std::uint8_t>(v >> 8);
  f[at + 1] = static_cast<std::uint8_t>(v);
}

DecodeError decode(LinkType link, const std::vector<std::uint8_t>& f, PacketView& p) {
  return decode_packet(link, std::as_bytes(std::span(f)), p);
}

std::string addr(const std::uint8_t* p, std::size_t len) {
  std::string s;
  for (std::size_t i = 0; i < len; ++i) s += std::to_string(p[i]) + (i + 1 < len ? "." : "");
  return s;
}

// Decodes every prefix of `f` from a buffer of exactly that size (so ASan sees any read
// past the end) and returns the errors, one per length 0..f.size().
std::vector<DecodeError> cut_everywhere(LinkType link, const std::vector<std::uint8_t>& f) {
  std::vector<DecodeError> errors;
  for (std::size_t k = 0; k <= f.size(); ++k) {
    auto buf = std::make_unique<std::uint8_t[]>(k);
    std::copy_n(f.begin(), k, buf.get());
    PacketView p;
    errors.push_back(decode_packet(link, std::as_bytes(std::span(buf.get(), k)), p));
  }
  return errors;
}

// Checks that prefix lengths in [from, to) give `want`.
void expect_range(const std::vector<DecodeError>& errors, std::size_t from, std::size_t to,
                  DecodeError want) {
  for (std::size_t k = from; k < to; ++k)
    EXPECT_EQ(errors[k], want) << "cut at " << k << ": " << to_string(errors[k]) << " want "
                               << to_string(want);
}

// ---------------------------------------------------------------------------------------
// Ethernet / IPv4 / transport

TEST(Decode, EthernetIpv4TcpWithOptionsAndFlags) {
  // IPv4 with one option word, TCP with three option words, SYN+ACK+ECE, 5 payload bytes.
  auto f = Frame()
               .ether(0x0800)
               .ipv4(kProtoTcp, kA4, kB4, 1, 0, 0x1234, 57)
               .tcp(43210, 443, 0x52, 3)
               .fill(5, 0xee)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 4);
  EXPECT_EQ(p.proto, kProtoTcp);
  EXPECT_EQ(p.ttl, 57);
  EXPECT_EQ(p.ip_offset, 14u);
  EXPECT_EQ(p.ip_length, 24u + 32u + 5u);
  EXPECT_EQ(p.l4_offset, 14u + 24u);
  EXPECT_EQ(p.src().to_string(), "192.0.2.1");
  EXPECT_EQ(p.dst().to_string(), "198.51.100.7");
  EXPECT_EQ(p.src_addr, f.data() + 14 + 12);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 43210);
  EXPECT_EQ(p.dport, 443);
  EXPECT_EQ(p.tcp_flags, 0x52);
  EXPECT_FALSE(p.is_fragment);
  EXPECT_EQ(p.vlan_count, 0);
  EXPECT_EQ(p.mpls_count, 0);
  EXPECT_FALSE(p.icmp_error);
}

TEST(Decode, TcpFlagsEveryBit) {
  for (unsigned flags : {0x01u, 0x02u, 0x04u, 0x08u, 0x10u, 0x20u, 0x40u, 0x80u, 0x11u}) {
    auto f = Frame().ether(0x0800).ipv4(kProtoTcp, kA4, kB4).tcp(1, 2, flags).done();
    PacketView p;
    ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
    EXPECT_EQ(p.tcp_flags, flags);
  }
}

TEST(Decode, Udp) {
  auto f = Frame().ether(0x0800).ipv4(kProtoUdp, kA4, kB4).udp(5353, 53).fill(12, 0x55).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoUdp);
  EXPECT_EQ(p.ip_length, 20u + 8u + 12u);
  EXPECT_EQ(p.l4_offset, 34u);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 5353);
  EXPECT_EQ(p.dport, 53);
  EXPECT_EQ(p.tcp_flags, 0);
}

TEST(Decode, EthernetPaddingIsNotTransportData) {
  // A 28-byte IP packet padded to the 60-byte Ethernet minimum: decodes, and the length
  // is the IP one.
  auto f = Frame().ether(0x0800).ipv4(kProtoUdp, kA4, kB4).udp(1, 2).done();
  f.resize(60, 0);
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_length, 28u);
  // The IP header says only 4 UDP bytes follow: the padding behind them must not be read
  // as the rest of the UDP header.
  set16(f, 14 + 2, 24);
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedL4);
}

TEST(Decode, Sctp) {
  auto f = Frame().ether(0x0800).ipv4(kProtoSctp, kA4, kB4).sctp(36412, 38412).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoSctp);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 36412);
  EXPECT_EQ(p.dport, 38412);
}

TEST(Decode, IcmpEcho) {
  auto f = Frame().ether(0x0800).ipv4(kProtoIcmp, kA4, kB4).icmp(8, 0, 0x00070001).fill(56).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoIcmp);
  EXPECT_EQ(p.icmp_type, 8);
  EXPECT_EQ(p.icmp_code, 0);
  EXPECT_FALSE(p.icmp_error);
  EXPECT_FALSE(p.has_ports);
  EXPECT_EQ(p.l4_offset, 34u);
  EXPECT_EQ(p.quoted.src, nullptr);
}

std::vector<std::uint8_t> port_unreachable() {
  // B answers A's UDP datagram 40000 → 53 with port unreachable.
  return Frame()
      .ether(0x0800)
      .ipv4(kProtoIcmp, kB4, kA4)
      .icmp(3, 3)
      .ipv4(kProtoUdp, kA4, kB4)
      .udp(40000, 53)
      .fill(4, 0x11)
      .done();
}

TEST(Decode, IcmpPortUnreachableQuotesUdp) {
  auto f = port_unreachable();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.icmp_type, 3);
  EXPECT_EQ(p.icmp_code, 3);
  EXPECT_TRUE(p.icmp_error);
  EXPECT_EQ(p.src().to_string(), "198.51.100.7");
  ASSERT_NE(p.quoted.src, nullptr);
  EXPECT_EQ(addr(p.quoted.src, 4), "192.0.2.1");
  EXPECT_EQ(addr(p.quoted.dst, 4), "198.51.100.7");
  EXPECT_EQ(p.quoted.src, f.data() + 14 + 20 + 8 + 12);
  EXPECT_EQ(p.quoted.proto, kProtoUdp);
  EXPECT_TRUE(p.quoted.has_ports);
  EXPECT_EQ(p.quoted.sport, 40000);
  EXPECT_EQ(p.quoted.dport, 53);
  // The outer packet has no ports of its own.
  EXPECT_FALSE(p.has_ports);
}

TEST(Decode, IcmpErrorTypes) {
  for (unsigned type = 0; type < 256; ++type) {
    auto f = Frame()
                 .ether(0x0800)
                 .ipv4(kProtoIcmp, kB4, kA4)
                 .icmp(type, 0)
                 .ipv4(kProtoTcp, kA4, kB4)
                 .tcp(1, 2, 0)
                 .done();
    PacketView p;
    ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
    const bool error = type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
    EXPECT_EQ(p.icmp_error, error) << type;
    EXPECT_EQ(p.quoted.has_ports, error) << type;
  }
}

TEST(Decode, IcmpQuoteCutShortIsNotAnError) {
  const auto full = port_unreachable();
  const std::size_t quote = 14 + 20 + 8;
  auto errors = cut_everywhere(LinkType::kEthernet, full);
  expect_range(errors, quote, full.size() + 1, DecodeError::kNone);
  expect_range(errors, 14 + 20, quote, DecodeError::kTruncatedL4);
  for (std::size_t k = quote; k <= full.size(); ++k) {
    std::vector<std::uint8_t> f(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(k));
    PacketView p;
    ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
    EXPECT_TRUE(p.icmp_error);
    EXPECT_EQ(p.quoted.src != nullptr, k >= quote + 20) << k;
    EXPECT_EQ(p.quoted.has_ports, k >= quote + 24) << k;
  }
}

TEST(Decode, IcmpQuotingNonFirstFragmentHasNoPorts) {
  auto f = Frame()
               .ether(0x0800)
               .ipv4(kProtoIcmp, kB4, kA4)
               .icmp(11, 1)
               .ipv4(kProtoUdp, kA4, kB4, 0, 100)
               .udp(1, 2)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  ASSERT_NE(p.quoted.src, nullptr);
  EXPECT_EQ(p.quoted.proto, kProtoUdp);
  EXPECT_FALSE(p.quoted.has_ports);
}

TEST(Decode, IcmpQuotingWrongVersionIsIgnored) {
  // ICMPv4 cannot quote an IPv6 packet: nothing is taken from it.
  auto f = Frame()
               .ether(0x0800)
               .ipv4(kProtoIcmp, kB4, kA4)
               .icmp(3, 1)
               .ipv6(kProtoTcp, kA6, kB6)
               .tcp(1, 2, 0)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.icmp_error);
  EXPECT_EQ(p.quoted.src, nullptr);
}

TEST(Decode, Icmpv6PacketTooBigQuotesTcp) {
  // A router tells A that its TCP segment (behind a destination-options header) is too big.
  auto f = Frame()
               .ether(0x86dd)
               .ipv6(kProtoIcmpv6, kB6, kA6)
               .icmp(2, 0, 1280)
               .ipv6(60, kA6, kB6)
               .ext(kProtoTcp, 0)
               .tcp(50000, 22, 0x18)
               .fill(100)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.proto, kProtoIcmpv6);
  EXPECT_EQ(p.icmp_type, 2);
  EXPECT_TRUE(p.icmp_error);
  ASSERT_NE(p.quoted.src, nullptr);
  EXPECT_EQ(p.quoted.src, f.data() + 14 + 40 + 8 + 8);
  EXPECT_EQ(p.quoted.dst, f.data() + 14 + 40 + 8 + 24);
  EXPECT_EQ(p.quoted.proto, kProtoTcp);
  EXPECT_TRUE(p.quoted.has_ports);
  EXPECT_EQ(p.quoted.sport, 50000);
  EXPECT_EQ(p.quoted.dport, 22);
}

TEST(Decode, Icmpv6ErrorTypesAndEcho) {
  for (unsigned type : {1u, 2u, 3u, 4u, 128u, 129u, 135u}) {
    auto f = Frame()
                 .ether(0x86dd)
                 .ipv6(kProtoIcmpv6, kB6, kA6)
                 .icmp(type, 0)
                 .ipv6(kProtoUdp, kA6, kB6)
                 .udp(1, 2)
                 .done();
    PacketView p;
    ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
    EXPECT_EQ(p.icmp_type, type);
    EXPECT_EQ(p.icmp_error, type <= 4) << type;
    EXPECT_EQ(p.quoted.has_ports, type <= 4) << type;
  }
}

TEST(Decode, Icmpv6QuoteWithCutExtensionHasNoAddresses) {
  // The quoted packet's routing header is cut: its protocol is unknown, so nothing is
  // quoted (src stays null) and the outer packet is still fine.
  auto f = Frame()
               .ether(0x86dd)
               .ipv6(kProtoIcmpv6, kB6, kA6)
               .icmp(1, 4)
               .ipv6(43, kA6, kB6)
               .ext(kProtoUdp, 2)
               .done();
  f.resize(f.size() - 10);
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.icmp_error);
  EXPECT_EQ(p.quoted.src, nullptr);
  EXPECT_FALSE(p.quoted.has_ports);
}

TEST(Decode, IcmpUnderTheOtherIpVersionIsOpaque) {
  auto f = Frame().ether(0x86dd).ipv6(kProtoIcmp, kA6, kB6).icmp(3, 3).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoIcmp);
  EXPECT_FALSE(p.icmp_error);
  EXPECT_EQ(p.icmp_type, 0);
}

// ---------------------------------------------------------------------------------------
// VLAN, MPLS, other link types

TEST(Decode, SingleVlan) {
  auto f =
      Frame().ether(0x8100).vlan(0x6000 | 42, 0x0800).ipv4(kProtoUdp, kA4, kB4).udp(1, 2).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.vlan_count, 1);
  EXPECT_EQ(p.vlan[0], 42);  // priority bits stripped
  EXPECT_EQ(p.ip_offset, 18u);
  EXPECT_TRUE(p.has_ports);
}

TEST(Decode, DoubleVlan) {
  auto f = Frame()
               .ether(0x88a8)
               .vlan(100, 0x8100)
               .vlan(0x1000 | 4094, 0x86dd)
               .ipv6(kProtoTcp, kA6, kB6)
               .tcp(80, 8080, 0x10)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.vlan_count, 2);
  EXPECT_EQ(p.vlan[0], 100);
  EXPECT_EQ(p.vlan[1], 4094);  // DEI bit stripped
  EXPECT_EQ(p.ip_offset, 22u);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.sport, 80);
}

TEST(Decode, ThreeTagsRecordTwoAndSkipTheRest) {
  auto f = Frame()
               .ether(0x9100)
               .vlan(1, 0x88a8)
               .vlan(2, 0x8100)
               .vlan(3, 0x0800)
               .ipv4(kProtoUdp, kA4, kB4)
               .udp(1, 2)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.vlan_count, 2);
  EXPECT_EQ(p.vlan[0], 1);
  EXPECT_EQ(p.vlan[1], 2);
  EXPECT_EQ(p.ip_offset, 26u);
}

TEST(Decode, MplsTwoLabelsThenIpv4) {
  auto f = Frame()
               .ether(0x8847)
               .mpls(16, false)
               .mpls(1000, true)
               .ipv4(kProtoTcp, kA4, kB4)
               .tcp(1, 2, 0x02)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.mpls_count, 2);
  EXPECT_EQ(p.ip_offset, 22u);
  EXPECT_EQ(p.ip_version, 4);
  EXPECT_EQ(p.tcp_flags, 0x02);
}

TEST(Decode, VlanThenMulticastMplsThenIpv6) {
  auto f = Frame()
               .ether(0x8100)
               .vlan(7, 0x8848)
               .mpls(3, true)
               .ipv6(kProtoUdp, kA6, kB6)
               .udp(1, 2)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.vlan_count, 1);
  EXPECT_EQ(p.mpls_count, 1);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.ip_offset, 22u);
}

TEST(Decode, MplsErrors) {
  PacketView p;
  // No bottom of stack before the frame ends.
  auto f = Frame().ether(0x8847).mpls(16, false).mpls(17, false).done();
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedMpls);
  // Nothing after the stack.
  f = Frame().ether(0x8847).mpls(16, true).done();
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedIp);
  // A pseudowire control word (first nibble 0) then Ethernet: not IP.
  f = Frame().ether(0x8847).mpls(16, true).u32(0).ether(0x0800).done();
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNotIp);
}

TEST(Decode, LinuxSll) {
  auto f = Frame().sll(0x0800).ipv4(kProtoUdp, kA4, kB4).udp(123, 123).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kLinuxSll, f, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_offset, 16u);
  EXPECT_EQ(p.sport, 123);
  f = Frame().sll(0x0806).fill(28).done();
  EXPECT_EQ(decode(LinkType::kLinuxSll, f, p), DecodeError::kNotIp);
}

TEST(Decode, LinuxSll2) {
  auto f = Frame().sll2(0x86dd).ipv6(kProtoTcp, kA6, kB6).tcp(1, 443, 0x11).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kLinuxSll2, f, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_offset, 20u);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.dport, 443);
  EXPECT_EQ(p.tcp_flags, 0x11);
}

TEST(Decode, RawIpv4AndIpv6) {
  PacketView p;
  auto f4 = Frame().ipv4(kProtoUdp, kA4, kB4).udp(1, 2).done();
  auto f6 = Frame().ipv6(kProtoUdp, kA6, kB6).udp(3, 4).done();
  ASSERT_EQ(decode(LinkType::kRaw, f4, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 4);
  EXPECT_EQ(p.ip_offset, 0u);
  EXPECT_EQ(p.sport, 1);
  ASSERT_EQ(decode(LinkType::kRaw, f6, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.src().to_string(), "2001:db8::1");
  EXPECT_EQ(p.dst().to_string(), "2001:db8::2");
  EXPECT_EQ(p.sport, 3);
  // The IPv4 / IPv6 link types announce the version: the other one is an error.
  EXPECT_EQ(decode(LinkType::kIpv4, f4, p), DecodeError::kNone);
  EXPECT_EQ(decode(LinkType::kIpv6, f6, p), DecodeError::kNone);
  EXPECT_EQ(decode(LinkType::kIpv4, f6, p), DecodeError::kBadIpVersion);
  EXPECT_EQ(decode(LinkType::kIpv6, f4, p), DecodeError::kBadIpVersion);
  f4[0] = 0x55;
  EXPECT_EQ(decode(LinkType::kRaw, f4, p), DecodeError::kBadIpVersion);
  EXPECT_EQ(decode(LinkType::kRaw, {}, p), DecodeError::kTruncatedIp);
}

std::vector<std::uint8_t> with_family(std::uint32_t family, bool network_order, bool v6) {
  Frame f;
  if (network_order) {
    f.u32(family);
  } else {
    std::array<std::uint8_t, 4> host;
    std::memcpy(host.data(), &family, 4);
    f.bytes(host);
  }
  if (v6)
    f.ipv6(kProtoUdp, kA6, kB6).udp(5, 6);
  else
    f.ipv4(kProtoUdp, kA4, kB4).udp(5, 6);
  return f.done();
}

TEST(Decode, BsdNullHostOrder) {
  PacketView p;
  ASSERT_EQ(decode(LinkType::kNull, with_family(2, false, false), p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 4);
  EXPECT_EQ(p.ip_offset, 4u);
  EXPECT_EQ(p.dport, 6);
  for (std::uint32_t family : {24u, 28u, 30u}) {
    ASSERT_EQ(decode(LinkType::kNull, with_family(family, false, true), p), DecodeError::kNone);
    EXPECT_EQ(p.ip_version, 6);
    EXPECT_EQ(p.ip_offset, 4u);
  }
  // Written on a machine of the other byte order: still recognised.
  ASSERT_EQ(decode(LinkType::kNull, with_family(std::byteswap(30u), false, true), p),
            DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(decode(LinkType::kNull, with_family(7, false, false), p), DecodeError::kNotIp);
  // The family says IPv4 but the packet is IPv6.
  EXPECT_EQ(decode(LinkType::kNull, with_family(2, false, true), p), DecodeError::kBadIpVersion);
}

TEST(Decode, BsdLoopNetworkOrder) {
  PacketView p;
  ASSERT_EQ(decode(LinkType::kLoop, with_family(2, true, false), p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 4);
  ASSERT_EQ(decode(LinkType::kLoop, with_family(24, true, true), p), DecodeError::kNone);
  EXPECT_EQ(p.ip_version, 6);
  EXPECT_EQ(p.sport, 5);
}

TEST(Decode, NonIpAndUnsupportedLink) {
  PacketView p;
  auto arp = Frame().ether(0x0806).fill(28).done();
  EXPECT_EQ(decode(LinkType::kEthernet, arp, p), DecodeError::kNotIp);
  auto llc = Frame().ether(46).fill(46).done();  // 802.3 length field
  EXPECT_EQ(decode(LinkType::kEthernet, llc, p), DecodeError::kNotIp);
  auto lldp = Frame().ether(0x8100).vlan(5, 0x88cc).fill(20).done();
  EXPECT_EQ(decode(LinkType::kEthernet, lldp, p), DecodeError::kNotIp);
  EXPECT_EQ(p.vlan_count, 1);
  EXPECT_EQ(decode(static_cast<LinkType>(147), arp, p), DecodeError::kUnsupportedLink);
}

// ---------------------------------------------------------------------------------------
// IPv6 extension headers

TEST(Decode, Ipv6HopByHopRoutingDestinationOptionsTcp) {
  auto f = Frame()
               .ether(0x86dd)
               .ipv6(0, kA6, kB6, 3)
               .ext(43, 0)
               .ext(60, 2)
               .ext(kProtoTcp, 1)
               .tcp(1234, 80, 0x02, 1)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoTcp);
  EXPECT_EQ(p.ttl, 3);
  EXPECT_EQ(p.ip_length, 40u + 8u + 24u + 16u + 24u);
  EXPECT_EQ(p.l4_offset, 14u + 40u + 8u + 24u + 16u);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 1234);
  EXPECT_EQ(p.dport, 80);
  EXPECT_EQ(p.tcp_flags, 0x02);
  EXPECT_FALSE(p.is_fragment);
}

TEST(Decode, Ipv6FirstFragment) {
  auto f = Frame()
               .ether(0x86dd)
               .ipv6(44, kA6, kB6)
               .frag6(kProtoUdp, 0, true, 0xdeadbeef)
               .udp(4789, 4789)
               .fill(64)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.is_fragment);
  EXPECT_TRUE(p.more_fragments);
  EXPECT_EQ(p.frag_offset, 0);
  EXPECT_EQ(p.frag_id, 0xdeadbeefu);
  EXPECT_EQ(p.proto, kProtoUdp);
  EXPECT_EQ(p.l4_offset, 14u + 48u);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 4789);
}

TEST(Decode, Ipv6NonFirstFragment) {
  auto f = Frame()
               .ether(0x86dd)
               .ipv6(0, kA6, kB6)
               .ext(44, 0)
               .frag6(kProtoUdp, 185, false, 77)
               .fill(64, 0x99)
               .done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.is_fragment);
  EXPECT_FALSE(p.more_fragments);
  EXPECT_EQ(p.frag_offset, 185);
  EXPECT_EQ(p.frag_id, 77u);
  EXPECT_EQ(p.proto, kProtoUdp);
  EXPECT_EQ(p.l4_offset, 0u);
  EXPECT_FALSE(p.has_ports);
}

TEST(Decode, Ipv6AtomicFragmentIsAWholePacket) {
  auto f =
      Frame().ether(0x86dd).ipv6(44, kA6, kB6).frag6(kProtoTcp, 0, false, 5).tcp(1, 2, 0x10).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_FALSE(p.is_fragment);
  EXPECT_TRUE(p.has_ports);
}

TEST(Decode, Ipv6AuthenticationHeader) {
  // AH length 4: (4 + 2) * 4 = 24 octets.
  auto f = Frame().ether(0x86dd).ipv6(51, kA6, kB6).ah(kProtoTcp, 4).tcp(500, 4500, 0x18).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, kProtoTcp);
  EXPECT_EQ(p.l4_offset, 14u + 40u + 24u);
  EXPECT_EQ(p.sport, 500);
  EXPECT_EQ(p.dport, 4500);
}

TEST(Decode, Ipv6NoNextHeader) {
  auto f = Frame().ether(0x86dd).ipv6(60, kA6, kB6).ext(59, 0).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, 59);
  EXPECT_EQ(p.l4_offset, 0u);
  EXPECT_FALSE(p.has_ports);
  EXPECT_EQ(p.ip_length, 48u);
}

TEST(Decode, Ipv6ExtensionLimit) {
  PacketView p;
  Frame ok;
  ok.ether(0x86dd).ipv6(60, kA6, kB6);
  for (int i = 0; i < 15; ++i) ok.ext(60, 0);
  ok.ext(kProtoUdp, 0).udp(1, 2);
  ASSERT_EQ(decode(LinkType::kEthernet, ok.done(), p), DecodeError::kNone);
  EXPECT_EQ(p.sport, 1);
  Frame bad;
  bad.ether(0x86dd).ipv6(60, kA6, kB6);
  for (int i = 0; i < 16; ++i) bad.ext(60, 0);
  bad.ext(kProtoUdp, 0).udp(1, 2);
  EXPECT_EQ(decode(LinkType::kEthernet, bad.done(), p), DecodeError::kTooManyExtensions);
}

TEST(Decode, Ipv6PayloadLengthBoundsTheWalk) {
  // The payload length ends the packet inside the routing header; padding after it must
  // not be read as the rest of the header.
  auto f = Frame().ether(0x86dd).ipv6(43, kA6, kB6).ext(kProtoTcp, 1).tcp(1, 2, 0).done();
  set16(f, 14 + 4, 8);
  PacketView p;
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedExtension);
  // Payload length 0 (a jumbogram, or a large segment captured before segmentation):
  // the captured bytes bound the packet.
  set16(f, 14 + 4, 0);
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.sport, 1);
}

// ---------------------------------------------------------------------------------------
// IPv4 fragments and header errors

TEST(Decode, Ipv4FirstFragment) {
  auto f =
      Frame().ether(0x0800).ipv4(kProtoUdp, kA4, kB4, 0, 0x2000, 0xbeef).udp(7, 8).fill(100).done();
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.is_fragment);
  EXPECT_TRUE(p.more_fragments);
  EXPECT_EQ(p.frag_offset, 0);
  EXPECT_EQ(p.frag_id, 0xbeefu);
  EXPECT_TRUE(p.has_ports);
  EXPECT_EQ(p.sport, 7);
}

TEST(Decode, Ipv4NonFirstFragment) {
  auto f = Frame()
               .ether(0x0800)
               .ipv4(kProtoUdp, kA4, kB4, 0, 0x4000 | 13, 0xbeef)
               .fill(100, 0x77)
               .done();
  PacketView p;
  // DF set and offset 13, no MF: the last fragment.
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_TRUE(p.is_fragment);
  EXPECT_FALSE(p.more_fragments);
  EXPECT_EQ(p.frag_offset, 13);
  EXPECT_EQ(p.frag_id, 0xbeefu);
  EXPECT_EQ(p.proto, kProtoUdp);
  EXPECT_EQ(p.l4_offset, 0u);
  EXPECT_FALSE(p.has_ports);
  // DF alone is no fragment.
  f = Frame().ether(0x0800).ipv4(kProtoUdp, kA4, kB4, 0, 0x4000).udp(1, 2).done();
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_FALSE(p.is_fragment);
}

TEST(Decode, Ipv4HeaderErrors) {
  PacketView p;
  auto f = Frame().ether(0x0800).ipv4(kProtoTcp, kA4, kB4).tcp(1, 2, 0).done();
  auto g = f;
  g[14] = 0x44;  // IHL 4
  EXPECT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kBadIpHeaderLength);
  g = f;
  g[14] = 0x4f;  // IHL 15: 60 bytes, more than the 40 captured
  EXPECT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kBadIpHeaderLength);
  g = f;
  set16(g, 16, 19);  // total length below the header length
  EXPECT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kBadIpTotalLength);
  g = f;
  set16(g, 16, 1500);  // a capture cut by the snap length: fine
  ASSERT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kNone);
  EXPECT_EQ(p.ip_length, 1500u);
  EXPECT_TRUE(p.has_ports);
  g = f;
  g[14] = 0x65;  // EtherType IPv4, version 6
  EXPECT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kBadIpVersion);
  g = f;
  g[14 + 20 + 12] = 0x40;  // TCP data offset 4
  EXPECT_EQ(decode(LinkType::kEthernet, g, p), DecodeError::kBadTcpHeaderLength);
}

TEST(Decode, TransportTooShort) {
  PacketView p;
  struct Case {
    std::uint8_t proto;
    std::size_t fixed;
  };
  for (const Case c :
       {Case{kProtoTcp, 20}, Case{kProtoUdp, 8}, Case{kProtoSctp, 12}, Case{kProtoIcmp, 8}}) {
    auto f = Frame().ether(0x0800).ipv4(c.proto, kA4, kB4).fill(c.fixed, 0x50).done();
    EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone) << int{c.proto};
    f = Frame().ether(0x0800).ipv4(c.proto, kA4, kB4).fill(c.fixed - 1, 0x50).done();
    EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedL4) << int{c.proto};
  }
  auto f = Frame().ether(0x86dd).ipv6(kProtoIcmpv6, kA6, kB6).fill(7).done();
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kTruncatedL4);
  // Other protocols have no fixed part we read.
  f = Frame().ether(0x0800).ipv4(47, kA4, kB4).done();
  ASSERT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNone);
  EXPECT_EQ(p.proto, 47);
  EXPECT_EQ(p.l4_offset, 34u);
}

// ---------------------------------------------------------------------------------------
// Cut at every byte

TEST(Decode, CutEthernetIpv6ExtensionsTcpAtEveryByte) {
  // 14 Ethernet + 40 IPv6 + 8 hop-by-hop + 16 destination options + 24 TCP + 10 payload.
  const auto f = Frame()
                     .ether(0x86dd)
                     .ipv6(0, kA6, kB6)
                     .ext(60, 0)
                     .ext(kProtoTcp, 1)
                     .tcp(1, 2, 0x02, 1)
                     .fill(10)
                     .done();
  ASSERT_EQ(f.size(), 112u);
  const auto e = cut_everywhere(LinkType::kEthernet, f);
  expect_range(e, 0, 14, DecodeError::kTruncatedLink);
  expect_range(e, 14, 54, DecodeError::kTruncatedIp);
  expect_range(e, 54, 78, DecodeError::kTruncatedExtension);
  expect_range(e, 78, 98, DecodeError::kTruncatedL4);
  expect_range(e, 98, f.size() + 1, DecodeError::kNone);
}

TEST(Decode, CutVlanIpv4OptionsTcpAtEveryByte) {
  const auto f =
      Frame().ether(0x8100).vlan(9, 0x0800).ipv4(kProtoTcp, kA4, kB4, 1).tcp(1, 2, 0x02).done();
  const auto e = cut_everywhere(LinkType::kEthernet, f);
  expect_range(e, 0, 14, DecodeError::kTruncatedLink);
  expect_range(e, 14, 18, DecodeError::kTruncatedVlan);
  expect_range(e, 18, 38, DecodeError::kTruncatedIp);
  expect_range(e, 38, 42, DecodeError::kBadIpHeaderLength);  // options cut
  expect_range(e, 42, 62, DecodeError::kTruncatedL4);
  expect_range(e, 62, 63, DecodeError::kNone);
}

TEST(Decode, CutMplsUdpAtEveryByte) {
  const auto f =
      Frame().ether(0x8847).mpls(1, false).mpls(2, true).ipv4(kProtoUdp, kA4, kB4).udp(1, 2).done();
  const auto e = cut_everywhere(LinkType::kEthernet, f);
  expect_range(e, 14, 22, DecodeError::kTruncatedMpls);
  expect_range(e, 22, 42, DecodeError::kTruncatedIp);
  expect_range(e, 42, 50, DecodeError::kTruncatedL4);
  expect_range(e, 50, 51, DecodeError::kNone);
}

TEST(Decode, CutOtherLinksAtEveryByte) {
  auto e = cut_everywhere(LinkType::kLinuxSll,
                          Frame().sll(0x0800).ipv4(kProtoSctp, kA4, kB4).sctp(1, 2).done());
  expect_range(e, 0, 16, DecodeError::kTruncatedLink);
  expect_range(e, 16, 36, DecodeError::kTruncatedIp);
  expect_range(e, 36, 48, DecodeError::kTruncatedL4);
  expect_range(e, 48, 49, DecodeError::kNone);
  e = cut_everywhere(LinkType::kLinuxSll2,
                     Frame().sll2(0x86dd).ipv6(51, kA6, kB6).ah(kProtoUdp, 1).udp(1, 2).done());
  expect_range(e, 0, 20, DecodeError::kTruncatedLink);
  expect_range(e, 20, 60, DecodeError::kTruncatedIp);
  expect_range(e, 60, 72, DecodeError::kTruncatedExtension);
  expect_range(e, 72, 80, DecodeError::kTruncatedL4);
  expect_range(e, 80, 81, DecodeError::kNone);
  e = cut_everywhere(LinkType::kLoop, with_family(30, true, true));
  expect_range(e, 0, 4, DecodeError::kTruncatedLink);
  expect_range(e, 4, 44, DecodeError::kTruncatedIp);
  expect_range(e, 44, 52, DecodeError::kTruncatedL4);
  expect_range(e, 52, 53, DecodeError::kNone);
  e = cut_everywhere(LinkType::kNull, with_family(2, false, false));
  expect_range(e, 0, 4, DecodeError::kTruncatedLink);
  expect_range(e, 4, 24, DecodeError::kTruncatedIp);
}

TEST(Decode, CutIcmpv6QuoteAtEveryByte) {
  const auto f = Frame()
                     .ether(0x86dd)
                     .ipv6(kProtoIcmpv6, kB6, kA6)
                     .icmp(1, 4)
                     .ipv6(0, kA6, kB6)
                     .ext(44, 0)
                     .frag6(kProtoUdp, 0, true, 9)
                     .udp(1, 2)
                     .done();
  const auto e = cut_everywhere(LinkType::kEthernet, f);
  expect_range(e, 54, 62, DecodeError::kTruncatedL4);
  expect_range(e, 62, f.size() + 1, DecodeError::kNone);
}

// ---------------------------------------------------------------------------------------
// The rest of the API

TEST(Decode, ViewIsResetBetweenPackets) {
  PacketView p;
  ASSERT_EQ(decode(LinkType::kEthernet, port_unreachable(), p), DecodeError::kNone);
  auto f = Frame().ether(0x8100).vlan(3, 0x0806).fill(28).done();
  EXPECT_EQ(decode(LinkType::kEthernet, f, p), DecodeError::kNotIp);
  EXPECT_EQ(p.ip_version, 0);
  EXPECT_EQ(p.src_addr, nullptr);
  EXPECT_FALSE(p.icmp_error);
  EXPECT_EQ(p.quoted.src, nullptr);
  EXPECT_EQ(p.vlan_count, 1);
  EXPECT_EQ(p.src(), IpAddress());
}

TEST(Decode, ErrorNames) {
  EXPECT_EQ(to_string(DecodeError::kNone), "none");
  EXPECT_EQ(to_string(DecodeError::kTruncatedIp), "truncated_ip");
  EXPECT_EQ(to_string(DecodeError::kNotIp), "not_ip");
  EXPECT_EQ(to_string(DecodeError::kBadTcpHeaderLength), "bad_tcp_header_length");
  EXPECT_EQ(to_string(DecodeError::kCount), "unknown");
  std::vector<std::string_view> seen;
  for (int i = 0; i < static_cast<int>(DecodeError::kCount); ++i) {
    auto name = to_string(static_cast<DecodeError>(i));
    EXPECT_NE(name, "unknown");
    EXPECT_EQ(std::count(seen.begin(), seen.end(), name), 0) << name;
    seen.push_back(name);
  }
}

}  // namespace
}  // namespace flowmark::observe
