#include "flowmark/scitags/flow_label.hpp"

#include <fmt/format.h>

#include "flowmark/core/flow_label_bits.hpp"

namespace flowmark::scitags {

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
  return label_bits::encode(experiment, activity, entropy);
}

DecodedLabel decode_flow_label(std::uint32_t label) noexcept {
  label &= 0xFFFFF;
  return {label_bits::experiment(label), label_bits::activity(label), label_bits::entropy(label)};
}

}  // namespace flowmark::scitags
