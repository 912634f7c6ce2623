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

FlowHash flow_hash(LinkType link, std::span<const std::byte> frame) noexcept {
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

}  // namespace flowmark::observe
