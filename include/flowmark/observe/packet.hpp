// flowmark::observe — decoding one captured frame into a PacketView, in place.
//
// decode_packet() walks the link layer (Ethernet, Linux cooked SLL/SLL2, raw IP, BSD
// loopback), 802.1Q/QinQ tags, MPLS label stacks, IPv4 (options, fragments) or IPv6 (the
// extension-header walk: hop-by-hop, routing, fragment, destination options, AH) and the
// transport header (TCP, UDP, SCTP, ICMP, ICMPv6). Every read is bounds-checked; nothing is
// allocated; a malformed frame gives a DecodeError saying which layer failed, and the
// caller counts it and moves on.
//
//   PacketView p;
//   if (auto err = decode_packet(LinkType::kEthernet, frame, p); err != DecodeError::kNone)
//     ++errors[static_cast<int>(err)];
//   else if (p.has_ports) use(p.src(), p.sport, p.dst(), p.dport);
// The view points into `frame`: the caller owns those bytes and keeps them alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "flowmark/core/address.hpp"

namespace flowmark::observe {

// pcap LINKTYPE_* values.
enum class LinkType : std::uint16_t {
  kNull = 0,  // BSD loopback: 4-byte address family in host byte order
  kEthernet = 1,
  kRaw = 101,   // raw IPv4 / IPv6 (also DLT_RAW 12 and 14 on some systems)
  kLoop = 108,  // OpenBSD loopback: 4-byte family in network byte order
  kLinuxSll = 113,
  kIpv4 = 228,
  kIpv6 = 229,
  kLinuxSll2 = 276,
};

enum class DecodeError : std::uint8_t {
  kNone = 0,
  kUnsupportedLink,     // a link type we do not decode
  kTruncatedLink,       // shorter than its link header
  kTruncatedVlan,       // cut inside an 802.1Q tag
  kTruncatedMpls,       // cut inside the MPLS label stack (or no bottom of stack)
  kNotIp,               // ARP, LLDP …: not an error as such, counted as non-IP
  kTruncatedIp,         // shorter than the IP header
  kBadIpVersion,        // version nibble not 4 / 6 (or not the one the link announced)
  kBadIpHeaderLength,   // IPv4 IHL < 5 or beyond the frame
  kBadIpTotalLength,    // IPv4 total length < IHL*4 (a larger one is a cut capture: fine)
  kTruncatedExtension,  // cut inside an IPv6 extension header
  kTooManyExtensions,   // more than 16 IPv6 extension headers
  kTruncatedL4,         // too short for the transport header's fixed part / ports
  kBadTcpHeaderLength,  // TCP data offset < 5
  kCount
};
std::string_view to_string(DecodeError e) noexcept;  // "truncated_ip", ...

inline constexpr std::uint8_t kProtoIcmp = 1, kProtoTcp = 6, kProtoUdp = 17, kProtoIcmpv6 = 58,
                              kProtoSctp = 132;

// What an ICMP / ICMPv6 error message quotes of the packet that caused it (the
// invoking packet's addresses, protocol and ports, in that packet's own direction).
// The quote has the outer packet's IP version (ICMP quotes IPv4, ICMPv6 quotes IPv6).
// src, dst and proto are set together, only when the quoted IP header (and for IPv6 its
// extension headers up to the protocol) is all there; has_ports needs the 4 port bytes
// and a quoted packet that is not a non-first fragment.
struct QuotedPacket {
  const std::uint8_t* src = nullptr;  // 4 or 16 bytes, into the frame
  const std::uint8_t* dst = nullptr;
  std::uint8_t proto = 0;
  std::uint16_t sport = 0, dport = 0;
  bool has_ports = false;
};

struct PacketView {
  // --- link ---
  std::uint16_t vlan[2] = {0, 0};  // outer first; 12-bit ids
  std::uint8_t vlan_count = 0;
  std::uint8_t mpls_count = 0;
  // --- IP ---
  std::uint8_t ip_version = 0;             // 4 or 6
  std::uint8_t proto = 0;                  // transport protocol (after IPv6 extensions)
  std::uint8_t ttl = 0;                    // TTL / hop limit
  std::uint8_t tos = 0;                    // IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN)
  bool ip_reserved_flag = false;           // IPv4 flags bit 0x8000 (RFC 3514's "evil bit")
  std::uint32_t flow_label = 0;            // IPv6 flow label (20 bits)
  const std::uint8_t* src_addr = nullptr;  // 4 or 16 bytes, network order, into the frame
  const std::uint8_t* dst_addr = nullptr;
  std::uint32_t ip_offset = 0;  // of the IP header in the frame
  std::uint32_t ip_length = 0;  // octets of the IP packet (header included), from
                                // the header's length fields (not the snap length)
  std::uint32_t l4_offset = 0;  // of the transport header (0: none reached)
  // The transport header and what follows it inside the IP packet, as captured (l4_captured
  // bytes from l4; Ethernet padding excluded), and the payload length the IP header states
  // (after the TCP header with its options, or the 8-byte UDP header; 0 otherwise).
  const std::uint8_t* l4 = nullptr;
  std::uint32_t l4_captured = 0;
  std::uint32_t payload_length = 0;
  // The Scitags option (type 0x1E, 3 data bytes: experiment high, experiment low, activity)
  // in an IPv6 hop-by-hop or destination-options header: where it was found (the first one).
  enum class TagWhere : std::uint8_t { kNone = 0, kHopByHop = 1, kDestOptions = 2 };
  TagWhere tag_where = TagWhere::kNone;
  std::uint8_t tag_activity = 0;
  std::uint16_t tag_experiment = 0;
  // Fragments: is_fragment for any fragment; the transport fields below are only set
  // for the first fragment (offset 0).
  bool is_fragment = false;
  bool more_fragments = false;
  std::uint16_t frag_offset = 0;  // in 8-byte units
  std::uint32_t frag_id = 0;      // IPv4 16-bit id, or the IPv6 32-bit id
  // --- transport ---
  bool has_ports = false;  // TCP, UDP or SCTP with both ports read
  std::uint16_t sport = 0, dport = 0;
  std::uint8_t tcp_flags = 0;  // FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 …
  std::uint8_t icmp_type = 0, icmp_code = 0;
  bool icmp_error = false;  // destination unreachable, time exceeded …
  QuotedPacket quoted;      // valid when icmp_error and quoted.src != nullptr

  IpAddress src() const noexcept;
  IpAddress dst() const noexcept;
};

// Decodes `frame` (the captured bytes) of link type `link` into `out` (fully reset first).
DecodeError decode_packet(LinkType link, std::span<const std::byte> frame,
                          PacketView& out) noexcept;

}  // namespace flowmark::observe
