// flowmark::scitags — the Scitags IPv6 flow label: (experiment, activity, entropy) in 20 bits.
//
//   bit 19..18  entropy (2 bits)
//   bit 17..9   experiment id, 9 bits, bit-reversed (experiment bit 0 is label bit 17)
//   bit 8       entropy (1 bit)
//   bit 7..2    activity id, 6 bits, in order
//   bit 1..0    entropy (2 bits)
// The 5 entropy bits (0..31, packed high to low as above) are drawn once per flow.
//
//   FM_TRY(std::uint32_t label, encode_flow_label(2, 9, 0));   // 0x10024
//   auto [exp, act] = decode_flow_label(label);
#pragma once

#include <cstdint>

#include "flowmark/core/flow_label_bits.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::scitags {

inline constexpr std::uint32_t kMaxLabelExperiment = 511;
inline constexpr std::uint32_t kMaxLabelActivity = 63;
inline constexpr std::uint32_t kMaxEntropy = 31;
// The label bits that carry the experiment and activity.
inline constexpr std::uint32_t kFlowLabelSemanticMask = label_bits::kSemanticMask;

// Errc::kInvalidArgument when experiment > 511, activity > 63 or entropy > 31, saying why.
Result<std::uint32_t> encode_flow_label(std::uint32_t experiment, std::uint32_t activity,
                                        std::uint32_t entropy);

struct DecodedLabel {
  std::uint32_t experiment = 0;
  std::uint32_t activity = 0;
  std::uint32_t entropy = 0;
};
// Only the low 20 bits of `label` are read.
DecodedLabel decode_flow_label(std::uint32_t label) noexcept;

}  // namespace flowmark::scitags
