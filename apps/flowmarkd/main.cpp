// flowmarkd — the flow-marking service: sources find flows, backends mark and announce
// them. Reads /etc/flowmark/flowmark.toml, or flowd's own config (-c /etc/flowd/flowd.cfg),
// or flowd-go's (-c /etc/flowd-go/conf.yaml).
//
//   flowmarkd [-c FILE] [-d|--debug] [-f|--fg] [--version] [--check [--print]]
//
// Exit codes: flowmark's one table (core/exit_code.hpp): 0 stopped by SIGTERM/SIGINT (or
// --check passed), 2 usage error, 78 configuration error, and when it could not start the
// code of the cause (68 no such interface, 69 refused, 70 internal, 77 not permitted).
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/cli.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/log.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/daemon/service.hpp"

namespace {

using flowmark::kExitConfig;

// The exit code of a service that could not start: the cause's code, except that a value
// the service rejected came from the configuration file, not from the command line.
int start_failure_code(const flowmark::Error& e) {
  const int code = flowmark::exit_code_for(e);
  return code == flowmark::kExitUsage ? kExitConfig : code;
}

spdlog::level::level_enum level_of(std::string_view name) {
  if (name == "debug") return spdlog::level::debug;
  if (name == "warning") return spdlog::level::warn;
  if (name == "error") return spdlog::level::err;
  if (name == "off") return spdlog::level::off;
  return spdlog::level::info;
}

}  // namespace

static int flowmarkd_main(int argc, char** argv) {
  CLI::App app{"flowmarkd: the flow-marking service (sources → pipeline → backends)", "flowmarkd"};
  std::string config = std::string(flowmark::daemon::kDefaultConfigPath);
  bool debug = false, foreground = false, check = false, print = false;
  app.add_option("-c,--config", config,
                 "configuration file: TOML, flowd's KEY='value' format or flowd-go's "
                 "conf.yaml (detected)")
      ->capture_default_str();
  app.add_flag("-d,--debug", debug, "log debug messages");
  app.add_flag("-f,--fg", foreground,
               "run in the foreground (always the case; accepted for flowd's command line)");
  app.add_flag("--check", check, "validate the configuration and exit (0: valid)");
  app.add_flag("--print", print,
               "with --check: print the configuration as TOML (a flowd or flowd-go file's "
               "translation), the summary as comments");
  app.set_version_flag("--version", "flowmarkd " FLOWMARK_VERSION);
  app.footer(
      "Signals: SIGTERM/SIGINT stop (end events for live flows, backends drained), SIGHUP "
      "reloads the configuration (a bad one is rejected and the running one kept).\n\n" +
      flowmark::exit_code_help({
          {flowmark::kExitOk, "stopped by SIGTERM/SIGINT, or --check passed"},
          {flowmark::kExitUsage},
          {flowmark::kExitNoInterface, "at start: an interface the configuration names"},
          {flowmark::kExitUnavailable, "at start: a bind, a join, a hook"},
          {flowmark::kExitSoftware},
          {flowmark::kExitNoPermission, "at start"},
          {flowmark::kExitConfig, "the message names the file, the key and what is allowed"},
      }));
  if (auto rc = flowmark::apps::parse_command_line(app, argc, argv, "flowmarkd")) return *rc;
  (void)foreground;

  flowmark::init_logging("flowmarkd",
                         debug ? flowmark::LogLevel::kDebug : flowmark::LogLevel::kInfo);
  if (!std::filesystem::exists(config)) {
    spdlog::error(
        "no configuration at {}: give one with -c FILE (an example is in "
        "packaging/flowmark.toml, installed as /usr/share/doc/flowmark/flowmark.toml)",
        config);
    return kExitConfig;
  }
  auto doc = flowmark::daemon::ConfigDocument::load(config);
  if (!doc) {
    spdlog::error("{}", doc.error().message());
    return kExitConfig;
  }
  if (check) {
    // A translation's warnings start with the file's name and place already.
    for (const auto& w : doc->warnings()) {
      if (w.starts_with(doc->name())) {
        spdlog::warn("{}", w);
      } else {
        spdlog::warn("{}: {}", doc->name(), w);
      }
    }
    auto summary = flowmark::daemon::Service::check(*doc);
    if (!summary) {
      spdlog::error("{}", summary.error().message());
      return kExitConfig;
    }
    if (!print) {
      fmt::print("{}", *summary);
      return flowmark::kExitOk;
    }
    // The summary as comments: the output is a TOML file (`--print > flowmark.toml`).
    std::string_view rest = *summary;
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      const std::string_view line = rest.substr(0, nl);
      fmt::print("{}{}\n", line.empty() ? "#" : "# ", line);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
    }
    fmt::print("\n{}", doc->toml_text());
    return flowmark::kExitOk;
  }
  auto service = flowmark::daemon::Service::create(std::move(*doc), config);
  if (!service) {
    spdlog::error("{}", service.error().message());
    return start_failure_code(service.error());
  }
  // [service] log_level applies unless -d asked for debug.
  if (!debug) spdlog::set_level(level_of((*service)->log_level()));
  auto r = (*service)->run();
  if (!r) {
    spdlog::error("{}", r.error().message());
    return start_failure_code(r.error());
  }
  return flowmark::kExitOk;
}

int main(int argc, char** argv) {
  try {
    return flowmarkd_main(argc, argv);
  } catch (const std::exception& e) {  // a bug, not an input error: say so
    fmt::print(stderr, "flowmarkd: internal error: {}\n", e.what());
    return flowmark::kExitSoftware;
  }
}
