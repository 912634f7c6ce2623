#include "daemon/sources/kernel_events/kernel_events_source.hpp"

#include <sys/epoll.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/common/connection_options.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/scitags/flow_label.hpp"

namespace flowmark::daemon::kernel_events {

using scitags::FlowEvent;
using scitags::FlowState;

Result<KernelEventsOptions> parse_kernel_events_options(Section& s,
                                                        const scitags::Registry* registry) {
  KernelEventsOptions o;
  FM_TRY(o.ports, sockets::parse_ports(s));
  FM_TRY(o.cgroup, s.string("cgroup", ""));
  if (!o.cgroup.empty() && !o.cgroup.starts_with('/')) {
    return s.error("cgroup", fmt::format("'{}': give the absolute path of a cgroup v2 "
                                         "directory, e.g. /sys/fs/cgroup/system.slice",
                                         o.cgroup));
  }
  FM_TRY(o.internal_networks, s.networks("internal_networks"));
  FM_TRY(o.skip_private, s.boolean("skip_private", true));
  FM_TRY(o.tag, sockets::parse_tag(s, registry));
  FM_TRY(auto kib, s.integer("ring_kib", 256, 4, 1 << 20));
  if ((kib & (kib - 1)) != 0) return s.error("ring_kib", fmt::format("{}: a power of two", kib));
  o.ring_bytes = static_cast<std::size_t>(kib) * 1024;
  return o;
}

struct KernelEventsSource::Metrics {
  std::atomic<std::uint64_t>& starts;
  std::atomic<std::uint64_t>& ends;
  std::atomic<std::uint64_t>& skipped_internal;
  std::atomic<std::uint64_t>& skipped_existing;
  std::atomic<std::uint64_t>& skipped_port;
  std::atomic<std::uint64_t>& skipped_cgroup;
  std::atomic<std::uint64_t>& lost;
  std::atomic<std::uint64_t>& tracked;
  std::atomic<std::uint64_t>& premarked;
  std::atomic<std::uint64_t>& premark_full;
  std::atomic<std::uint64_t>& premark_skipped;
  std::atomic<std::uint64_t>& premark_removed;
  std::atomic<std::uint64_t>& handshake_marked;

