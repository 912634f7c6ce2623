#include "daemon/backends/prometheus/prometheus_backend.hpp"

#include "daemon/common/http_listen.hpp"

#include <civetweb.h>
#include <fmt/format.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/backends/prometheus/aggregate_metrics.hpp"
#include "flowmark/collector/record.hpp"
#include "flowmark/core/log.hpp"
#include "flowmark/daemon/flow_key.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using scitags::TcpInfo;

// One exported TCP metric: its name, what it means (units included) and how to read it.
struct TcpMetric {
  const char* name;
  const char* help;
  MetricType type;
  double (*value)(const TcpInfo&);
};

// Units: Prometheus base units (seconds, bytes, bytes per second). flowd exported the RTT in
// milliseconds as ss printed it; dashboards written for flowd multiply by 1000.
constexpr std::array<TcpMetric, 14> kTcpMetrics{{
    {"flow_tcp_rtt", "Smoothed round-trip time of the flow, in seconds (tcpi_rtt)",
     MetricType::Gauge, [](const TcpInfo& t) { return t.rtt_us / 1e6; }},
    {"flow_tcp_rtt_var", "Round-trip time variation of the flow, in seconds (tcpi_rttvar)",
     MetricType::Gauge, [](const TcpInfo& t) { return t.rtt_var_us / 1e6; }},
    {"flow_tcp_cwnd", "Congestion window, in segments (tcpi_snd_cwnd)", MetricType::Gauge,
     [](const TcpInfo& t) { return static_cast<double>(t.cwnd); }},
    {"flow_tcp_ssthresh", "Slow-start threshold, in segments (tcpi_snd_ssthresh)",
     MetricType::Gauge, [](const TcpInfo& t) { return static_cast<double>(t.ssthresh); }},
    {"flow_tcp_bytes_sent", "Bytes sent by the flow's source, retransmissions included",
     MetricType::Counter, [](const TcpInfo& t) { return static_cast<double>(t.bytes_sent); }},
    {"flow_tcp_bytes_acked", "Bytes sent and acknowledged by the peer", MetricType::Counter,
     [](const TcpInfo& t) { return static_cast<double>(t.bytes_acked); }},
    {"flow_tcp_bytes_received", "Bytes received by the flow's source", MetricType::Counter,
     [](const TcpInfo& t) { return static_cast<double>(t.bytes_received); }},
    {"flow_tcp_segs_out", "Segments sent", MetricType::Counter,
     [](const TcpInfo& t) { return static_cast<double>(t.segs_out); }},
    {"flow_tcp_segs_in", "Segments received", MetricType::Counter,
     [](const TcpInfo& t) { return static_cast<double>(t.segs_in); }},
    {"flow_tcp_retrans", "Segments retransmitted over the flow's life (tcpi_total_retrans)",
     MetricType::Counter, [](const TcpInfo& t) { return static_cast<double>(t.retrans); }},
    {"flow_tcp_pacing_rate", "Pacing rate, in bytes per second", MetricType::Gauge,
     [](const TcpInfo& t) { return static_cast<double>(t.pacing_rate); }},
    {"flow_tcp_delivery_rate", "Most recent delivery rate, in bytes per second", MetricType::Gauge,
     [](const TcpInfo& t) { return static_cast<double>(t.delivery_rate); }},
    {"flow_tcp_mss", "Maximum segment size, in bytes (tcpi_snd_mss)", MetricType::Gauge,
     [](const TcpInfo& t) { return static_cast<double>(t.mss); }},
    {"flow_tcp_pmtu", "Path MTU, in bytes (tcpi_pmtu)", MetricType::Gauge,
     [](const TcpInfo& t) { return static_cast<double>(t.pmtu); }},
}};

constexpr const char* kLiveFlows = "flowmark_live_flows";

std::vector<ClientMetric::Label> flow_labels(const FlowEvent& e) {
  return {{"src", e.src.address.to_string()},
          {"dst", e.dst.address.to_string()},
          {"exp", std::to_string(e.experiment)},
          {"act", std::to_string(e.activity)},
          {"flow", fmt::format("{}:{}", e.src.port, e.dst.port)}};
}

// Opens and closes one TCP connection to `e` without waiting for it (the SYN reaches the
// listener and wakes its poll). False when nothing listens there any more (or the knock
// cannot be made): no use knocking again.
bool knock_once(const Endpoint& e) { return net::connect_tcp(e, SOCK_NONBLOCK).has_value(); }

}  // namespace

