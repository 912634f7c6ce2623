// flowmark::scitags — the registry of experiments and activities (flowd's FLOW_MAP_API).
//
// The registry JSON as the Scitags initiative publishes it:
//   {"experiments":[{"expName":"atlas","expId":2,
//                    "activities":[{"activityName":"default","activityId":1}, ...]}, ...],
//    "version":1, "modified":"<iso time>"}
// An embedded copy of the public registry is the default, so a site with no internet
// starts; a file or an http(s):// URL (libcurl, loaded at the first fetch; certificate
// verified unless told otherwise) may replace it. Names map case-sensitively to ids and back; the
// combined "scitag" integer used by storage systems is exp << 6 | act.
//
//   FM_TRY(auto reg, Registry::load("https://www.scitags.org/api.json"));
//   auto exp = reg.experiment_id("atlas");             // 2
//   auto act = reg.activity_id(2, "perfSONAR");         // 2
//   auto [e, a] = *split_scitag(130);                   // (2, 2)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmark/core/result.hpp"

namespace flowmark::scitags {

struct Activity {
  std::string name;
  std::uint32_t id = 0;
};

struct Experiment {
  std::string name;
  std::uint32_t id = 0;
  std::vector<Activity> activities;  // in the order of the document
};

struct LoadOptions {
  bool verify_tls = true;     // verify the server certificate for https:// sources
  long timeout_seconds = 10;  // whole transfer
};

class Registry {
 public:
  // The embedded copy of the public registry.
  static const Registry& builtin();
  // `source`: a file path, an http:// or https:// URL, or "builtin".
  static Result<Registry> load(std::string_view source, const LoadOptions& options = {});
  // Parses a registry document. Errors (Errc::kMalformed) name the source and the path of
  // the bad element: "registry.json: experiments[3].activities[0].activityId: expected a
  // non-negative integer, got \"x\"".
  static Result<Registry> parse(std::string_view json, std::string_view source_name);

  const std::vector<Experiment>& experiments() const noexcept { return experiments_; }
  std::string_view source() const noexcept { return source_; }
  std::string_view modified() const noexcept { return modified_; }

  const Experiment* find_experiment(std::uint32_t id) const noexcept;
  const Experiment* find_experiment(std::string_view name) const noexcept;
  std::optional<std::uint32_t> experiment_id(std::string_view name) const noexcept;
  std::optional<std::uint32_t> activity_id(std::uint32_t experiment,
                                           std::string_view name) const noexcept;
  std::optional<std::string_view> experiment_name(std::uint32_t id) const noexcept;
  std::optional<std::string_view> activity_name(std::uint32_t experiment,
                                                std::uint32_t activity) const noexcept;

  // "atlas" or "2" → 2; "perfSONAR" or "2" → 2 (within that experiment). The error says
  // which names exist.
  Result<std::uint32_t> resolve_experiment(std::string_view name_or_id) const;
  Result<std::uint32_t> resolve_activity(std::uint32_t experiment,
                                         std::string_view name_or_id) const;

 private:
  std::vector<Experiment> experiments_;
  std::string source_;
  std::string modified_;
};

// The limits of a scitag (and so of registry ids): 10 bits of experiment, 6 of activity.
inline constexpr std::uint32_t kMaxScitagExperiment = 1023;
inline constexpr std::uint32_t kMaxScitagActivity = 63;
inline constexpr std::uint32_t kMinScitag = (1u << 6) | 1u;  // 65: (1, 1)
inline constexpr std::uint32_t kMaxScitag = (kMaxScitagExperiment << 6) | kMaxScitagActivity;

// exp << 6 | act; experiment 1..1023, activity 1..63 (valid scitags: 65..65535).
Result<std::uint32_t> make_scitag(std::uint32_t experiment, std::uint32_t activity);
Result<std::pair<std::uint32_t, std::uint32_t>> split_scitag(std::uint32_t scitag);

}  // namespace flowmark::scitags
