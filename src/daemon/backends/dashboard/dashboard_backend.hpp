// flowmark::daemon — the `dashboard` backend: a web page served by flowmarkd that shows what
// the collector receives, live: totals, throughput by experiment over time (stacked), the top
// site pairs and the latest flows. civetweb (the HTTP server prometheus-cpp already brings)
// serves the page's files, read once at start from `static_dir`, and GET /api/summary, the
// JSON the page polls (see dashboard_state.hpp for its shape and bounds).
//
//   [backend.dashboard]
//   type = "dashboard"
//   listen = "127.0.0.1:8750"      # ADDRESS:PORT; port 0 picks a free one (logged)
//   static_dir = "/usr/share/flowmark/dashboard"
//   window = 15                    # minutes of throughput shown
//   bin = 10                       # seconds per throughput bin
//   latest = 50                    # latest flows listed
//   top_pairs = 10                 # site pairs listed
//   max_open_flows = 1000000       # open flows remembered, as [service] max_live_flows
//
// Each event becomes a collector::Record (the names of the registry as it was when the backend
// was created, the service's current site map); its bytes
// are the volume the flow carried since its previous event (Record volume − previous_volume).
// Threads: on_event on the backend's worker thread, requests on civetweb's two threads; the
// state has its own mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "daemon/backends/dashboard/dashboard_state.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/plugin.hpp"

struct mg_context;
struct mg_connection;

namespace flowmark::daemon {

class DashboardBackend final : public Backend {
 public:
  struct Options {
    Endpoint listen;
    std::string static_dir;
    dashboard::DashboardLimits limits;
    std::function<Micros()> clock = now_micros;
  };

  DashboardBackend(Options options, std::string name, ServiceContext& context);
  ~DashboardBackend() override;

  static Result<std::unique_ptr<DashboardBackend>> from_config(Section& section,
                                                               ServiceContext& context);

  Result<void> start() override;
  void on_event(const FlowEvent& event) noexcept override;
  std::chrono::milliseconds tick_interval() const noexcept override {
    return std::chrono::seconds(1);
  }
  void on_tick() noexcept override;
  void stop() noexcept override;

  std::uint16_t port() const noexcept { return port_; }  // after start()
  const dashboard::DashboardState& state() const noexcept { return state_; }

 private:
  struct File {
    std::string type;  // Content-Type
    std::string body;
  };
  Result<void> load_files();
  static int on_request(mg_connection* conn);
  int serve(mg_connection* conn);

  Options options_;
  std::string name_;
  std::string where_;
  // A copy: a reload replaces (and frees) the service's registry while an unchanged backend
  // keeps running on its worker thread.
  std::shared_ptr<const scitags::Registry> registry_;
  std::shared_ptr<collector::SiteMapHandle> sites_;
  dashboard::DashboardState state_;
  std::map<std::string, File, std::less<>> files_;  // by URI path ("/app.js")
  mg_context* server_ = nullptr;
  std::uint16_t port_ = 0;
  std::atomic<std::uint64_t>*served_, *not_found_, *refused_;
  std::atomic<std::uint64_t>*untracked_, *folded_pairs_, *folded_series_, *failed_;
};

Result<void> register_dashboard_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
