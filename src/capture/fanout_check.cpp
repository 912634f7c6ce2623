#include "fanout_check.hpp"

#include <algorithm>
#include <cstring>

namespace flowmark::capture {
namespace {

constexpr std::uint8_t kSyn = 0x02, kAck = 0x10;

std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
  h *= 0xFF51AFD7ED558CCDULL;
  return h ^ (h >> 33);
}

// One endpoint: address bytes and port.
struct End {
  const std::uint8_t* addr;
  std::size_t len;
  std::uint16_t port;
  bool operator<(const End& o) const noexcept {
    const int c = std::memcmp(addr, o.addr, len);
    return c != 0 ? c < 0 : port < o.port;
  }
};

std::uint64_t hash_end(std::uint64_t h, const End& e) noexcept {
  for (std::size_t i = 0; i < e.len; i += 4) {
    std::uint32_t w = 0;
    std::memcpy(&w, e.addr + i, 4);
    h = mix(h, w);
  }
  return mix(h, e.port);
}

}  // namespace

FanoutCheck::FanoutCheck() : slots_(new std::atomic<std::uint64_t>[kSlots]) {
  for (std::size_t i = 0; i < kSlots; ++i) slots_[i].store(0, std::memory_order_relaxed);
}

void FanoutCheck::see(std::size_t worker, observe::LinkType link,
                      std::span<const std::byte> frame) noexcept {
  const auto* p = reinterpret_cast<const std::uint8_t*>(frame.data());
  std::size_t n = frame.size(), ip = 0;
  if (link == observe::LinkType::kEthernet) {
    if (n < 14) return;
    const unsigned type = p[12] << 8 | p[13];
    if (type != 0x0800 && type != 0x86DD) return;  // tagged frames are not looked at
    ip = 14;
  } else if (link != observe::LinkType::kRaw) {
    return;
  }
  if (n < ip + 20) return;
  std::size_t alen = 0, l4 = 0;
  const std::uint8_t* src = nullptr;
  if ((p[ip] >> 4) == 4) {
    // TCP, not a fragment (no more-fragments flag, offset 0)
    if (p[ip + 9] != 6 || ((p[ip + 6] & 0x3F) | p[ip + 7]) != 0) return;
    alen = 4;
    src = p + ip + 12;
    l4 = ip + (p[ip] & 0x0F) * 4u;
  } else if ((p[ip] >> 4) == 6) {
    if (n < ip + 40 || p[ip + 6] != 6) return;  // TCP right after the fixed header only
    alen = 16;
    src = p + ip + 8;
    l4 = ip + 40;
  } else {
    return;
  }
  if (n < l4 + 14) return;
  const std::uint8_t flags = p[l4 + 13];
  if ((flags & kSyn) == 0) return;
  End a{src, alen, static_cast<std::uint16_t>(p[l4] << 8 | p[l4 + 1])};
  End b{src + alen, alen, static_cast<std::uint16_t>(p[l4 + 2] << 8 | p[l4 + 3])};
  if (b < a) std::swap(a, b);
  const std::uint64_t h = hash_end(hash_end(alen, a), b);
  const std::uint64_t tag = h >> 32;
  auto& slot = slots_[h & (kSlots - 1)];
  if ((flags & kAck) == 0) {
    slot.store(tag << 8 | ((worker + 1) & 0xFF), std::memory_order_relaxed);
    return;
  }
  const std::uint64_t v = slot.load(std::memory_order_relaxed);
  if (v == 0 || (v >> 8) != tag) return;  // its SYN was not seen (or its slot was taken)
  handshakes_.fetch_add(1, std::memory_order_relaxed);
  if ((v & 0xFF) != ((worker + 1) & 0xFF)) splits_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace flowmark::capture
