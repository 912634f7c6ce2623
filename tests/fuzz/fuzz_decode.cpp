// Captured frames: the packet decoder over every link type, and the observer's fast path
// (quick_decode) against it. The first input byte picks the link type, the rest is the
// frame, which ends exactly where libFuzzer's buffer does, so ASan reports any read past it.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "flowmark/observe/packet.hpp"
#include "observe/quick_decode.hpp"

using namespace flowmark::observe;

namespace {

constexpr std::array kLinks = {LinkType::kEthernet, LinkType::kLinuxSll, LinkType::kLinuxSll2,
                               LinkType::kRaw,      LinkType::kIpv4,     LinkType::kIpv6,
                               LinkType::kNull,     LinkType::kLoop};

// True when [p, p + len) lies inside the frame.
bool inside(std::span<const std::byte> frame, const std::uint8_t* p, std::size_t len) {
  const auto* begin = reinterpret_cast<const std::uint8_t*>(frame.data());
  return p >= begin && len <= frame.size() &&
         p - begin <= static_cast<std::ptrdiff_t>(frame.size() - len);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const LinkType link = kLinks[data[0] % kLinks.size()];
  const auto frame = std::as_bytes(std::span(data + 1, size - 1));
  // The observer's fast path agrees with the full decoder wherever it takes a frame.
  if (!flowmark::observe::detail::quick_decode_agrees(link, frame, false) ||
      !flowmark::observe::detail::quick_decode_agrees(link, frame, true))
    __builtin_trap();
  PacketView p;
  const DecodeError e = decode_packet(link, frame, p);
  if (e >= DecodeError::kCount || to_string(e) == "unknown") __builtin_trap();
  if (p.vlan_count > 2) __builtin_trap();
  if (e != DecodeError::kNone) return 0;

  // A decoded packet's pointers and offsets all lie inside the frame.
  if (p.ip_version != 4 && p.ip_version != 6) __builtin_trap();
  const std::size_t alen = p.ip_version == 4 ? 4 : 16;
  if (!inside(frame, p.src_addr, alen) || !inside(frame, p.dst_addr, alen)) __builtin_trap();
  if (p.ip_offset + (p.ip_version == 4 ? 20u : 40u) > frame.size()) __builtin_trap();
  if (p.l4_offset > frame.size()) __builtin_trap();
  if (p.has_ports && (p.l4_offset == 0 || p.l4_offset + 4 > frame.size())) __builtin_trap();
  if (p.is_fragment && p.frag_offset != 0 && (p.has_ports || p.l4_offset != 0)) __builtin_trap();
  if (p.quoted.src != nullptr &&
      (!p.icmp_error || !inside(frame, p.quoted.src, alen) || !inside(frame, p.quoted.dst, alen)))
    __builtin_trap();
  if (p.quoted.has_ports && p.quoted.src == nullptr) __builtin_trap();
  if (p.src().size() != alen || p.dst().size() != alen) __builtin_trap();

  // Decoding is a pure function of the bytes.
  PacketView again;
  again.has_ports = true;
  if (decode_packet(link, frame, again) != e || again.sport != p.sport ||
      again.has_ports != p.has_ports || again.proto != p.proto)
    __builtin_trap();
  return 0;
}
