// Flow keys of the observer: the packet's own view (source first) and the canonical,
// direction-free form (endpoints ordered low/high), with the hash both directions share.
#pragma once

#include <cstdint>
#include <cstring>

#include "flowmark/core/address.hpp"

namespace flowmark::observe::detail {

// Key flags.
inline constexpr std::uint8_t kKeyV6 = 1;        // IPv6 (else IPv4)
inline constexpr std::uint8_t kKeyPortless = 2;  // 3-tuple: no ports in the key

// Address bytes as two words, IPv4 in the first four bytes and zeroes after them — the
// layout of IpAddress::bytes(), so that keys compare against stored records word by word.
struct AddrWords {
  std::uint64_t w0 = 0, w1 = 0;
  friend bool operator==(const AddrWords&, const AddrWords&) = default;
};

inline AddrWords load_addr(const std::uint8_t* p, bool v6) noexcept {
  AddrWords a;
  if (v6) {
    std::memcpy(&a.w0, p, 8);
    std::memcpy(&a.w1, p + 8, 8);
  } else {
    std::memcpy(&a.w0, p, 4);
  }
  return a;
}

inline IpAddress make_address(const AddrWords& a, bool v6) noexcept {
  if (v6) {
    in6_addr in;
    std::memcpy(&in, &a.w0, 8);
    std::memcpy(reinterpret_cast<std::uint8_t*>(&in) + 8, &a.w1, 8);
    return IpAddress::v6(in);
  }
  in_addr in;
  std::memcpy(&in, &a.w0, 4);
  return IpAddress::v4(in);
}

// One packet's key, in the packet's direction, with what the table needs precomputed.
// Build it with make_key() from values in registers: it is then written with whole-word
// stores that later whole-word loads can forward from (a 4-byte load over two 2-byte
// stores still in the store buffer stalls for the stores to retire).
struct PacketKey {
  AddrWords src, dst;
  std::uint64_t tail_fwd = 0;  // sp | dp << 16 | proto << 32 | version << 40 | vlan << 48
  std::uint64_t tail_rev = 0;  // the same with the ports swapped
  std::uint32_t hash = 0;      // of the canonical key: both directions hash alike
  std::uint8_t flags = 0;      // kKeyV6 | kKeyPortless

