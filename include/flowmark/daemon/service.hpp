// flowmark::daemon — the service: builds sources and backends from a configuration, runs
// them around one pipeline on an event loop, and handles the signals and systemd
// notifications of its lifecycle.
//
//   SIGTERM / SIGINT  stop the sources, send end events for live flows, drain the
//                     backends, remove the FIFO, return 0
//   SIGHUP            reload the configuration: parts whose table changed are replaced
//                     (new backends adopt the live flows), the others keep running; a bad
//                     new configuration is rejected with its error and the old one kept;
//                     files of records backends are reopened
//   sd_notify         READY=1 once started, RELOADING=1 / READY=1 around a reload,
//                     STOPPING=1, WATCHDOG=1 at half the watchdog interval, STATUS=...
//
//   FM_TRY(auto doc, ConfigDocument::load(path));
//   FM_TRY(auto svc, Service::create(std::move(doc), path));
//   FM_TRY_VOID(svc->run());
#pragma once

#include <memory>
#include <string>

#include "flowmark/daemon/config.hpp"
#include "flowmark/daemon/counters.hpp"

namespace flowmark::daemon {

class Service {
 public:
  // Loads the registry, validates every table and creates every part (nothing is opened
  // yet). `config_path` is what a reload reads again ("" : no reload).
  static Result<std::unique_ptr<Service>> create(ConfigDocument doc, std::string config_path);
  ~Service();

  // Starts everything and runs until SIGTERM/SIGINT (or stop()). Errors at start name the
  // part that failed.
  Result<void> run();
  void stop() noexcept;

  Counters& counters() noexcept;
  // [service] log_level of the running configuration.
  const std::string& log_level() const noexcept;

  // Validates a configuration as create() would, without starting anything (--check).
  // Returns a summary for the user ("2 sources (pipe: named-pipe, ...), ...").
  static Result<std::string> check(const ConfigDocument& doc);

 private:
  struct Impl;
  explicit Service(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace flowmark::daemon
