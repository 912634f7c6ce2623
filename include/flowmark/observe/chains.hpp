// flowmark::observe — the built-in chains, by pathspider's names: tcp ecn dscp mss tfo udp icmp
// evil (pathspider 2.0.1's record fields) and scitags (the IPv6 flow label and the Scitags
// extension-header option). Each is an ordinary Chain (chain.hpp); `basic` is the record
// itself. The fields, and where they differ from pathspider's, are listed in the README
// ("Chains") and flowmark-observe(1).
//
//   ChainOptions opts;
//   FM_TRY(auto names, parse_chain_list("basic,tcp,ecn"));     // or "all"
//   for (const auto& n : names) if (auto c = make_chain(n, opts)) observer.add_chain(std::move(c));
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/result.hpp"
#include "flowmark/observe/chain.hpp"

namespace flowmark::observe {

// Every chain name, in the order their fields are written.
inline constexpr std::array<std::string_view, 10> kChainNames = {
    "basic", "tcp", "ecn", "dscp", "mss", "tfo", "udp", "icmp", "evil", "scitags"};
inline constexpr std::string_view kDefaultChains = "basic,tcp";

// Names for the scitags chain's *_name fields (the registry is flowmark::scitags', which this
// module does not depend on); an empty result is an unknown id: the field is null.
struct ScitagsNames {
  std::function<std::optional<std::string>(std::uint32_t experiment)> experiment;
  std::function<std::optional<std::string>(std::uint32_t experiment, std::uint32_t activity)>
      activity;
};

struct ChainOptions {
  ScitagsNames names;
};

// "a,b,c" or "all" → the chains named, each once, in kChainNames order, `basic` always
// included. Errc::kInvalidArgument naming an unknown or empty name.
Result<std::vector<std::string>> parse_chain_list(std::string_view list);

// The chain called `name` (nullptr for "basic", which is the record itself).
std::unique_ptr<Chain> make_chain(std::string_view name, const ChainOptions& options = {});

// What the scitags chain learnt of a flow, from its state (Observer::chain_state).
struct ScitagsTag {
  enum class Source : std::uint8_t { kNone = 0, kFlowLabel, kHopByHop, kDestOptions };
  Source source = Source::kNone;
  std::uint16_t experiment = 0;
  std::uint8_t activity = 0;
};
ScitagsTag scitags_tag(const std::byte* scitags_state) noexcept;
// The first IPv6 flow label the scitags chain saw each way (0 where none was seen; a null
// state gives zeros), for the IPFIX export's flowLabelIPv6.
struct ScitagsLabels {
  std::uint32_t fwd = 0, rev = 0;
};
ScitagsLabels scitags_flow_labels(const std::byte* scitags_state) noexcept;
std::string_view to_string(ScitagsTag::Source s) noexcept;  // "flowlabel", "hbh", "dstopt"

}  // namespace flowmark::observe
