#include "flowmark/observe/flow_hash.hpp"

#include <algorithm>
#include <cstring>

namespace flowmark::observe {
namespace {

std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h;
}

std::uint64_t hash_address(const std::uint8_t* a, std::size_t len) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::size_t i = 0; i < len; i += 4) {
    std::uint32_t w;
    std::memcpy(&w, a + i, 4);
    h = mix(h, w);
  }
  return h;
}

// Order-independent: the same value for (a, b) and (b, a).
std::uint32_t pair_hash(const std::uint8_t* a, const std::uint8_t* b, std::size_t len) noexcept {
  std::uint64_t ha = hash_address(a, len), hb = hash_address(b, len);
  if (ha > hb) std::swap(ha, hb);
  std::uint64_t h = mix(ha * 0xff51afd7ed558ccdULL, hb);
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return static_cast<std::uint32_t>(h);
}

}  // namespace

namespace {

std::uint16_t be16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

// The common frames without a decode: Ethernet (up to two VLAN tags), IPv4 or IPv6 carrying
// TCP, UDP or SCTP (right after the IPv6 header); 0 for anything else (ICMP errors must be
// looked into; extension headers may hide ICMPv6).
std::uint64_t quick_hash(LinkType link, std::span<const std::byte> frame) noexcept {
  constexpr std::uint64_t kTaken = std::uint64_t{1} << 32;
  if (link != LinkType::kEthernet) return 0;
  const auto* d = reinterpret_cast<const std::uint8_t*>(frame.data());
  const std::size_t n = frame.size();
  std::size_t at = 12;
  if (n < at + 2) return 0;
  std::uint16_t type = be16(d + at);
  for (int tags = 0; (type == 0x8100 || type == 0x88a8) && tags < 2; ++tags) {
    at += 4;
    if (n < at + 2) return 0;
    type = be16(d + at);
  }
  at += 2;
  if (type == 0x0800) {
    const std::uint8_t proto = n >= at + 20 ? d[at + 9] : 0;
    if ((d[at] >> 4) != 4 || (proto != 6 && proto != 17 && proto != 132)) return 0;
    return kTaken | pair_hash(d + at + 12, d + at + 16, 4);
  }
  if (type == 0x86dd) {
    if (n < at + 40 || (d[at] >> 4) != 6) return 0;
    const std::uint8_t next = d[at + 6];
    if (next != 6 && next != 17 && next != 132) return 0;
    return kTaken | pair_hash(d + at + 8, d + at + 24, 16);
  }
  return 0;
}

}  // namespace

namespace detail {

std::uint64_t quick_flow_hash(LinkType link, std::span<const std::byte> frame) noexcept {
  return quick_hash(link, frame);
}

FlowHash full_flow_hash(LinkType link, std::span<const std::byte> frame) noexcept {
  PacketView p;
  (void)decode_packet(link, frame, p);  // a short transport header still has its addresses
  const std::size_t len = p.ip_version == 6 ? 16 : 4;
  FlowHash h;
  if (p.src_addr == nullptr || p.dst_addr == nullptr || p.ip_version == 0) return h;
  h.hash = h.own = pair_hash(p.src_addr, p.dst_addr, len);
  if (p.icmp_error && p.quoted.src != nullptr && p.quoted.dst != nullptr) {
    h.hash = pair_hash(p.quoted.src, p.quoted.dst, len);
    h.quotes = true;
  }
  return h;
}

}  // namespace detail

}  // namespace flowmark::observe
