// flowmark — the bit layout of the Scitags IPv6 flow label, for the encoders and decoders of
// every module (scitags' label commands and marking, observe's scitags chain):
//   bits 19-18 entropy · 17-9 experiment, bit-reversed · 8 entropy · 7-2 activity · 1-0 entropy
#pragma once

#include <array>
#include <cstdint>

namespace flowmark::label_bits {

// The label bits that carry the experiment and activity.
inline constexpr std::uint32_t kSemanticMask = 0x3FEFC;

constexpr std::uint32_t reverse9(std::uint32_t v) noexcept {
  std::uint32_t r = 0;
  for (int i = 0; i < 9; ++i) r |= ((v >> i) & 1U) << (8 - i);
  return r;
}
// reverse9 of every 9-bit value (the decoders run per packet).
inline constexpr auto kReverse9 = [] {
  std::array<std::uint16_t, 512> t{};
  for (std::uint32_t v = 0; v < 512; ++v) t[v] = static_cast<std::uint16_t>(reverse9(v));
  return t;
}();
constexpr std::uint32_t experiment(std::uint32_t label) noexcept {
  return kReverse9[(label >> 9) & 0x1FF];
}
constexpr std::uint32_t activity(std::uint32_t label) noexcept { return (label >> 2) & 0x3F; }
constexpr std::uint32_t entropy(std::uint32_t label) noexcept {
  return ((label >> 18) & 0x3U) << 3 | ((label >> 8) & 1U) << 2 | (label & 0x3U);
}
constexpr std::uint32_t encode(std::uint32_t experiment, std::uint32_t activity,
                               std::uint32_t entropy) noexcept {
  return ((entropy >> 3) & 0x3U) << 18 | reverse9(experiment) << 9 | ((entropy >> 2) & 1U) << 8 |
         activity << 2 | (entropy & 0x3U);
}

static_assert(encode(2, 9, 0) == 0x10024 && encode(3, 3, 0) == 0x3000C);

}  // namespace flowmark::label_bits
