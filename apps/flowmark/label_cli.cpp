// `flowmark label encode|decode`: the Scitags IPv6 flow label by hand.
#include <charconv>
#include <memory>
#include <optional>
#include <random>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/scitags/flow_label.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::apps {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;

struct LabelArgs {
  std::string experiment, activity, label, registry = "builtin";
  std::optional<std::uint32_t> entropy;
  bool json = false;
};

int usage_error(const std::string& message) {
  fmt::print(stderr, "flowmark: error: {}\n", message);
  return kExitUsage;
}

// Decimal, or hexadecimal with 0x.
std::optional<std::uint32_t> parse_label(std::string_view s) {
  int base = 10;
  if (s.starts_with("0x") || s.starts_with("0X")) {
    s.remove_prefix(2);
    base = 16;
  }
  std::uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size() || v > 0xFFFFF)
    return std::nullopt;
  return v;
}

std::optional<std::uint32_t> parse_id(std::string_view s) {
  std::uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

int run_encode(const LabelArgs& a) {
  // Numeric ids are taken as they are (the label may carry unregistered ids); names go
  // through the registry.
  auto exp_id = parse_id(a.experiment);
  auto act_id = parse_id(a.activity);
  std::optional<scitags::Registry> reg;
  if (!exp_id || !act_id) {
    auto loaded = scitags::Registry::load(a.registry);
    if (!loaded) return usage_error(loaded.error().message());
    reg = std::move(*loaded);
  }
  auto exp = exp_id ? Result<std::uint32_t>(*exp_id) : reg->resolve_experiment(a.experiment);
  if (!exp) return usage_error(exp.error().message());
  auto act = act_id ? Result<std::uint32_t>(*act_id) : reg->resolve_activity(*exp, a.activity);
  if (!act) return usage_error(act.error().message());
  const std::uint32_t entropy = a.entropy ? *a.entropy
                                          : std::uniform_int_distribution<std::uint32_t>(
                                                0, 31)(*std::make_unique<std::random_device>());
  auto label = scitags::encode_flow_label(*exp, *act, entropy);
  if (!label) return usage_error(label.error().message());
  if (a.json) {
    fmt::print(R"({{"label":{},"hex":"0x{:05x}","experiment":{},"activity":{},"entropy":{}}})"
               "\n",
               *label, *label, *exp, *act, entropy);
  } else {
    fmt::print("{} 0x{:05x}\n", *label, *label);
  }
  return kExitOk;
}

int run_decode(const LabelArgs& a) {
  auto label = parse_label(a.label);
  if (!label)
    return usage_error(
        fmt::format("'{}' is not a flow label (0..1048575, or 0x0..0xfffff)", a.label));
  const auto d = scitags::decode_flow_label(*label);
  auto reg = scitags::Registry::load(a.registry);
  std::string exp_name, act_name;
  if (reg) {
    exp_name = std::string(reg->experiment_name(d.experiment).value_or(""));
    act_name = std::string(reg->activity_name(d.experiment, d.activity).value_or(""));
  }
  if (a.json) {
    fmt::print(R"({{"label":{},"experiment":{},"activity":{},"entropy":{},)"
               R"("experiment_name":"{}","activity_name":"{}"}})"
               "\n",
               *label, d.experiment, d.activity, d.entropy, exp_name, act_name);
  } else {
    fmt::print("experiment {}{} activity {}{} entropy {}\n", d.experiment,
               exp_name.empty() ? "" : " (" + exp_name + ")", d.activity,
               act_name.empty() ? "" : " (" + act_name + ")", d.entropy);
  }
  return kExitOk;
}

}  // namespace

Command add_label_command(CLI::App& parent) {
  auto args = std::make_shared<LabelArgs>();
  auto* label = parent.add_subcommand("label", "encode or decode a Scitags IPv6 flow label");
  label->require_subcommand(1);
  label->footer(
      "Layout (20 bits): entropy 19-18, experiment 17-9 bit-reversed, entropy 8, activity 7-2, "
      "entropy 1-0.\nExit codes: 0 success, 2 usage error (bad id, name or label).");
  auto* enc = label->add_subcommand("encode", "experiment and activity (ids or names) to a label");
  enc->add_option("EXP", args->experiment, "experiment id or registry name")->required();
  enc->add_option("ACT", args->activity, "activity id or registry name")->required();
  enc->add_option("--entropy", args->entropy, "the 5 entropy bits, 0..31 (default: random)")
      ->check(CLI::Range(0, 31));
  auto* dec = label->add_subcommand("decode", "a label (decimal or 0x hex) to its ids");
  dec->add_option("LABEL", args->label, "the flow label")->required();
  for (auto* sub : {enc, dec}) {
    sub->add_option("--registry", args->registry, "registry: builtin, a file or a URL");
    sub->add_flag("--json", args->json, "print one JSON object");
  }
  return {label, [args, enc] { return enc->parsed() ? run_encode(*args) : run_decode(*args); }};
}

}  // namespace flowmark::apps
