// The registry document (a file or an http(s):// download, so untrusted): Registry::parse on
// arbitrary bytes must return a value or an error, never crash; what it accepts must be
// consistent — every experiment and activity found again by id and by name, ids within the
// scitag limits, names resolving to their ids.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "flowmark/scitags/registry.hpp"

using namespace flowmark;
using namespace flowmark::scitags;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto reg = Registry::parse(text, "fuzz");
  if (!reg) {
    check(reg.error().code() == Errc::kMalformed);
    check(reg.error().message().starts_with("fuzz: "));
    return 0;
  }
  check(reg->source() == "fuzz");
  check(!reg->experiments().empty());
  check(reg->find_experiment(0u) == nullptr);
  check(!reg->resolve_experiment(""));
  for (const Experiment& exp : reg->experiments()) {
    check(exp.id >= 1 && exp.id <= kMaxScitagExperiment);
    check(!exp.name.empty());
    check(reg->find_experiment(exp.id) == &exp);
    check(reg->find_experiment(exp.name) == &exp);
    check(reg->experiment_id(exp.name) == exp.id);
    check(reg->experiment_name(exp.id) == exp.name);
    auto by_name = reg->resolve_experiment(exp.name);
    check(by_name && *by_name == exp.id);
    // A decimal id resolves to its experiment unless another experiment is named so.
    const std::string decimal = std::to_string(exp.id);
    const Experiment* named = reg->find_experiment(decimal);
    auto by_id = reg->resolve_experiment(decimal);
    check(by_id && *by_id == (named ? named->id : exp.id));
    check(reg->activity_name(exp.id, 0) == std::nullopt);
    for (const Activity& act : exp.activities) {
      check(act.id >= 1 && act.id <= kMaxScitagActivity);
      check(!act.name.empty());
      check(reg->activity_id(exp.id, act.name) == act.id);
      check(reg->activity_name(exp.id, act.id) == act.name);
      auto resolved = reg->resolve_activity(exp.id, act.name);
      check(resolved && *resolved == act.id);
      auto tag = make_scitag(exp.id, act.id);
      check(tag && *tag >= kMinScitag && *tag <= kMaxScitag);
      auto parts = split_scitag(*tag);
      check(parts && parts->first == exp.id && parts->second == act.id);
    }
  }
  return 0;
}
