#include "flowmark/scitags/registry_command.hpp"

#include <fmt/format.h>

#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::scitags {

int registry_load_exit_code(const Error& error) noexcept {
  if (error.code() == Errc::kMalformed) return kExitDataErr;
  if (error.code() == Errc::kInvalidArgument || error.code() == Errc::kUnsupported)
    return kExitUsage;
  return kExitNoInput;
}

namespace {

// The registry in the published shape, so the output can be saved and used as --source.
std::string as_json(const Registry& reg) {
  std::string out = "{\"experiments\":[";
  bool first_exp = true;
  for (const Experiment& exp : reg.experiments()) {
    out += first_exp ? "{\"expName\":" : ",{\"expName\":";
    first_exp = false;
    append_json_string(out, exp.name);  // names are valid UTF-8: the parser checked
    out += fmt::format(",\"expId\":{},\"activities\":[", exp.id);
    bool first_act = true;
    for (const Activity& act : exp.activities) {
      out += first_act ? "{\"activityName\":" : ",{\"activityName\":";
      first_act = false;
      append_json_string(out, act.name);
      out += fmt::format(",\"activityId\":{}}}", act.id);
    }
    out += "]}";
  }
  out += "],\"version\":1";
  if (!reg.modified().empty()) {
    out += ",\"modified\":";
    append_json_string(out, reg.modified());
  }
  out += "}\n";
  return out;
}

// One line per experiment (id, name), its activities indented below it.
std::string as_table(const Registry& reg) {
  std::string out = fmt::format("# registry {}", reg.source());
  if (!reg.modified().empty()) out += fmt::format(", modified {}", reg.modified());
  out += fmt::format(": {} experiments\n", reg.experiments().size());
  for (const Experiment& exp : reg.experiments()) {
    out += fmt::format("{:>4}  {}\n", exp.id, exp.name);
    for (const Activity& act : exp.activities) out += fmt::format("{:>10}  {}\n", act.id, act.name);
  }
  return out;
}

}  // namespace

int run_registry_show(const RegistryShowOptions& args, std::FILE* out) {
  LoadOptions options;
  options.verify_tls = !args.insecure;
  options.timeout_seconds = args.timeout_seconds;
  auto reg = Registry::load(args.source, options);
  if (!reg) {
    fmt::print(stderr, "flowmark: error: {}\n", reg.error().message());
    return registry_load_exit_code(reg.error());
  }
  const std::string text = args.json ? as_json(*reg) : as_table(*reg);
  if (std::fwrite(text.data(), 1, text.size(), out) != text.size() || std::fflush(out) != 0) {
    fmt::print(stderr, "flowmark: error: cannot write to standard output\n");
    return kExitIoErr;
  }
  return kExitOk;
}

std::string registry_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitUsage},
      {kExitDataErr, "the registry document"},
      {kExitNoInput, "the source cannot be read or fetched"},
      {kExitIoErr, "standard output"},
      {kExitInterrupted, "while fetching a URL"},
      {kExitTerminated, "while fetching a URL"},
  });
}

}  // namespace flowmark::scitags
