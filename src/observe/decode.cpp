// Packet decoding: link layer → IP → transport, in place over the captured bytes.
//
// Every step takes the frame's base pointer, the offset of its header and the end of the
// bytes it may read, and checks `end - off` against the fixed size it needs before any
// load; headers are read with big-endian byte loads (compilers fold them into one load
// and a byte swap), so nothing is copied and nothing is allocated. The common case
// (Ethernet → IPv4 → TCP/UDP) takes one switch per layer.
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "flowmark/observe/packet.hpp"

namespace flowmark::observe {
namespace {

using Byte = std::uint8_t;

inline std::uint16_t be16(const Byte* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
inline std::uint32_t be32(const Byte* p) noexcept {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 |
         std::uint32_t{p[3]};
}

constexpr std::uint16_t kEtherIpv4 = 0x0800, kEtherIpv6 = 0x86dd, kEther8021q = 0x8100,
                        kEther8021ad = 0x88a8, kEtherQinQ = 0x9100, kEtherMpls = 0x8847,
                        kEtherMplsMulticast = 0x8848;

constexpr std::size_t kEthernetHeader = 14, kSllHeader = 16, kSll2Header = 20, kNullHeader = 4;
constexpr std::size_t kIpv4MinHeader = 20, kIpv6Header = 40;
constexpr std::size_t kMaxExtensions = 16;

// IPv6 next-header values the extension walk understands.
constexpr Byte kHopByHop = 0, kRouting = 43, kFragment = 44, kAuth = 51, kNoNextHeader = 59,
               kDestOptions = 60;

// Where an IPv6 extension-header walk stopped.
struct Ipv6Walk {
  std::size_t off = 0;  // of the upper-layer header (valid when has_l4)
  Byte proto = 0;       // upper-layer protocol (59 when there is none)
  bool has_l4 = false;  // false after a non-first fragment or next header 59
  bool fragment = false, more_fragments = false;
  std::uint16_t frag_offset = 0;
  std::uint32_t frag_id = 0;
};

constexpr Byte kScitagsOption = 0x1E;

// The options of a hop-by-hop or destination-options header (its bytes [off, off + len)):
// the first Scitags option of the right length (3 data bytes) goes into `out`, unless the
// packet already has one. A TLV that runs past the header ends the walk (no error: the
// header's own length is what the walk of the headers trusts).
void find_scitags_option(const Byte* d, std::size_t off, std::size_t len, Byte nh,
                         PacketView& out) noexcept {
  if (out.tag_where != PacketView::TagWhere::kNone) return;
  std::size_t i = off + 2;
  const std::size_t end = off + len;
  while (i < end) {
    const Byte type = d[i];
    if (type == 0) {  // Pad1
      ++i;
      continue;
    }
    if (end - i < 2 || end - i - 2 < d[i + 1]) return;
    const std::size_t data = d[i + 1];
    if (type == kScitagsOption && data == 3) {
      out.tag_where = nh == kHopByHop ? PacketView::TagWhere::kHopByHop
                                      : PacketView::TagWhere::kDestOptions;
      out.tag_experiment = be16(d + i + 2);
      out.tag_activity = d[i + 4];
      return;
    }
    i += 2 + data;
  }
}

// Walks the extension headers starting with `nh` at `off`, reading no byte at or past
// `end`. Shared by the outer packet and the packet quoted by an ICMPv6 error; `tags`: where
// the outer packet's Scitags option goes (null for a quoted packet).
DecodeError walk_ipv6_extensions(const Byte* d, std::size_t off, std::size_t end, Byte nh,
                                 Ipv6Walk& w, PacketView* tags = nullptr) noexcept {
  for (std::size_t count = 0;; ++count) {
    switch (nh) {
      case kHopByHop:
      case kRouting:
      case kDestOptions:
      case kAuth:
      case kFragment: break;
      case kNoNextHeader: w.proto = nh; return DecodeError::kNone;
      default:  // an upper-layer protocol
        w.proto = nh;
        w.off = off;
        w.has_l4 = true;
        return DecodeError::kNone;
    }
    if (count == kMaxExtensions) return DecodeError::kTooManyExtensions;
    // Every extension header is at least 8 octets long.
    if (end - off < 8) return DecodeError::kTruncatedExtension;
    std::size_t len = 8;
    if (nh == kFragment) {
      const std::uint16_t fo = be16(d + off + 2);
      // An atomic fragment (offset 0, M clear; RFC 6946) is a whole packet: only real
      // fragments are marked, so the flow table does not track ids that never recur.
      if ((fo & 0xfff9) != 0) {
        w.fragment = true;
        w.frag_offset = static_cast<std::uint16_t>(fo >> 3);
        w.more_fragments = (fo & 1) != 0;
        w.frag_id = be32(d + off + 4);
      }
      if (w.frag_offset != 0) {  // the transport header is in the first fragment only
        w.proto = d[off];
        return DecodeError::kNone;
      }
    } else if (nh == kAuth) {  // RFC 4302: length in 4-octet units, minus 2
      len = (std::size_t{d[off + 1]} + 2) * 4;
    } else {  // RFC 8200: length in 8-octet units, not counting the first 8
      len = (std::size_t{d[off + 1]} + 1) * 8;
    }
    if (end - off < len) return DecodeError::kTruncatedExtension;
    if (tags != nullptr && (nh == kHopByHop || nh == kDestOptions))
      find_scitags_option(d, off, len, nh, *tags);
    nh = d[off];
    off += len;
  }
}

constexpr bool has_ports(Byte proto) noexcept {
  return proto == kProtoTcp || proto == kProtoUdp || proto == kProtoSctp;
}

// The invoking packet an ICMP error quotes. It is cut short by design (RFC 792: IP header
// plus 8 octets; RFC 4443: as much as fits in the minimum MTU), so a cut here is no error
// of the outer packet: src stays null when the IP header (or, for IPv6, the extension
// headers up to the protocol) is missing, has_ports false when the 4 port bytes are.
void decode_quoted(const Byte* d, std::size_t off, std::size_t end, unsigned version,
                   QuotedPacket& q) noexcept {
  const Byte* ip = d + off;
  const std::size_t avail = end - off;
  std::size_t l4;
  Byte proto;
  if (version == 4) {
    if (avail < kIpv4MinHeader || ip[0] >> 4 != 4) return;
    const std::size_t ihl = std::size_t{ip[0] & 0x0fu} * 4;
    if (ihl < kIpv4MinHeader || ihl > avail) return;
    proto = ip[9];
    q.src = ip + 12;
    q.dst = ip + 16;
    q.proto = proto;
    if ((be16(ip + 6) & 0x1fff) != 0) return;  // a non-first fragment carries no ports
    l4 = off + ihl;
  } else {
    if (avail < kIpv6Header || ip[0] >> 4 != 6) return;
    Ipv6Walk w;
    if (walk_ipv6_extensions(d, off + kIpv6Header, end, ip[6], w) != DecodeError::kNone) return;
    proto = w.proto;
    q.src = ip + 8;
    q.dst = ip + 24;
    q.proto = proto;
    if (!w.has_l4) return;
    l4 = w.off;
  }
  if (!has_ports(proto) || end - l4 < 4) return;
  q.sport = be16(d + l4);
  q.dport = be16(d + l4 + 2);
  q.has_ports = true;
}

constexpr bool is_icmpv4_error(Byte type) noexcept {
  // Destination unreachable, source quench, redirect, time exceeded, parameter problem.
  return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

DecodeError decode_transport(const Byte* d, std::size_t off, std::size_t end,
                             PacketView& out) noexcept {
  out.l4_offset = static_cast<std::uint32_t>(off);
  const Byte* p = d + off;
  const std::size_t avail = end - off;
  out.l4 = p;
  out.l4_captured = static_cast<std::uint32_t>(avail);
  // The transport bytes the IP header states (a jumbogram's length is unknown here: then
  // the captured ones).
  const std::size_t stated_end = std::size_t{out.ip_offset} + out.ip_length;
  const std::size_t stated = stated_end > off ? stated_end - off : avail;
  switch (out.proto) {
    case kProtoTcp: {
      // The whole fixed header, not just the flags byte: a TCP segment cut before its
      // window and checksum is a snap length too short to count it as TCP.
      if (avail < 20) return DecodeError::kTruncatedL4;
      if (p[12] >> 4 < 5) return DecodeError::kBadTcpHeaderLength;
      out.sport = be16(p);
      out.dport = be16(p + 2);
      out.tcp_flags = p[13];
      out.has_ports = true;
      const std::size_t header = std::size_t{p[12]} >> 4 << 2;
      out.payload_length = static_cast<std::uint32_t>(stated > header ? stated - header : 0);
      return DecodeError::kNone;
    }
    case kProtoUdp:
      if (avail < 8) return DecodeError::kTruncatedL4;
      out.sport = be16(p);
      out.dport = be16(p + 2);
      out.has_ports = true;
      out.payload_length = static_cast<std::uint32_t>(stated > 8 ? stated - 8 : 0);
      return DecodeError::kNone;
    case kProtoSctp:
      if (avail < 12) return DecodeError::kTruncatedL4;
      out.sport = be16(p);
      out.dport = be16(p + 2);
      out.has_ports = true;
      return DecodeError::kNone;
    case kProtoIcmp:
    case kProtoIcmpv6: {
      // ICMP under IPv6 (or ICMPv6 under IPv4) is not a control message of that IP
      // version: leave it an opaque protocol.
      const unsigned version = out.proto == kProtoIcmp ? 4 : 6;
      if (version != out.ip_version) return DecodeError::kNone;
      if (avail < 8) return DecodeError::kTruncatedL4;
      out.icmp_type = p[0];
      out.icmp_code = p[1];
      out.icmp_error = version == 4 ? is_icmpv4_error(p[0]) : (p[0] >= 1 && p[0] <= 4);
      if (out.icmp_error) decode_quoted(d, off + 8, end, version, out.quoted);
      return DecodeError::kNone;
    }
    default: return DecodeError::kNone;
  }
}

DecodeError decode_ipv4(const Byte* d, std::size_t off, std::size_t n, PacketView& out) noexcept {
  const Byte* ip = d + off;
  const std::size_t avail = n - off;
  if (avail < kIpv4MinHeader) return DecodeError::kTruncatedIp;
  const std::size_t ihl = std::size_t{ip[0] & 0x0fu} * 4;
  if (ihl < kIpv4MinHeader || ihl > avail) return DecodeError::kBadIpHeaderLength;
  const std::uint16_t total = be16(ip + 2);
  if (total < ihl) return DecodeError::kBadIpTotalLength;
  out.ip_version = 4;
  out.ip_offset = static_cast<std::uint32_t>(off);
  out.ip_length = total;
  out.ttl = ip[8];
  out.tos = ip[1];
  out.proto = ip[9];
  out.src_addr = ip + 12;
  out.dst_addr = ip + 16;
  const std::uint16_t frag = be16(ip + 6);
  out.ip_reserved_flag = (frag & 0x8000) != 0;
  if ((frag & 0x3fff) != 0) [[unlikely]] {
    out.is_fragment = true;
    out.more_fragments = (frag & 0x2000) != 0;
    out.frag_offset = frag & 0x1fff;
    out.frag_id = be16(ip + 4);
    if (out.frag_offset != 0) return DecodeError::kNone;
  }
  // The transport header ends where the IP packet does: bytes past the total length are
  // Ethernet padding, not transport data.
  const std::size_t end = off + (total < avail ? total : avail);
  return decode_transport(d, off + ihl, end, out);
}

DecodeError decode_ipv6(const Byte* d, std::size_t off, std::size_t n, PacketView& out) noexcept {
  const Byte* ip = d + off;
  const std::size_t avail = n - off;
  if (avail < kIpv6Header) return DecodeError::kTruncatedIp;
  const std::uint16_t payload = be16(ip + 4);
  out.ip_version = 6;
  out.ip_offset = static_cast<std::uint32_t>(off);
  out.ip_length = kIpv6Header + payload;
  out.ttl = ip[7];
  const std::uint32_t first_word = be32(ip);
  out.tos = static_cast<std::uint8_t>(first_word >> 20);
  out.flow_label = first_word & 0xfffff;
  out.src_addr = ip + 8;
  out.dst_addr = ip + 24;
  // Payload length 0 is a jumbogram (RFC 2675) or a large segment captured before the
  // NIC split it (Linux BIG TCP): the captured bytes are the only bound then.
  const std::size_t end =
      payload == 0 || kIpv6Header + payload > avail ? n : off + kIpv6Header + payload;
  const Byte nh = ip[6];
  if (nh == kProtoTcp || nh == kProtoUdp) [[likely]] {
    out.proto = nh;
    return decode_transport(d, off + kIpv6Header, end, out);
  }
  Ipv6Walk w;
  const DecodeError e = walk_ipv6_extensions(d, off + kIpv6Header, end, nh, w, &out);
  out.proto = w.proto;
  out.is_fragment = w.fragment;
  out.more_fragments = w.more_fragments;
  out.frag_offset = w.frag_offset;
  out.frag_id = w.frag_id;
  if (e != DecodeError::kNone || !w.has_l4) return e;
  return decode_transport(d, w.off, end, out);
}

// `version`: what the link layer announced (4 or 6), or 0 to go by the version nibble.
DecodeError decode_ip(const Byte* d, std::size_t off, std::size_t n, unsigned version,
                      PacketView& out) noexcept {
  if (off >= n) return DecodeError::kTruncatedIp;
  const unsigned nibble = d[off] >> 4;
  if (version != 0 && nibble != version) return DecodeError::kBadIpVersion;
  if (nibble == 4) return decode_ipv4(d, off, n, out);
  if (nibble == 6) return decode_ipv6(d, off, n, out);
  return DecodeError::kBadIpVersion;
}

// Everything after an EtherType: VLAN tags, an MPLS label stack, then IP.
DecodeError decode_ethertype(const Byte* d, std::size_t off, std::size_t n, std::uint16_t type,
                             PacketView& out) noexcept {
  if (type == kEtherIpv4) [[likely]]
    return decode_ip(d, off, n, 4, out);
  // Each tag consumes 4 bytes, so the frame length bounds this loop.
  while (type == kEther8021q || type == kEther8021ad || type == kEtherQinQ) {
    if (n - off < 4) return DecodeError::kTruncatedVlan;
    if (out.vlan_count < 2) out.vlan[out.vlan_count++] = be16(d + off) & 0x0fff;
    type = be16(d + off + 2);
    off += 4;
  }
  switch (type) {
    case kEtherIpv4: return decode_ip(d, off, n, 4, out);
    case kEtherIpv6: return decode_ip(d, off, n, 6, out);
    case kEtherMpls:
    case kEtherMplsMulticast: {
      for (;;) {
        if (n - off < 4) return DecodeError::kTruncatedMpls;
        const std::uint32_t entry = be32(d + off);
        off += 4;
        if (out.mpls_count < 255) ++out.mpls_count;
        if ((entry & 0x100) != 0) break;  // bottom of stack
      }
      // MPLS does not say what it carries; the version nibble is the usual guess. Anything
      // else (a pseudowire control word, Ethernet over MPLS) is not IP to us.
      if (off >= n) return DecodeError::kTruncatedIp;
      const unsigned nibble = d[off] >> 4;
      if (nibble != 4 && nibble != 6) return DecodeError::kNotIp;
      return decode_ip(d, off, n, nibble, out);
    }
    default: return DecodeError::kNotIp;
  }
}

// BSD loopback address families meaning IPv4 (AF_INET) and IPv6 (AF_INET6 differs
// between BSDs: 24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS).
DecodeError decode_family(const Byte* d, std::size_t n, std::uint32_t family,
                          PacketView& out) noexcept {
  switch (family) {
    case 2: return decode_ip(d, kNullHeader, n, 4, out);
    case 24:
    case 28:
    case 30: return decode_ip(d, kNullHeader, n, 6, out);
    default: return DecodeError::kNotIp;
  }
}

}  // namespace

std::string_view to_string(DecodeError e) noexcept {
  static constexpr std::array<std::string_view, static_cast<std::size_t>(DecodeError::kCount)>
      kNames = {"none",
                "unsupported_link",
                "truncated_link",
                "truncated_vlan",
                "truncated_mpls",
                "not_ip",
                "truncated_ip",
                "bad_ip_version",
                "bad_ip_header_length",
                "bad_ip_total_length",
                "truncated_extension",
                "too_many_extensions",
                "truncated_l4",
                "bad_tcp_header_length"};
  const auto i = static_cast<std::size_t>(e);
  return i < kNames.size() ? kNames[i] : std::string_view("unknown");
}

IpAddress PacketView::src() const noexcept {
  if (src_addr == nullptr) return {};
  if (ip_version == 4) return IpAddress::v4(be32(src_addr));
  in6_addr a;
  std::memcpy(&a, src_addr, sizeof a);
  return IpAddress::v6(a);
}

IpAddress PacketView::dst() const noexcept {
  if (dst_addr == nullptr) return {};
  if (ip_version == 4) return IpAddress::v4(be32(dst_addr));
  in6_addr a;
  std::memcpy(&a, dst_addr, sizeof a);
  return IpAddress::v6(a);
}

DecodeError decode_packet(LinkType link, std::span<const std::byte> frame,
                          PacketView& out) noexcept {
  // g++ turns `out = PacketView{}` into `rep stos`, whose start-up cost is about a third
  // of a whole Ethernet/IPv4/TCP decode; a memcpy of a constant becomes six vector stores.
  static_assert(std::is_trivially_copyable_v<PacketView>);
  static constexpr PacketView kEmpty{};
  std::memcpy(static_cast<void*>(&out), &kEmpty, sizeof out);
  const auto* d = reinterpret_cast<const Byte*>(frame.data());
  const std::size_t n = frame.size();
  switch (link) {
    case LinkType::kEthernet:
      if (n < kEthernetHeader) return DecodeError::kTruncatedLink;
      return decode_ethertype(d, kEthernetHeader, n, be16(d + 12), out);
    case LinkType::kLinuxSll:
      if (n < kSllHeader) return DecodeError::kTruncatedLink;
      return decode_ethertype(d, kSllHeader, n, be16(d + 14), out);
    case LinkType::kLinuxSll2:
      if (n < kSll2Header) return DecodeError::kTruncatedLink;
      return decode_ethertype(d, kSll2Header, n, be16(d), out);
    case LinkType::kRaw: return decode_ip(d, 0, n, 0, out);
    case LinkType::kIpv4: return decode_ip(d, 0, n, 4, out);
    case LinkType::kIpv6: return decode_ip(d, 0, n, 6, out);
    case LinkType::kNull: {
      if (n < kNullHeader) return DecodeError::kTruncatedLink;
      // Host order of the machine that wrote the capture, which need not be ours: a
      // family fits in 16 bits, so a value above that is the other byte order.
      std::uint32_t family;
      std::memcpy(&family, d, sizeof family);
      if (family > 0xffff) family = std::byteswap(family);
      return decode_family(d, n, family, out);
    }
    case LinkType::kLoop:
      if (n < kNullHeader) return DecodeError::kTruncatedLink;
      return decode_family(d, n, be32(d), out);
  }
  return DecodeError::kUnsupportedLink;
}

}  // namespace flowmark::observe