// The flow map and the Collectable that turns it (and the service counters) into metric
// families at each scrape.
class PrometheusBackend::State final : public prometheus::Collectable {
 public:
  // A flow of the per-flow metrics (flow_metrics on).
  struct Flow {
    FlowEvent event;  // as last announced (what the reader looks the flow up by)
    std::vector<ClientMetric::Label> labels;
    std::optional<TcpInfo> tcp;
  };
  // Every live flow, whatever is exported: what flowmark_live_flows counts and the aggregate
  // metrics need (about 100 bytes a flow, where a Flow takes 450 and more).
  struct Tracked {
    Micros start_time = 0;
    AggregateMetrics::Group* group = nullptr;  // null: no aggregate metrics
  };

  // The aggregate labels of a flow not seen before (called under the lock, new flows only).
  using Labeler = std::function<AggregateMetrics::Labels(const FlowEvent&)>;

  State(bool flow_metrics, const Counters* counters, std::size_t max_aggregate_series)
      : flow_metrics_(flow_metrics), counters_(counters) {
    if (max_aggregate_series > 0) aggregates_.emplace(max_aggregate_series);
  }

  // Start and ongoing events add or update the flow (an ongoing one also adds a flow whose
  // start this backend missed); an end event removes it. The aggregate group of the flow
  // counts it (see the header).
  void apply(const FlowEvent& e, const Labeler& labeler) {
    const bool end = e.state == scitags::FlowState::kEnd;
    std::vector<ClientMetric::Label> labels;
    // Formatted outside the lock, and only when exported: a collector's backend (flow_metrics
    // off) is told of every remote flow.
    if (!end && flow_metrics_) labels = flow_labels(e);
    const FlowKey key = key_of(e);
    const std::uint64_t id = FlowKeyHash{}(key);
    std::lock_guard lock(mutex_);
    auto it = tracked_.find(id);
    bool restarted = it != tracked_.end() && e.state == scitags::FlowState::kStart &&
                     e.start_time != 0 && it->second.start_time != 0 &&
                     e.start_time != it->second.start_time;
    if (restarted) {  // another flow on the same 5-tuple: the old one is over
      if (it->second.group) AggregateMetrics::flow_closed(*it->second.group);
      tracked_.erase(it);
      flows_.erase(key);
      it = tracked_.end();
    }
    const bool first_sight = it == tracked_.end();
    AggregateMetrics::Group* group = first_sight ? nullptr : it->second.group;
    if (aggregates_) {
      if (first_sight) {
        group = &aggregates_->group(labeler(e));
        AggregateMetrics::flow_opened(*group);
      }
      AggregateMetrics::add_bytes(*group, volume_increment(e));
    }
    if (end) {
      if (group) AggregateMetrics::flow_closed(*group);
      if (!first_sight) tracked_.erase(it);
      if (flow_metrics_) flows_.erase(key);
      return;
    }
    if (first_sight) tracked_.emplace(id, Tracked{e.start_time, group});
    if (!flow_metrics_) return;
    auto [f_it, added] = flows_.try_emplace(key);
    Flow& f = f_it->second;
    if (added || f.labels != labels) f.labels = std::move(labels);
    f.event = e;
    if (e.tcp) f.tcp = e.tcp;
  }

  // max(0, volume − previous_volume): what this event adds to the flow's volume.
  static std::uint64_t volume_increment(const FlowEvent& e) noexcept {
    if (!e.usage) return 0;
    const std::uint64_t v = std::max(e.usage->sent, e.usage->received);
    return v > e.previous_volume ? v - e.previous_volume : 0;
  }

  // A copy of the aggregate metrics' state (tests).
  std::optional<AggregateMetrics> aggregates() const {
    std::lock_guard lock(mutex_);
    return aggregates_;
  }

  std::vector<std::pair<FlowKey, FlowEvent>> tcp_flows() const {
    std::lock_guard lock(mutex_);
    std::vector<std::pair<FlowKey, FlowEvent>> out;
    out.reserve(flows_.size());
    for (const auto& [k, f] : flows_) {
      if (k.protocol == scitags::Protocol::kTcp) out.emplace_back(k, f.event);
    }
    return out;
  }

  // The flow may have ended while the reader ran: then nothing is updated.
  void update(const FlowKey& k, const TcpInfo& t) {
    std::lock_guard lock(mutex_);
    if (auto it = flows_.find(k); it != flows_.end()) it->second.tcp = t;
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return tracked_.size();
  }