  // Ports, protocol and VLAN (0 unless the table keys on it) are read from tail_fwd: the
  // key is written once per packet, with as few stores as it can.
  std::uint16_t sport() const noexcept { return static_cast<std::uint16_t>(tail_fwd); }
  std::uint16_t dport() const noexcept { return static_cast<std::uint16_t>(tail_fwd >> 16); }
  std::uint8_t proto() const noexcept { return static_cast<std::uint8_t>(tail_fwd >> 32); }
  std::uint16_t vlan() const noexcept { return static_cast<std::uint16_t>(tail_fwd >> 48); }
  bool v6() const noexcept { return flags & kKeyV6; }
  bool portless() const noexcept { return flags & kKeyPortless; }
  friend bool operator==(const PacketKey&, const PacketKey&) = default;
};

// The canonical key: endpoints ordered (address words, then port), low first. The order
// is a fixed total order on the stored bytes, which is all canonical form needs.
struct FlowKey {
  AddrWords lo, hi;
  std::uint16_t lo_port = 0, hi_port = 0, vlan = 0;
  std::uint8_t proto = 0, flags = 0;
  friend bool operator==(const FlowKey&, const FlowKey&) = default;
};
static_assert(sizeof(FlowKey) == 40);

inline bool src_is_low(const PacketKey& k) noexcept {
  if (k.src.w0 != k.dst.w0) return k.src.w0 < k.dst.w0;
  if (k.src.w1 != k.dst.w1) return k.src.w1 < k.dst.w1;
  return k.sport() <= k.dport();
}

inline FlowKey canonical(const PacketKey& k) noexcept {
  FlowKey f;
  const bool low = src_is_low(k);
  f.lo = low ? k.src : k.dst;
  f.hi = low ? k.dst : k.src;
  f.lo_port = low ? k.sport() : k.dport();
  f.hi_port = low ? k.dport() : k.sport();
  f.vlan = k.vlan();
  f.proto = k.proto();
  f.flags = k.flags;
  return f;
}

// 64×64→128 multiply folded (the wyhash mixer): fast, and every input bit reaches the
// output.
inline std::uint64_t mum(std::uint64_t a, std::uint64_t b) noexcept {
  __extension__ using U128 = unsigned __int128;
  const U128 r = static_cast<U128>(a) * b;
  return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

// One endpoint (address and port) mixed into 64 bits.
inline std::uint64_t hash_endpoint(const AddrWords& a, std::uint16_t port) noexcept {
  return mum(a.w0 ^ 0xa0761d6478bd642full,
             a.w1 ^ 0xe7037ed1a0b428dbull ^ (std::uint64_t{port} << 40));
}

// The flow's hash: its two endpoints combined by addition, which does not depend on their
// order, so that both directions hash alike without first putting the endpoints in
// canonical order (a comparison whose outcome is a coin toss per packet).
inline std::uint32_t hash_flow(const AddrWords& a, std::uint16_t a_port, const AddrWords& b,
                               std::uint16_t b_port, std::uint16_t vlan, std::uint8_t proto,
                               std::uint8_t flags) noexcept {
  const std::uint64_t misc =
      std::uint64_t{vlan} << 32 | std::uint64_t{proto} << 48 | std::uint64_t{flags} << 56;
  const std::uint64_t h =
      mum((hash_endpoint(a, a_port) + hash_endpoint(b, b_port)) ^ misc, 0x1d8e4e27c47d124full);
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

inline std::uint32_t hash_key(const FlowKey& k) noexcept {
  return hash_flow(k.lo, k.lo_port, k.hi, k.hi_port, k.vlan, k.proto, k.flags);
}

// make_key() for a key whose addresses are already in place (written straight from the
// packet: no copy through temporaries).
inline void finish_key(PacketKey& k, std::uint16_t sport, std::uint16_t dport, std::uint16_t vlan,
                       std::uint8_t proto, std::uint8_t flags) noexcept {
  k.flags = flags;
  const std::uint64_t rest = std::uint64_t{proto} << 32 |
                             std::uint64_t{(flags & kKeyV6) ? 6u : 4u} << 40 |
                             std::uint64_t{vlan} << 48;
  k.tail_fwd = std::uint64_t{sport} | std::uint64_t{dport} << 16 | rest;
  k.tail_rev = std::uint64_t{dport} | std::uint64_t{sport} << 16 | rest;
  k.hash = hash_flow(k.src, sport, k.dst, dport, vlan, proto, flags);
}

inline PacketKey make_key(const AddrWords& src, const AddrWords& dst, std::uint16_t sport,
                          std::uint16_t dport, std::uint16_t vlan, std::uint8_t proto,
                          std::uint8_t flags) noexcept {
  PacketKey k;
  k.src = src;
  k.dst = dst;
  finish_key(k, sport, dport, vlan, proto, flags);
  return k;
}

// A non-first fragment's key: the fragment id with the addresses and protocol.
struct FragKey {
  AddrWords src, dst;
  std::uint32_t id = 0;
  std::uint16_t vlan = 0;
  std::uint8_t proto = 0, flags = 0;
  friend bool operator==(const FragKey&, const FragKey&) = default;
};
static_assert(sizeof(FragKey) == 40);

inline std::uint32_t hash_frag(const FragKey& k) noexcept {
  std::uint64_t h = mum(k.src.w0 ^ 0xa0761d6478bd642full, k.dst.w0 ^ 0xe7037ed1a0b428dbull);
  h ^= mum(k.src.w1 ^ 0x8ebc6af09c88c6e3ull, k.dst.w1 ^ 0x589965cc75374cc3ull);
  const std::uint64_t misc = std::uint64_t{k.id} | std::uint64_t{k.vlan} << 32 |
                             std::uint64_t{k.proto} << 48 | std::uint64_t{k.flags} << 56;
  h = mum(h ^ misc, 0x1d8e4e27c47d124full);
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

// Maps a 32-bit hash onto [0, n) without a division (Lemire's multiply-shift), so table
// sizes need not be powers of two.
inline std::size_t reduce(std::uint32_t h, std::size_t n) noexcept {
  return static_cast<std::size_t>((std::uint64_t{h} * n) >> 32);
}

}  // namespace flowmark::observe::detail
