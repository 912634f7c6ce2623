// `flowmark registry`: shows the registry of experiments and activities — the embedded
// copy, a file or an http(s):// URL — as a table or as one JSON document.
//
//   flowmark registry                                   # the embedded copy, as a table
//   flowmark registry --source https://www.scitags.org/api.json --json
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::apps {
namespace {

// sysexits.h values, as the other commands use them.
constexpr int kExitOk = 0;
constexpr int kExitUsage = 2;
constexpr int kExitDataErr = 65;  // EX_DATAERR: the registry document is malformed
constexpr int kExitNoInput = 66;  // EX_NOINPUT: the source cannot be read or fetched
constexpr int kExitIoErr = 74;    // EX_IOERR: standard output failed

struct RegistryArgs {
  std::string source = "builtin";
  bool insecure = false;
  bool json = false;
  long timeout_seconds = 10;
};

int exit_code_for(const Error& error) {
  if (error.code() == Errc::kMalformed) return kExitDataErr;
  if (error.code() == Errc::kInvalidArgument || error.code() == Errc::kUnsupported)
    return kExitUsage;
  return kExitNoInput;
}

// The registry in the published shape, so the output can be saved and used as --source.
std::string as_json(const scitags::Registry& reg) {
  std::string out = "{\"experiments\":[";
  bool first_exp = true;
  for (const scitags::Experiment& exp : reg.experiments()) {
    out += first_exp ? "{\"expName\":" : ",{\"expName\":";
    first_exp = false;
    append_json_string(out, exp.name);  // names are valid UTF-8: the parser checked
    out += fmt::format(",\"expId\":{},\"activities\":[", exp.id);
    bool first_act = true;
    for (const scitags::Activity& act : exp.activities) {
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
std::string as_table(const scitags::Registry& reg) {
  std::string out = fmt::format("# registry {}", reg.source());
  if (!reg.modified().empty()) out += fmt::format(", modified {}", reg.modified());
  out += fmt::format(": {} experiments\n", reg.experiments().size());
  for (const scitags::Experiment& exp : reg.experiments()) {
    out += fmt::format("{:>4}  {}\n", exp.id, exp.name);
    for (const scitags::Activity& act : exp.activities)
      out += fmt::format("{:>10}  {}\n", act.id, act.name);
  }
  return out;
}

int run_registry(const RegistryArgs& args) {
  scitags::LoadOptions options;
  options.verify_tls = !args.insecure;
  options.timeout_seconds = args.timeout_seconds;
  auto reg = scitags::Registry::load(args.source, options);
  if (!reg) {
    fmt::print(stderr, "flowmark: error: {}\n", reg.error().message());
    return exit_code_for(reg.error());
  }
  const std::string text = args.json ? as_json(*reg) : as_table(*reg);
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    fmt::print(stderr, "flowmark: error: cannot write to standard output\n");
    return kExitIoErr;
  }
  return kExitOk;
}

}  // namespace

Command add_registry_command(CLI::App& parent) {
  auto args = std::make_shared<RegistryArgs>();
  CLI::App* app = parent.add_subcommand(
      "registry", "show the Scitags registry of experiments and activities (names and ids)");
  app->add_option("--source", args->source,
                  "where the registry comes from: a file, an http:// or https:// URL, or "
                  "builtin (the embedded copy of the public registry)")
      ->type_name("FILE|URL|builtin")
      ->capture_default_str();
  app->add_flag("--insecure", args->insecure,
                "do not verify the server certificate of an https:// source");
  app->add_option("--timeout", args->timeout_seconds,
                  "give up fetching a URL after this many seconds")
      ->check(CLI::Range(1L, 3600L))
      ->type_name("SECONDS")
      ->capture_default_str();
  app->add_flag("--json", args->json,
                "print the registry as one JSON document (the published format)");
  app->footer(
      "Exit status: 0 ok, 2 usage error, 65 malformed registry, 66 source cannot be read or "
      "fetched.\nScitags combine the two ids as experiment << 6 | activity (65..65535).\n");
  return Command{app, [args] { return run_registry(*args); }};
}

}  // namespace flowmark::apps
