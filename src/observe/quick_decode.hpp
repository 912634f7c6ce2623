// The observer's fast path for the common frame: Ethernet (up to two 802.1Q/802.1ad tags) →
// IPv4 (any header length, not a fragment) or IPv6 (no extension header) → TCP or UDP.
// quick_decode() builds the flow key straight from the frame's bytes, without filling a
// PacketView; for every other frame — and for every frame the full decoder would reject — it
// returns false and the caller takes decode_packet(). Where it returns true, its key, IP
// length and TCP flags are exactly what decode_packet() followed by the observer's own key
// making would give (tests/fuzz/fuzz_decode.cpp checks this on every input).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "flow_key.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::observe::detail {

struct QuickPacket {
  PacketKey key;
  std::uint32_t ip_length = 0;
  std::uint8_t tcp_flags = 0;
  // For the chains' fast forms (QuickFacts): read from lines already loaded.
  std::uint8_t tos = 0;
  bool ip_reserved_flag = false;
  bool udp_zero_checksum = false;
  std::uint32_t flow_label = 0;
  std::uint32_t payload_length = 0;
};

namespace quick {
inline std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
}  // namespace quick

// The key of a decoded packet that is not a fragment (a function of the packet alone);
// key_vlan: the outer tag's id goes into the key (ObserverConfig::key_vlan).
[[gnu::always_inline]] inline PacketKey packet_key(const PacketView& p, bool key_vlan) noexcept {
  const bool v6 = p.ip_version == 6;
  std::uint16_t sport = p.sport, dport = p.dport;
  // Keep the two 2-byte loads apart: merged into one 4-byte load they would wait for the
  // decoder's two 2-byte stores to retire.
  asm("" : "+r"(sport));
  const std::uint8_t flags =
      static_cast<std::uint8_t>((v6 ? kKeyV6 : 0) | (p.has_ports ? 0 : kKeyPortless));
  if (!p.has_ports) sport = dport = 0;
  return make_key(load_addr(p.src_addr, v6), load_addr(p.dst_addr, v6), sport, dport,
                  key_vlan && p.vlan_count > 0 ? p.vlan[0] : 0, p.proto, flags);
}