  static Metrics make(Counters& c, const std::string& name) {
    const Labels src{{"source", name}};
    auto with = [&](std::string k, std::string v) {
      Labels l = src;
      l.emplace_back(std::move(k), std::move(v));
      return l;
    };
    constexpr std::string_view kEvents = "flowmark_kernel_events_total";
    constexpr std::string_view kEventsHelp = "Events of the kernel-events source, by state";
    constexpr std::string_view kSkipped = "flowmark_kernel_events_skipped_total";
    constexpr std::string_view kSkippedHelp =
        "TCP state changes not announced, by reason (port and cgroup: in the kernel)";
    constexpr std::string_view kHandshake = "flowmark_kernel_events_handshake_total";
    constexpr std::string_view kHandshakeHelp =
        "Connections put in the flowlabel backend's map by the kernel before their first "
        "packet (marked), refused (full: map at capacity; skipped: internal, non-global or "
        "IPv4 destination), entries removed by the kernel when the socket closed, and "
        "SYNs received whose SYN-ACK was put in the handshake map (syn_ack)";
    return Metrics{
        c.counter(kEvents, with("state", "start"), kEventsHelp),
        c.counter(kEvents, with("state", "end"), kEventsHelp),
        c.counter(kSkipped, with("reason", "internal"), kSkippedHelp),
        c.counter(kSkipped, with("reason", "existing"), kSkippedHelp),
        c.counter(kSkipped, with("reason", "port"), kSkippedHelp),
        c.counter(kSkipped, with("reason", "cgroup"), kSkippedHelp),
        c.counter("flowmark_kernel_events_lost_total", src,
                  "Kernel records lost: the ring buffer was full (raise ring_kib)"),
        c.gauge("flowmark_kernel_events_tracked", src, "Connections announced, end pending"),
        c.counter(kHandshake, with("outcome", "marked"), kHandshakeHelp),
        c.counter(kHandshake, with("outcome", "full"), kHandshakeHelp),
        c.counter(kHandshake, with("outcome", "skipped"), kHandshakeHelp),
        c.counter(kHandshake, with("outcome", "removed"), kHandshakeHelp),
        c.counter(kHandshake, with("outcome", "syn_ack"), kHandshakeHelp),
    };
  }
};

KernelEventsSource::KernelEventsSource(std::string name, KernelEventsOptions options,
                                       Counters& counters, std::shared_ptr<FlowMapShelf> flow_maps)
    : name_(std::move(name)),
      options_(std::move(options)),
      metrics_(std::make_unique<Metrics>(Metrics::make(counters, name_))),
      flow_maps_(std::move(flow_maps)) {}

// The label of every entropy value for the source's tag, and the destinations the kernel
// leaves alone (what on_kernel_event() does not announce).
std::optional<bpf::TcpStateFilter::Premark> KernelEventsSource::premark_of(LentFlowMap& map) {
  const auto& tag = options_.tag;
  if (tag.experiment == 0 || tag.activity == 0) {
    spdlog::info(
        "[source.{}] the handshake of connections is not marked: backend {} could mark it, "
        "but the label comes from the classification rules (give experiment and activity "
        "here)",
        name_, map.backend);
    return std::nullopt;
  }
  bpf::TcpStateFilter::Premark p;
  p.map = {map.flows.get(), map.fill.get(), map.capacity, map.handshakes.get()};
  for (std::uint32_t e = 0; e < p.labels.size(); ++e) {
    auto label = scitags::encode_flow_label(tag.experiment, tag.activity, e);
    if (!label) {
      spdlog::warn("[source.{}] the handshake of connections is not marked: {}", name_,
                   label.error().message());
      return std::nullopt;
    }
    p.labels[e] = *label;
  }
  p.ext_header = static_cast<bpf::ExtHeader>(map.ext_header);
  p.experiment = static_cast<std::uint16_t>(tag.experiment);
  p.activity = static_cast<std::uint8_t>(tag.activity);
  p.skip = options_.internal_networks;
  if (options_.skip_private) {
    // IpAddress::is_global()'s IPv6 ranges.
    for (const char* n :
         {"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "::ffff:0:0/96"}) {
      if (auto net = Network::parse(n)) p.skip.push_back(*net);
    }
  }
  return p;
}

KernelEventsSource::~KernelEventsSource() { stop(); }

Result<void> KernelEventsSource::start(EventLoop& loop, FlowSink& sink) {
  if (watcher_)
    return fail(Errc::kInvalidArgument, fmt::format("[source.{}] started twice", name_));
  bpf::TcpStateFilter filter;
  for (const auto& r : options_.ports) filter.ports.emplace_back(r.first, r.last);
  filter.cgroup = options_.cgroup;
  filter.ring_bytes = options_.ring_bytes;
  // A flowlabel backend's map (lent, the fds ours until the watcher has its own copies).
  std::optional<LentFlowMap> lent = flow_maps_ ? flow_maps_->take() : std::nullopt;
  if (lent) filter.premark = premark_of(*lent);
  auto w = bpf::TcpStateWatcher::open(filter,
                                      [this](const bpf::TcpStateEvent& e) { on_kernel_event(e); });
  if (!w)
    return std::unexpected(std::move(w).error().with_context(fmt::format("[source.{}]", name_)));
  watcher_.emplace(std::move(*w));
  loop_ = &loop;
  sink_ = &sink;
  fd_ = watcher_->fd();
  if (auto r = loop.add_fd(fd_, EPOLLIN, [this](std::uint32_t) { drain(); }); !r) {
    watcher_.reset();
    return r;
  }
  // The kernel's counters (records lost, filtered) into the service's, every second.
  FM_TRY(auto id,
         loop.add_timer(std::chrono::seconds(1), std::chrono::seconds(1), [this] { publish(); }));
  timer_ = id;
  std::string ports;
  for (const auto& r : options_.ports) {
    ports +=
        (ports.empty() ? "" : ",") +
        (r.first == r.last ? fmt::format("{}", r.first) : fmt::format("{}-{}", r.first, r.last));
  }
  spdlog::info(
      "[source.{}] TCP state changes from the kernel (tracepoint "
      "sock:inet_sock_set_state); ports {}; cgroup {}",
      name_, ports.empty() ? "any" : ports, options_.cgroup.empty() ? "any" : options_.cgroup);
  if (watcher_->premarking()) {
    spdlog::info(
        "[source.{}] IPv6 connections marked by backend {} from their {} (the kernel "
        "puts them in its map)",
        name_, lent->backend,
        watcher_->premarking_syn()
            ? fmt::format("SYN (active side) and SYN-ACK (passive side; handshake map of {} "
                          "entries)",
                          watcher_->handshake_entries())
            : std::string("first data"));
  }
  return {};
}

void KernelEventsSource::stop() noexcept {
  if (loop_) {
    if (fd_ >= 0) loop_->remove_fd(fd_);
    if (timer_) loop_->cancel_timer(*timer_);
  }
  fd_ = -1;
  timer_.reset();
  if (watcher_) publish();
  watcher_.reset();  // detaches the program
  sink_ = nullptr;
  loop_ = nullptr;
}

void KernelEventsSource::drain() noexcept {
  if (!watcher_) return;
  auto n = watcher_->poll();
  if (!n && ++read_errors_ % 100 == 1) {
    spdlog::warn("[source.{}] {} (failure {})", name_, n.error().message(), read_errors_);
  }
}

void KernelEventsSource::on_kernel_event(const bpf::TcpStateEvent& k) {
  // The kernel's clock of the change, as wall-clock time.
  const auto age_us =
      std::max<std::int64_t>(0, (monotonic_ns() - static_cast<std::int64_t>(k.ktime_ns)) / 1000);
  const Micros when = now_micros() - age_us;
  if (k.kind == bpf::TcpStateEvent::Kind::kStart) {
    const auto& dst = k.remote.address;
    if ((options_.skip_private && !dst.is_global()) ||
        any_contains(options_.internal_networks, dst)) {
      metrics_->skipped_internal.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    FlowEvent e;
    e.state = FlowState::kStart;
    e.protocol = scitags::Protocol::kTcp;
    e.src = k.local;
    e.dst = k.remote;
    e.experiment = options_.tag.experiment;
    e.activity = options_.tag.activity;
    e.start_time = when;
    e.current_time = when;
    live_[k.cookie] = e;
    metrics_->starts.fetch_add(1, std::memory_order_relaxed);
    metrics_->tracked.store(live_.size(), std::memory_order_relaxed);
    if (sink_) sink_->push(e);
    return;
  }
  auto it = live_.find(k.cookie);
  if (it == live_.end()) {
    // Open before we started, or its start was filtered out (its destination).
    metrics_->skipped_existing.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  FlowEvent e = std::move(it->second);
  live_.erase(it);
  e.state = FlowState::kEnd;
  e.current_time = when;
  e.end_time = when;
  e.usage = scitags::Usage{.received = k.bytes_received, .sent = k.bytes_acked};
  metrics_->ends.fetch_add(1, std::memory_order_relaxed);
  metrics_->tracked.store(live_.size(), std::memory_order_relaxed);
  if (sink_) sink_->push(e);
}

void KernelEventsSource::publish() noexcept {
  if (!watcher_) return;
  auto c = watcher_->counters();
  if (!c) return;
  auto add = [](std::atomic<std::uint64_t>& to, std::uint64_t now, std::uint64_t& before) {
    to.fetch_add(now - before, std::memory_order_relaxed);
    before = now;
  };
  add(metrics_->skipped_port, c->skipped_port, published_.skipped_port);
  add(metrics_->skipped_cgroup, c->skipped_cgroup, published_.skipped_cgroup);
  if (c->ring_full > published_.ring_full) {
    spdlog::warn(
        "[source.{}] {} TCP state changes lost: the ring buffer was full (raise "
        "ring_kib)",
        name_, c->ring_full - published_.ring_full);
  }
  add(metrics_->lost, c->ring_full, published_.ring_full);
  add(metrics_->premarked, c->premarked, published_.premarked);
  add(metrics_->premark_full, c->premark_full, published_.premark_full);
  add(metrics_->premark_skipped, c->premark_skipped, published_.premark_skipped);
  add(metrics_->premark_removed, c->premark_removed, published_.premark_removed);
  add(metrics_->handshake_marked, c->handshake_marked, published_.handshake_marked);
}

}  // namespace flowmark::daemon::kernel_events

namespace flowmark::daemon {

Result<void> register_kernel_events_source(SourceFactories& factories) {
  return factories.add(
      "kernel-events",
      "this host's TCP connections as the kernel changes their state (eBPF tracepoint, no "
      "polling); beside a flowlabel backend, marked from the SYN",
      [](Section& s, ServiceContext& context) -> Result<std::unique_ptr<Source>> {
        FM_TRY(auto options, kernel_events::parse_kernel_events_options(s, context.registry));
        return std::make_unique<kernel_events::KernelEventsSource>(
            sockets::source_name(s), std::move(options), context.counters, context.flow_maps);
      });
}

}  // namespace flowmark::daemon
