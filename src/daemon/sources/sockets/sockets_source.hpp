// The `sockets` source of flowmarkd: this host's TCP (and optionally UDP) connections, read
// from netlink sock_diag every `period` seconds and turned into start / end events by the
// ConnectionTracker. Replaces flowd's netstat, netlink and iperf plugins.
//
//   [source.conns]
//   type = "sockets"
//   period = 2.0                        # seconds between polls
//   protocols = ["tcp"]                 # "udp" too: connected UDP sockets
//   internal_networks = ["10.0.0.0/8"]  # destinations never announced
//   skip_private = true                 # nor private, loopback, link-local ones
//   announce_existing = false           # connections open at start-up stay silent
//   ports = ["443", "8000-8100"]        # only these (source or destination) ports
//   experiment = "atlas"                # id or registry name; 0: classification rules
//   activity = "perfSONAR"
//   preset = "iperf"                    # ports 5201 and a random (exp, act) per flow...
//   choices = ["2:1", "atlas:perfSONAR"]  # ...from this list
//
// UDP has no connection states: a connected UDP socket (one with a peer) starts when first
// seen and ends when it vanishes or is disconnected (kernel state CLOSE); unconnected UDP
// sockets, like listeners, have no destination and are skipped.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "daemon/common/connection_options.hpp"
#include "daemon/common/tracker.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/plugin.hpp"
#include "flowmark/daemon/section.hpp"
#include "flowmark/netclient/sock_diag.hpp"

namespace flowmark::daemon::sockets {

struct SocketsOptions {
  double period_seconds = 2.0;
  bool tcp = true;
  bool udp = false;
  TrackerOptions tracker;
};

// Reads the keys above (not `type`; the caller finish()es the section). Names of
// experiments and activities are resolved through `registry` (null: ids only).
Result<SocketsOptions> parse_sockets_options(Section& section, const scitags::Registry* registry);

class SocketsSource : public Source {
 public:
  // `name` labels the counters ("conns" for [source.conns]).
  SocketsSource(std::string name, SocketsOptions options, Counters& counters);
  ~SocketsSource() override;

  Result<void> start(EventLoop& loop, FlowSink& sink) override;
  void stop() noexcept override;

  // One poll now (the timer calls it; so may tests). False when a dump failed.
  bool poll();

  const ConnectionTracker& tracker() const noexcept { return tracker_; }
  const SocketsOptions& options() const noexcept { return options_; }

 private:
  struct Metrics;
  void publish();

  std::string name_;
  SocketsOptions options_;
  std::unique_ptr<Metrics> metrics_;
  ConnectionTracker tracker_;
  std::optional<SockDiag> diag_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  std::optional<EventLoop::TimerId> timer_;
  TrackerStats published_;  // the tracker's stats already added to the counters
  SockDiagStats diag_published_;
  std::uint64_t errors_ = 0;
  bool baseline_logged_ = false;
};

}  // namespace flowmark::daemon::sockets

namespace flowmark::daemon {
// Adds "sockets" to the source factories (called from the builtin list).
Result<void> register_sockets_source(SourceFactories& factories);
}  // namespace flowmark::daemon