// quick_decode(): the same key as packet_key() after decode_packet(), without the view.
// kFacts: also what the chains' fast forms read (tos, reserved flag, flow label, payload
// length, zero UDP checksum); without, those are left as they were.
template <bool kFacts = true>
[[gnu::always_inline]] inline bool quick_decode(LinkType link, const std::uint8_t* d, std::size_t n,
                                                bool key_vlan, QuickPacket& q) noexcept {
  using quick::be16;
  if (link != LinkType::kEthernet || n < 14) return false;
  std::size_t off = 14;
  std::uint16_t type = be16(d + 12), vlan = 0;
  if (type != 0x0800 && type != 0x86dd) {  // tags: at most two here (the full path takes more)
    for (int tags = 0;; ++tags) {
      if (type != 0x8100 && type != 0x88a8 && type != 0x9100) break;
      if (tags == 2 || n - off < 4) return false;
      if (tags == 0) vlan = be16(d + off) & 0x0fff;
      type = be16(d + off + 2);
      off += 4;
    }
    if (!key_vlan) vlan = 0;
  }
  const std::uint8_t* ip = d + off;
  const std::size_t avail = n - off;
  std::size_t l4, end, stated;  // stated: transport bytes by the IP header
  std::uint8_t proto, flags;
  // The addresses go straight into the key.
  AddrWords &src = q.key.src, &dst = q.key.dst;
  if (type == 0x0800) {
    if (avail < 20 || ip[0] >> 4 != 4) return false;
    const std::size_t ihl = std::size_t{ip[0] & 0x0fu} * 4;
    const std::uint16_t total = be16(ip + 2);
    // Header length, total length, not a fragment (flags MF and offset clear).
    if (ihl < 20 || ihl > avail || total < ihl || (be16(ip + 6) & 0x3fff) != 0) return false;
    proto = ip[9];
    src.w0 = src.w1 = dst.w0 = dst.w1 = 0;  // IPv4: four bytes, zeroes after them
    std::memcpy(&src.w0, ip + 12, 4);
    std::memcpy(&dst.w0, ip + 16, 4);
    q.ip_length = total;
    if constexpr (kFacts) {
      q.tos = ip[1];
      q.ip_reserved_flag = (ip[6] & 0x80) != 0;
      q.flow_label = 0;
    }
    stated = total - ihl;
    l4 = off + ihl;
    end = off + (total < avail ? total : avail);
    flags = 0;
  } else if (type == 0x86dd) {
    if (avail < 40 || ip[0] >> 4 != 6) return false;
    const std::uint16_t payload = be16(ip + 4);
    proto = ip[6];
    std::memcpy(&src.w0, ip + 8, 8);
    std::memcpy(&src.w1, ip + 16, 8);
    std::memcpy(&dst.w0, ip + 24, 8);
    std::memcpy(&dst.w1, ip + 32, 8);
    q.ip_length = 40u + payload;
    if constexpr (kFacts) {
      q.tos = static_cast<std::uint8_t>((ip[0] << 4) | (ip[1] >> 4));
      q.ip_reserved_flag = false;
      q.flow_label = (std::uint32_t{ip[1] & 0x0fu} << 16) | be16(ip + 2);
    }
    l4 = off + 40;
    end = payload == 0 || 40u + payload > avail ? n : off + 40 + payload;
    stated = payload == 0 ? end - l4 : payload;
    flags = kKeyV6;
  } else {
    return false;
  }
  // TCP or UDP, told apart without a branch (a mix of both is a coin toss per packet): UDP
  // reads byte 0 where TCP reads its data offset and flags, and keeps none of it.
  const std::uint8_t* t = d + l4;
  const bool tcp = proto == kProtoTcp;
  if (!tcp & (proto != kProtoUdp)) return false;
  if (end - l4 < 8u + 12u * tcp) return false;
  const std::uint8_t offset = t[12u * tcp], tcp_flags = t[13u * tcp];
  if (tcp & (offset >> 4 < 5)) return false;
  q.tcp_flags = static_cast<std::uint8_t>(tcp_flags & (tcp ? 0xff : 0));
  if constexpr (kFacts) {
    const std::size_t header = tcp ? std::size_t{offset} >> 4 << 2 : 8;
    q.payload_length = static_cast<std::uint32_t>(stated > header ? stated - header : 0);
    q.udp_zero_checksum = !tcp && t[6] == 0 && t[7] == 0;
  } else {
    (void)stated;
  }
  finish_key(q.key, be16(t), be16(t + 2), vlan, proto, flags);
  return true;
}

// For the tests and the fuzzer: true when quick_decode() either declines the frame or
// agrees with decode_packet() + packet_key() on everything it gives.
inline bool quick_decode_agrees(LinkType link, std::span<const std::byte> frame,
                                bool key_vlan) noexcept {
  QuickPacket q;
  const auto* d = reinterpret_cast<const std::uint8_t*>(frame.data());
  if (!quick_decode(link, d, frame.size(), key_vlan, q)) return true;
  PacketView p;
  if (decode_packet(link, frame, p) != DecodeError::kNone || p.is_fragment ||
      (p.proto != kProtoTcp && p.proto != kProtoUdp))
    return false;
  const PacketKey k = packet_key(p, key_vlan);
  const bool zero_checksum = p.proto == kProtoUdp && p.l4[6] == 0 && p.l4[7] == 0;
  return k == q.key && q.ip_length == p.ip_length && q.tcp_flags == p.tcp_flags &&
         q.tos == p.tos && q.ip_reserved_flag == p.ip_reserved_flag &&
         q.flow_label == p.flow_label && q.payload_length == p.payload_length &&
         q.udp_zero_checksum == zero_checksum;
}

}  // namespace flowmark::observe::detail
