#include "flowmark/scitags/flow_label.hpp"

#include <fmt/format.h>

namespace flowmark::scitags {
namespace {
constexpr std::uint32_t reverse9(std::uint32_t v) noexcept {
  std::uint32_t r = 0;
  for (int i = 0; i < 9; ++i) r |= ((v >> i) & 1U) << (8 - i);
  return r;
}
}  // namespace

Result<std::uint32_t> encode_flow_label(std::uint32_t experiment, std::uint32_t activity,
                                        std::uint32_t entropy) {
  if (experiment > kMaxLabelExperiment)
    return fail(
        Errc::kInvalidArgument,
        fmt::format("experiment {} does not fit the flow label (9 bits: 0..511)", experiment));
  if (activity > kMaxLabelActivity)
    return fail(Errc::kInvalidArgument,
                fmt::format("activity {} does not fit the flow label (6 bits: 0..63)", activity));
  if (entropy > kMaxEntropy)
    return fail(Errc::kInvalidArgument,
                fmt::format("entropy {} is out of range (5 bits: 0..31)", entropy));
  return ((entropy >> 3) & 0x3U) << 18 | reverse9(experiment) << 9 | ((entropy >> 2) & 1U) << 8 |
         activity << 2 | (entropy & 0x3U);
}

DecodedLabel decode_flow_label(std::uint32_t label) noexcept {
  label &= 0xFFFFF;
  return {reverse9((label >> 9) & 0x1FF), (label >> 2) & 0x3F,
          ((label >> 18) & 0x3U) << 3 | ((label >> 8) & 1U) << 2 | (label & 0x3U)};
}

}  // namespace flowmark::scitags
