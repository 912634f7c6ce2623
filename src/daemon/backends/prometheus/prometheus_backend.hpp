// flowmark::daemon — the `prometheus` backend: an HTTP exposition (prometheus-cpp's Exposer
// on civetweb) of per-flow TCP metrics (`flow_tcp_*`, scitags spec §7), of a collector's
// aggregate metrics (bytes, flows and open flows per experiment, activity and site pair) and
// of the service's own counters.
//
//   [backend.metrics]
//   type = "prometheus"
//   listen = "127.0.0.1:9000"   # ADDRESS:PORT or [IPV6]:PORT; port 0 picks a free one
//                               # (flowd bound every address; "0.0.0.0:9000" does that)
//   poll_interval = 5           # seconds between TcpInfo refreshes of live TCP flows
//   flow_metrics = true         # false: only the service counters and flowmark_live_flows
//                               # (and the aggregate metrics)
//   max_aggregate_series = 10000  # groups of the aggregate metrics; 0: none exported
//
// Everything is built at scrape time by one prometheus::Collectable from state the backend
// keeps itself, rather than from prometheus::Counter/Gauge objects in a Registry:
//  - tcp_info totals (bytes, segments, retransmissions) are absolute values read from the
//    kernel; a prometheus::Counter can only be incremented, so mirroring them would mean
//    computing deltas (and losing the value when a reader restarts at a lower number).
//  - The end of a flow removes all its series at once by erasing one map entry; there is no
//    Family::Remove per metric (14 calls, each a lock and a hash of the labels).
//  - on_event stays a map insert/erase under a short lock; the cost of formatting moves to
//    the scrape (every few seconds), which is where Prometheus pays it anyway.
//  - The service Counters are read with snapshot() at scrape time: no copies to keep in
//    step, and series a part registers later appear at the next scrape.
//
// Series: flow_tcp_{rtt,rtt_var,cwnd,ssthresh,bytes_sent,bytes_acked,bytes_received,segs_out,
// segs_in,retrans,pacing_rate,delivery_rate,mss,pmtu}{src,dst,exp,act,flow="sport:dport"} in
// base units (seconds, bytes, bytes/s, segments; HELP says which), the byte/segment/retrans
// totals typed counter, the rest gauge; a flow's series appear once its TcpInfo is known (no
// invented zeros) and all go at its end event. exp/act are the numeric ids. Then
// flowmark_live_flows and every series of the service Counters (kind → TYPE, labels as
// registered, one family per name).
//
// Aggregate metrics (aggregate_metrics.hpp: names, labels, the bound and what happens past
// it): each event's flow belongs to one group (experiment, activity, src_site, dst_site), fixed
// when the backend first sees the flow — from collector::make_record with the registry as it
// was when the backend was created and the site map current then. The group's bytes grow by
// max(0, volume − event.previous_volume) at every event (the pipeline says what it forwarded
// before); its flows by one at a start event, and at the first event of a flow whose start the
// backend did not see (an ongoing or end event of a flow it does not know: adopted at a
// reload, or started before the backend was); its open flows are the flows seen and not yet
// ended (never negative). A start for a known 5-tuple with another start time is a new flow.
//
// Memory: the backend keeps every live flow the pipeline tells it of (as many as [service]
// max_live_flows): about 110 bytes each with flow_metrics off — what a collector should set —
// and about 900 with it on (the event, its labels and TcpInfo), measured with 1,000,000
// IPv6 flows.
//
// IPv6 listen addresses need a civetweb built with IPv6; Debian 12's is not, and start()
// then says so instead of failing with civetweb's "possible problem binding to port".
//
// Threads: on_event/on_tick run on the backend's worker thread, Collect() on civetweb's
// threads; the flow map is guarded by one mutex, and the TcpInfo reader is called without it.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "daemon/backends/prometheus/aggregate_metrics.hpp"
#include "flowmark/collector/site_map.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/plugin.hpp"

namespace prometheus {
class Exposer;
}

namespace flowmark::daemon {

// The seam for fresh TCP state: given a live TCP flow (as its start event described it),
// return its current tcp_info, or nullopt when it cannot be found (the flow keeps its last
// values). Called on the backend's worker thread, once per live TCP flow every
// poll_interval. The service plugs the netlink sock_diag (INET_DIAG_INFO) lookup in here;
// empty by default, in which case values come only from the events' TcpInfo.
using TcpInfoReader = std::function<std::optional<scitags::TcpInfo>(const FlowEvent&)>;

class PrometheusBackend final : public Backend {
 public:
  struct Options {
    Endpoint listen{IpAddress::v4(0x7f000001), 9000};
    std::chrono::seconds poll_interval{5};
    bool flow_metrics = true;
    TcpInfoReader reader;
    // Exported at each scrape (may be null). Must outlive the backend.
    const Counters* counters = nullptr;
    // Groups of the aggregate metrics at most (past it: the "other" group); 0: no aggregate
    // metrics at all.
    std::size_t max_aggregate_series = 10000;
    // Names of experiments and activities for the aggregate labels (null: ids only).
    std::shared_ptr<const scitags::Registry> registry;
    // Site names for the aggregate labels (null: no sites, "" everywhere).
    std::shared_ptr<collector::SiteMapHandle> sites;
  };

  // "[backend.NAME]", used in error messages.
  PrometheusBackend(Options options, std::string where = "[backend.prometheus]");
  ~PrometheusBackend() override;

  // Reads listen, poll_interval, flow_metrics and max_aggregate_series; the reader is the
  // service's. Keeps a copy of the context's registry (the service replaces its own at a
  // reload, while a backend whose section did not change keeps running) and its site map
  // handle.
  static Result<std::unique_ptr<PrometheusBackend>> from_config(Section& section,
                                                                ServiceContext& context,
                                                                TcpInfoReader reader = {});

  // Binds the HTTP port. "cannot listen on 127.0.0.1:9000: Address already in use ..." when
  // it cannot.
  Result<void> start() override;
  void on_event(const FlowEvent& event) noexcept override;
  // poll_interval when there is a reader and flow metrics are on, else 0 (no ticks).
  std::chrono::milliseconds tick_interval() const noexcept override;
  void on_tick() noexcept override;
  void stop() noexcept override;

  // The port bound by start() (useful with port 0); 0 before start().
  std::uint16_t port() const noexcept { return port_; }
  // Live flows known to the backend.
  std::size_t live_flows() const;
  // A copy of the aggregate metrics (nullopt when max_aggregate_series is 0).
  std::optional<AggregateMetrics> aggregates() const;
  // The connections the last stop() made to the port to wake civetweb's accept thread out of
  // its poll (each reached a listener); 0 before any stop().
  std::size_t stop_knocks() const noexcept { return stop_knocks_; }

  // Text form of listen for civetweb: "127.0.0.1:9000", "[::1]:9000".
  static std::string civetweb_address(const Endpoint& e);
  // Parses "ADDRESS:PORT" / "[ADDRESS]:PORT" with port 0 allowed (an IP address, no names).
  static Result<Endpoint> parse_listen(std::string_view text);

 private:
  class State;  // the flow map and the Collectable

  Options options_;
  std::string where_;
  std::shared_ptr<State> state_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // destroyed before state_ goes
  std::uint16_t port_ = 0;
  std::size_t stop_knocks_ = 0;
};

// Registers type "prometheus". The overload with a reader is how the service plugs in its
// sock_diag lookup.
Result<void> register_prometheus_backend(BackendFactories& factories);
Result<void> register_prometheus_backend(BackendFactories& factories, TcpInfoReader reader);

}  // namespace flowmark::daemon
