// flowmarkd — the flow-marking service: sources find flows, backends mark and announce
// them. Reads /etc/flowmark/flowmark.toml, or flowd's own config (-c /etc/flowd/flowd.cfg).
//
//   flowmarkd [-c FILE] [-d|--debug] [-f|--fg] [--version] [--check [--print]]
//
// Exit codes: 0 stopped by SIGTERM/SIGINT (or --check passed), 1 could not start (the
// message names the part and what to do), 2 usage or configuration error.
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <string_view>

#include "flowmark/core/log.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/daemon/service.hpp"

namespace {

constexpr int kExitStart = 1;
constexpr int kExitConfig = 2;

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
                 "configuration file: TOML, or flowd's KEY='value' format (detected)")
      ->capture_default_str();
  app.add_flag("-d,--debug", debug, "log debug messages");
  app.add_flag("-f,--fg", foreground,
               "run in the foreground (always the case; accepted for flowd's command line)");
  app.add_flag("--check", check, "validate the configuration and exit (0: valid)");
  app.add_flag("--print", print,
               "with --check: print the configuration as TOML (a flowd file's translation), "
               "the summary as comments");
  app.set_version_flag("--version", "flowmarkd " FLOWMARK_VERSION);
  app.footer(
      "Signals: SIGTERM/SIGINT stop (end events for live flows, backends drained), SIGHUP "
      "reloads the configuration (a bad one is rejected and the running one kept).\n"
      "Exit codes: 0 stopped cleanly or --check passed, 1 could not start, 2 usage or "
      "configuration error.");
  CLI11_PARSE(app, argc, argv);
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
    for (const auto& w : doc->warnings()) spdlog::warn("{}: {}", doc->name(), w);
    auto summary = flowmark::daemon::Service::check(*doc);
    if (!summary) {
      spdlog::error("{}", summary.error().message());
      return kExitConfig;
    }
    if (!print) {
      fmt::print("{}", *summary);
      return 0;
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
    return 0;
  }
  auto service = flowmark::daemon::Service::create(std::move(*doc), config);
  if (!service) {
    spdlog::error("{}", service.error().message());
    return kExitConfig;
  }
  // [service] log_level applies unless -d asked for debug.
  if (!debug) spdlog::set_level(level_of((*service)->log_level()));
  auto r = (*service)->run();
  if (!r) {
    spdlog::error("{}", r.error().message());
    return kExitStart;
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return flowmarkd_main(argc, argv);
  } catch (const std::exception& e) {  // a bug, not an input error: say so
    fmt::print(stderr, "flowmarkd: internal error: {}\n", e.what());
    return 70;
  }
}