  std::vector<MetricFamily> Collect() const override {
    std::vector<MetricFamily> out;
    std::set<std::string, std::less<>> ours;
    {
      std::lock_guard lock(mutex_);
      MetricFamily live{kLiveFlows,
                        "Flows started and not yet ended, as this backend saw them",
                        MetricType::Gauge,
                        {}};
      live.metric.emplace_back().gauge.value = static_cast<double>(tracked_.size());
      out.push_back(std::move(live));
      ours.insert(kLiveFlows);
      if (aggregates_) {
        const std::size_t before = out.size();
        aggregates_->collect(out);
        for (std::size_t i = before; i < out.size(); ++i) ours.insert(out[i].name);
      }
      if (flow_metrics_) {
        for (const auto& m : kTcpMetrics) {
          MetricFamily fam{m.name, m.help, m.type, {}};
          fam.metric.reserve(flows_.size());
          for (const auto& [k, f] : flows_) {
            if (!f.tcp) continue;  // no values known yet: no invented zeros
            auto& cm = fam.metric.emplace_back();
            cm.label = f.labels;
            double v = m.value(*f.tcp);
            if (m.type == MetricType::Counter) {
              cm.counter.value = v;
            } else {
              cm.gauge.value = v;
            }
          }
          // Families without samples are left out, as prometheus-cpp does.
          if (!fam.metric.empty()) out.push_back(std::move(fam));
          ours.insert(m.name);
        }
      }
    }
    if (counters_) append_counters(out, ours);
    return out;
  }

 private:
  // One family per counter name, in order of first registration; a name must appear once in
  // an exposition, even when its series were registered far apart.
  void append_counters(std::vector<MetricFamily>& out,
                       const std::set<std::string, std::less<>>& ours) const {
    std::map<std::string, std::size_t, std::less<>> index;
    for (auto& s : counters_->snapshot()) {
      if (ours.contains(s.name)) continue;  // ours wins: one family per name
      auto [it, added] = index.try_emplace(s.name, out.size());
      if (added) {
        out.push_back({s.name,
                       s.help,
                       s.kind == Counters::Kind::kCounter ? MetricType::Counter : MetricType::Gauge,
                       {}});
      }
      MetricFamily& fam = out[it->second];
      if (fam.help.empty()) fam.help = s.help;
      auto& cm = fam.metric.emplace_back();
      cm.label.reserve(s.labels.size());
      for (auto& [name, value] : s.labels) cm.label.push_back({name, value});
      double v = static_cast<double>(s.value);
      if (fam.type == MetricType::Counter) {
        cm.counter.value = v;
      } else {
        cm.gauge.value = v;
      }
    }
  }

  const bool flow_metrics_;
  const Counters* counters_;
  mutable std::mutex mutex_;
  std::optional<AggregateMetrics> aggregates_;  // absent: max_aggregate_series = 0
  // The flows this backend was told of, with their labels and TcpInfo (refreshed by the
  // reader), read by civetweb's threads at each scrape under mutex_: per-backend state, not
  // the pipeline's table. Ordered, so that the exposition lists a metric's flows in the same
  // order at every scrape. Empty when flow_metrics is off.
  std::map<FlowKey, Flow> flows_;
  // Every flow this backend was told of and not yet told the end of, by the 64-bit hash of
  // its key: ~100 bytes a flow rather than ~150 with the key itself (a collector holds a
  // million). Two live flows of one hash (odds ~1e-8 among a million) would share an entry:
  // one open flow miscounted, nothing else.
  std::unordered_map<std::uint64_t, Tracked> tracked_;
};

PrometheusBackend::PrometheusBackend(Options options, std::string where)
    : options_(std::move(options)),
      where_(std::move(where)),
      state_(std::make_shared<State>(options_.flow_metrics, options_.counters,
                                     options_.max_aggregate_series)) {}

PrometheusBackend::~PrometheusBackend() { stop(); }

std::string PrometheusBackend::civetweb_address(const Endpoint& e) {
  return e.to_string();  // "127.0.0.1:9000" / "[::1]:9000": civetweb's syntax too
}

Result<Endpoint> PrometheusBackend::parse_listen(std::string_view text) {
  return daemon::parse_listen(text);
}

Result<std::unique_ptr<PrometheusBackend>> PrometheusBackend::from_config(Section& section,
                                                                          ServiceContext& context,
                                                                          TcpInfoReader reader) {
  Options o;
  FM_TRY(auto listen, section.string("listen", "127.0.0.1:9000"));
  auto endpoint = parse_listen(listen);
  if (!endpoint) return section.error("listen", endpoint.error().message());
  o.listen = *endpoint;
  FM_TRY(auto poll, section.integer("poll_interval", 5, 1, 86400));
  o.poll_interval = std::chrono::seconds(poll);
  FM_TRY(o.flow_metrics, section.boolean("flow_metrics", true));
  FM_TRY(
      auto max_series,
      section.integer("max_aggregate_series",
                      static_cast<std::int64_t>(AggregateMetrics::kDefaultMaxGroups), 0, 1000000));
  o.max_aggregate_series = static_cast<std::size_t>(max_series);
  if (context.registry) o.registry = std::make_shared<const scitags::Registry>(*context.registry);
  o.sites = context.sites;
  o.reader = std::move(reader);
  o.counters = &context.counters;
  return std::make_unique<PrometheusBackend>(std::move(o), section.where());
}

