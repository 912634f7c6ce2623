#include "flowmark/scitags/label_commands.hpp"

#include <charconv>
#include <memory>
#include <random>
#include <string_view>

#include <fmt/format.h>

#include "flowmark/core/exit_code.hpp"
#include "flowmark/scitags/flow_label.hpp"
#include "flowmark/scitags/registry.hpp"
#include "flowmark/scitags/registry_command.hpp"

namespace flowmark::scitags {
namespace {

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

}  // namespace

int run_label_encode(const LabelOptions& a, std::FILE* out) {
  // Numeric ids are taken as they are (the label may carry unregistered ids); names go
  // through the registry.
  auto exp_id = parse_id(a.experiment);
  auto act_id = parse_id(a.activity);
  std::optional<Registry> reg;
  if (!exp_id || !act_id) {
    auto loaded = Registry::load(a.registry);
    if (!loaded) {
      fmt::print(stderr, "flowmark: error: {}\n", loaded.error().message());
      return registry_load_exit_code(loaded.error());
    }
    reg = std::move(*loaded);
  }
  auto exp = exp_id ? Result<std::uint32_t>(*exp_id) : reg->resolve_experiment(a.experiment);
  if (!exp) return usage_error(exp.error().message());
  auto act = act_id ? Result<std::uint32_t>(*act_id) : reg->resolve_activity(*exp, a.activity);
  if (!act) return usage_error(act.error().message());
  const std::uint32_t entropy = a.entropy ? *a.entropy
                                          : std::uniform_int_distribution<std::uint32_t>(
                                                0, 31)(*std::make_unique<std::random_device>());
  auto label = encode_flow_label(*exp, *act, entropy);
  if (!label) return usage_error(label.error().message());
  if (a.json) {
    fmt::print(out,
               R"({{"label":{},"hex":"0x{:05x}","experiment":{},"activity":{},"entropy":{}}})"
               "\n",
               *label, *label, *exp, *act, entropy);
  } else {
    fmt::print(out, "{} 0x{:05x}\n", *label, *label);
  }
  return kExitOk;
}

int run_label_decode(const LabelOptions& a, std::FILE* out) {
  auto label = parse_label(a.label);
  if (!label)
    return usage_error(
        fmt::format("'{}' is not a flow label (0..1048575, or 0x0..0xfffff)", a.label));
  const auto d = decode_flow_label(*label);
  auto reg = Registry::load(a.registry);
  std::string exp_name, act_name;
  if (reg) {
    exp_name = std::string(reg->experiment_name(d.experiment).value_or(""));
    act_name = std::string(reg->activity_name(d.experiment, d.activity).value_or(""));
  }
  if (a.json) {
    fmt::print(out,
               R"({{"label":{},"experiment":{},"activity":{},"entropy":{},)"
               R"("experiment_name":"{}","activity_name":"{}"}})"
               "\n",
               *label, d.experiment, d.activity, d.entropy, exp_name, act_name);
  } else {
    fmt::print(out, "experiment {}{} activity {}{} entropy {}\n", d.experiment,
               exp_name.empty() ? "" : " (" + exp_name + ")", d.activity,
               act_name.empty() ? "" : " (" + act_name + ")", d.entropy);
  }
  return kExitOk;
}

std::string label_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitUsage, "a bad id, name or label"},
      {kExitDataErr, "encode: the --registry document (names need a registry)"},
      {kExitNoInput, "encode: the --registry source cannot be read or fetched"},
      {kExitInterrupted, "encode: while fetching a --registry URL"},
      {kExitTerminated, "encode: while fetching a --registry URL"},
  });
}

}  // namespace flowmark::scitags
