// The `kernel-events` source of flowmarkd: TCP connections of this host reported by the
// kernel the moment they change state — a BPF program on the tracepoint
// sock:inet_sock_set_state sends each connection entering ESTABLISHED (start) and leaving
// it (end) through a ring buffer, which the service's event loop reads when its fd becomes
// readable. No polling: a start reaches the pipeline within microseconds of the handshake,
// where the `sockets` source (and flowd) see it up to one period later.
//
//   [source.kernel]
//   type = "kernel-events"
//   ports = ["443", "2811-2812"]        # only these (source or destination) ports; in the kernel
//   cgroup = "/sys/fs/cgroup/system.slice/xrootd.service"   # only its sockets (and below)
//   internal_networks = ["10.0.0.0/8"]  # destinations never announced (user space)
//   skip_private = true                 # nor private, loopback, link-local ones
//   experiment = "atlas"                # id or registry name; absent: classification rules
//   activity = "perfSONAR"
//
// Both sides of a connection are reported: the one that connected and the one that
// accepted (local end = source). Connections open before the source started are not
// announced (their end is skipped: reason "existing"), as with flowd. A start carries no
// byte counts; an end carries the tcp_sock's bytes_acked (sent) and bytes_received.
// Needs CAP_BPF and CAP_PERFMON (root) and a kernel with BTF.
//
// Handshake marking: when the service also runs a flowlabel backend and this source has a
// fixed experiment and activity, the kernel puts each selected IPv6 connection in that
// backend's flow map itself (bpf/kevents.bpf.c) — at tcp_connect() on the active side, so
// the SYN is labelled; at ESTABLISHED on the passive side, so the first data is (the SYN-ACK
// is not) — with the label the start event would give it. The backend keeps that entry when
// the start arrives, erases it at the end; the kernel removes it when the socket closes
// (a refused connect never reaches ESTABLISHED).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/common/tracker.hpp"
#include "flowmark/bpf/kernel_events.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/plugin.hpp"

namespace flowmark::daemon::kernel_events {

struct KernelEventsOptions {
  std::vector<sockets::PortRange> ports;  // empty: every port
  std::string cgroup;                     // empty: every cgroup
  std::vector<Network> internal_networks;
  bool skip_private = true;
  sockets::Tag tag;
  std::size_t ring_bytes = 256 * 1024;
};

Result<KernelEventsOptions> parse_kernel_events_options(Section& section,
                                                        const scitags::Registry* registry);

class KernelEventsSource : public Source {
 public:
  KernelEventsSource(std::string name, KernelEventsOptions options, Counters& counters,
                     std::shared_ptr<FlowMapShelf> flow_maps = nullptr);
  ~KernelEventsSource() override;

  Result<void> start(EventLoop& loop, FlowSink& sink) override;
  void stop() noexcept override;

  // Connections announced whose end has not come yet.
  std::size_t tracked() const noexcept { return live_.size(); }

 private:
  struct Metrics;
  void on_kernel_event(const bpf::TcpStateEvent& e);
  void drain() noexcept;
  void publish() noexcept;
  std::optional<bpf::TcpStateFilter::Premark> premark_of(LentFlowMap& map);

  std::string name_;
  KernelEventsOptions options_;
  std::unique_ptr<Metrics> metrics_;
  std::shared_ptr<FlowMapShelf> flow_maps_;
  std::optional<bpf::TcpStateWatcher> watcher_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  std::optional<EventLoop::TimerId> timer_;
  int fd_ = -1;
  std::unordered_map<std::uint64_t, scitags::FlowEvent> live_;  // by socket cookie
  bpf::TcpStateCounters published_;
  std::uint64_t read_errors_ = 0;
};

}  // namespace flowmark::daemon::kernel_events

namespace flowmark::daemon {
// Adds "kernel-events" to the source factories (called from the builtin list).
Result<void> register_kernel_events_source(SourceFactories& factories);
}  // namespace flowmark::daemon