Result<void> PrometheusBackend::start() {
  if (exposer_) return {};
  const auto& listen = options_.listen;
  const std::string address = listen.to_string();
  FM_TRY_VOID(check_civetweb_family(where_, listen));
  try {
    // Two threads: a scrape in progress does not hold up a second scraper.
    exposer_ = std::make_unique<prometheus::Exposer>(civetweb_address(listen), 2);
  } catch (const std::exception& ex) {
    return std::unexpected(listen_error(where_, listen, ex.what()));
  }
  exposer_->RegisterCollectable(state_);
  auto ports = exposer_->GetListeningPorts();
  port_ = ports.empty() ? listen.port : static_cast<std::uint16_t>(ports.front());
  spdlog::info("{}: Prometheus metrics on http://{}/metrics", where_,
               Endpoint{listen.address, port_}.to_string());
  return {};
}

void PrometheusBackend::on_event(const FlowEvent& event) noexcept {
  try {
    state_->apply(event, [this](const FlowEvent& e) {
      auto sites = options_.sites ? options_.sites->get() : nullptr;
      return AggregateMetrics::labels_of(
          collector::make_record(e, options_.registry.get(), sites.get()));
    });
  } catch (const std::exception& ex) {  // allocation failure: skip the event
    spdlog::warn("{}: event dropped: {}", where_, ex.what());
  }
}

std::chrono::milliseconds PrometheusBackend::tick_interval() const noexcept {
  if (!options_.reader || !options_.flow_metrics) return {};
  return options_.poll_interval;
}

void PrometheusBackend::on_tick() noexcept {
  if (!options_.reader || !options_.flow_metrics) return;
  try {
    for (const auto& [key, event] : state_->tcp_flows()) {
      if (auto info = options_.reader(event)) state_->update(key, *info);
    }
  } catch (const std::exception& ex) {
    spdlog::warn("{}: TCP information refresh failed: {}", where_, ex.what());
  }
}

void PrometheusBackend::stop() noexcept {
  if (!exposer_) return;
  // civetweb's mg_stop raises a flag and waits for its accept thread, which looks at the
  // flag only between polls of up to 2 s. A connection makes that poll return, so a helper
  // knocks on the port until the server is gone: stop (and a reload) take milliseconds.
  Endpoint knock{options_.listen.address, port_};
  if (knock.address.is_unspecified()) {  // 0.0.0.0: knock on loopback
    knock.address =
        IpAddress::parse(knock.address.is_v4() ? "127.0.0.1" : "::1").value_or(IpAddress());
  }
  std::atomic<bool> stopped{false};
  std::size_t knocks = 0;  // the waker's until it is joined
  std::thread waker;
  try {
    waker = std::thread([&] {
      while (!stopped.load() && knock_once(knock)) {
        ++knocks;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  } catch (const std::system_error& ex) {
    spdlog::debug("{}: no thread to wake the HTTP server ({}): stopping takes up to 2 s", where_,
                  ex.what());
  }
  exposer_.reset();  // joins civetweb's threads: no scrape runs after this
  stopped = true;
  if (waker.joinable()) waker.join();
  stop_knocks_ = knocks;
}

std::size_t PrometheusBackend::live_flows() const { return state_->size(); }

std::optional<AggregateMetrics> PrometheusBackend::aggregates() const {
  return state_->aggregates();
}

Result<void> register_prometheus_backend(BackendFactories& factories) {
  return register_prometheus_backend(factories, {});
}

Result<void> register_prometheus_backend(BackendFactories& factories, TcpInfoReader reader) {
  return factories.add("prometheus",
                       "Prometheus exposition of per-flow TCP metrics, aggregates per experiment, "
                       "activity and site pair, and the service counters",
                       [reader = std::move(reader)](
                           Section& s, ServiceContext& c) -> Result<std::unique_ptr<Backend>> {
                         FM_TRY(auto b, PrometheusBackend::from_config(s, c, reader));
                         return std::unique_ptr<Backend>(std::move(b));
                       });
}

}  // namespace flowmark::daemon
