#include "daemon/sources/sockets/sockets_source.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cmath>

namespace flowmark::daemon::sockets {
namespace {

constexpr std::uint16_t kIperf3Port = 5201;

}  // namespace

Result<SocketsOptions> parse_sockets_options(Section& s, const scitags::Registry* registry) {
  SocketsOptions o;
  FM_TRY(o.period_seconds, s.number("period", 2.0, 0.01, 3600.0));

  FM_TRY(auto protocols, s.strings("protocols"));
  if (!protocols.empty()) {
    o.tcp = o.udp = false;
    for (const auto& p : protocols) {
      if (p == "tcp") {
        o.tcp = true;
      } else if (p == "udp") {
        o.udp = true;
      } else {
        return s.error("protocols", fmt::format("'{}' is not one of: tcp, udp", p));
      }
    }
  }

  FM_TRY(o.tracker.internal_networks, s.networks("internal_networks"));
  FM_TRY(o.tracker.skip_private, s.boolean("skip_private", true));
  FM_TRY(o.tracker.announce_existing, s.boolean("announce_existing", false));
  FM_TRY(auto preset, s.choice("preset", "none", {"none", "iperf"}));

  FM_TRY(o.tracker.ports, parse_ports(s));
  if (preset == "iperf" && o.tracker.ports.empty()) {
    o.tracker.ports.push_back({kIperf3Port, kIperf3Port});
  }

  FM_TRY(o.tracker.tag, parse_tag(s, registry));

  FM_TRY(auto choices, s.strings("choices"));
  if (!choices.empty() && preset != "iperf") {
    return s.error("choices", "only used with preset = \"iperf\"");
  }
  for (const auto& c : choices) {
    const auto colon = c.find(':');
    if (colon == std::string::npos) {
      return s.error("choices",
                     fmt::format("'{}' is not \"experiment:activity\" (ids or names)", c));
    }
    auto tag = resolve_tag(std::string_view(c).substr(0, colon),
                           std::string_view(c).substr(colon + 1), registry);
    if (!tag) return s.error("choices", tag.error().message());
    if (tag->experiment == 0) {
      return s.error("choices", fmt::format("'{}': a choice needs an experiment", c));
    }
    o.tracker.choices.push_back(*tag);
  }
  return o;
}

struct SocketsSource::Metrics {
  std::atomic<std::uint64_t>& polls;
  std::atomic<std::uint64_t>& seen;
  std::atomic<std::uint64_t>& tracked;
  std::atomic<std::uint64_t>& poll_micros;
  std::atomic<std::uint64_t>& starts;
  std::atomic<std::uint64_t>& starts_short;
  std::atomic<std::uint64_t>& ends_closing;
  std::atomic<std::uint64_t>& ends_vanished;
  std::atomic<std::uint64_t>& ends_short;
  std::atomic<std::uint64_t>& skipped_internal;
  std::atomic<std::uint64_t>& skipped_port;
  std::atomic<std::uint64_t>& skipped_existing;
  std::atomic<std::uint64_t>& errors_dump;
  std::atomic<std::uint64_t>& errors_malformed;
  std::atomic<std::uint64_t>& errors_stale;
  std::atomic<std::uint64_t>& errors_interrupted;

  static Metrics make(Counters& c, const std::string& name) {
    const Labels src{{"source", name}};
    auto with = [&](std::initializer_list<std::pair<std::string, std::string>> more) {
      Labels l = src;
      l.insert(l.end(), more);
      return l;
    };
    constexpr std::string_view kEvents = "flowmark_sockets_events_total";
    constexpr std::string_view kEventsHelp = "Events of the sockets source, by state and reason";
    constexpr std::string_view kSkipped = "flowmark_sockets_skipped_total";
    constexpr std::string_view kSkippedHelp = "Connections not announced, by reason";
    constexpr std::string_view kErrors = "flowmark_sockets_netlink_errors_total";
    constexpr std::string_view kErrorsHelp =
        "sock_diag problems: failed dumps, malformed/stale messages, interrupted dumps";
    return Metrics{
        c.counter("flowmark_sockets_polls_total", src, "Polls of the socket table"),
        c.counter("flowmark_sockets_seen_total", src, "Sockets read from sock_diag, all polls"),
        c.gauge("flowmark_sockets_tracked", src, "Connections the sockets source follows"),
        c.gauge("flowmark_sockets_poll_duration_us", src, "Duration of the last poll (µs)"),
        c.counter(kEvents, with({{"state", "start"}, {"reason", "established"}}), kEventsHelp),
        c.counter(kEvents, with({{"state", "start"}, {"reason", "short_lived"}}), kEventsHelp),
        c.counter(kEvents, with({{"state", "end"}, {"reason", "closing"}}), kEventsHelp),
        c.counter(kEvents, with({{"state", "end"}, {"reason", "vanished"}}), kEventsHelp),
        c.counter(kEvents, with({{"state", "end"}, {"reason", "short_lived"}}), kEventsHelp),
        c.counter(kSkipped, with({{"reason", "internal"}}), kSkippedHelp),
        c.counter(kSkipped, with({{"reason", "port"}}), kSkippedHelp),
        c.counter(kSkipped, with({{"reason", "existing"}}), kSkippedHelp),
        c.counter(kErrors, with({{"reason", "dump"}}), kErrorsHelp),
        c.counter(kErrors, with({{"reason", "malformed"}}), kErrorsHelp),
        c.counter(kErrors, with({{"reason", "stale"}}), kErrorsHelp),
        c.counter(kErrors, with({{"reason", "interrupted"}}), kErrorsHelp),
    };
  }
};

SocketsSource::SocketsSource(std::string name, SocketsOptions options, Counters& counters)
    : name_(std::move(name)),
      options_(std::move(options)),
      metrics_(std::make_unique<Metrics>(Metrics::make(counters, name_))),
      tracker_(options_.tracker, [this](const scitags::FlowEvent& e) {
        // Lossless: a poll's events are bounded by the socket table, and no poll is made
        // while a backend's queue is full (back-pressure); the tracker keeps its state, so
        // the next poll catches up.
        if (sink_) sink_->push_lossless(e);
      }) {}

SocketsSource::~SocketsSource() { stop(); }

Result<void> SocketsSource::start(EventLoop& loop, FlowSink& sink) {
  if (timer_) return fail(Errc::kInvalidArgument, fmt::format("[source.{}] started twice", name_));
  if (!diag_) {
    auto diag = SockDiag::open();
    if (!diag) {
      return std::unexpected(
          std::move(diag).error().with_context(fmt::format("[source.{}]", name_)));
    }
    diag_.emplace(std::move(*diag));
  }
  loop_ = &loop;
  sink_ = &sink;
  const auto period = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::duration<double>(options_.period_seconds));
  // The first poll at once: it learns which connections exist already.
  FM_TRY(auto id, loop.add_timer(std::chrono::milliseconds(1), period, [this] {
    if (sink_ && !sink_->has_room()) return;  // back-pressure: the next poll catches up
    poll();
  }));
  timer_ = id;
  return {};
}

void SocketsSource::stop() noexcept {
  if (timer_ && loop_) loop_->cancel_timer(*timer_);
  timer_.reset();
  sink_ = nullptr;
}

bool SocketsSource::poll() {
  if (!diag_) {
    auto diag = SockDiag::open();
    if (!diag) {
      ++errors_;
      metrics_->errors_dump.fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("[source.{}] {}", name_, diag.error().message());
      return false;
    }
    diag_.emplace(std::move(*diag));
  }
  const auto t0 = std::chrono::steady_clock::now();
  tracker_.begin(now_micros());
  std::uint64_t seen = 0;
  bool ok = true;
  auto visit = [&](const SocketInfo& s) {
    ++seen;
    tracker_.observe(s);
  };
  for (auto protocol : {scitags::Protocol::kTcp, scitags::Protocol::kUdp}) {
    if (protocol == scitags::Protocol::kTcp ? !options_.tcp : !options_.udp) continue;
    for (auto family : {Family::kV4, Family::kV6}) {
      SockDiag::Query q{
          .family = family,
          .protocol = protocol,
          .states = protocol == scitags::Protocol::kTcp ? kConnectedStates : kAllStates,
          .want_info = protocol == scitags::Protocol::kTcp};
      auto n = diag_->dump(q, visit);
      if (!n) {
        ok = false;
        ++errors_;
        metrics_->errors_dump.fetch_add(1, std::memory_order_relaxed);
        // Rate-limited: the first failure, then every 100th.
        if (errors_ % 100 == 1) {
          spdlog::warn("[source.{}] {} (failure {}; retrying every poll)", name_,
                       n.error().message(), errors_);
        }
        break;
      }
    }
    if (!ok) break;
  }
  // An incomplete snapshot must not make live connections look vanished.
  if (ok) {
    tracker_.finish();
    if (!baseline_logged_) {
      baseline_logged_ = true;
      spdlog::info("[source.{}] polling every {} s; {} connections open at start-up{}", name_,
                   options_.period_seconds, tracker_.stats().existing + tracker_.stats().starts,
                   options_.tracker.announce_existing ? " announced" : " not announced");
    }
  } else {
    tracker_.abandon();
  }
  metrics_->polls.fetch_add(1, std::memory_order_relaxed);
  metrics_->seen.fetch_add(seen, std::memory_order_relaxed);
  metrics_->poll_micros.store(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::steady_clock::now() - t0)
                                     .count()),
      std::memory_order_relaxed);
  publish();
  return ok;
}

void SocketsSource::publish() {
  auto add = [](std::atomic<std::uint64_t>& c, std::uint64_t now, std::uint64_t& before) {
    c.fetch_add(now - before, std::memory_order_relaxed);
    before = now;
  };
  const auto& t = tracker_.stats();
  auto& p = published_;
  auto& m = *metrics_;
  // The tracker's `starts` include the short-lived ones (start and end in one poll); here
  // `p.starts` keeps the established-only part.
  add(m.starts, t.starts - t.short_lived, p.starts);
  const auto short_lived = t.short_lived - p.short_lived;
  m.starts_short.fetch_add(short_lived, std::memory_order_relaxed);
  m.ends_short.fetch_add(short_lived, std::memory_order_relaxed);
  p.short_lived = t.short_lived;
  add(m.ends_closing, t.ends_closing, p.ends_closing);
  add(m.ends_vanished, t.ends_vanished, p.ends_vanished);
  add(m.skipped_internal, t.skipped_internal, p.skipped_internal);
  add(m.skipped_port, t.skipped_port, p.skipped_port);
  add(m.skipped_existing, t.existing, p.existing);
  m.tracked.store(tracker_.tracked(), std::memory_order_relaxed);
  if (diag_) {
    const auto& d = diag_->stats();
    add(m.errors_malformed, d.malformed, diag_published_.malformed);
    add(m.errors_stale, d.stale, diag_published_.stale);
    add(m.errors_interrupted, d.interrupted, diag_published_.interrupted);
  }
}

}  // namespace flowmark::daemon::sockets

namespace flowmark::daemon {

Result<void> register_sockets_source(SourceFactories& factories) {
  return factories.add("sockets",
                       "this host's TCP/UDP connections from netlink sock_diag (flowd's netstat, "
                       "netlink and iperf plugins)",
                       [](Section& s, ServiceContext& context) -> Result<std::unique_ptr<Source>> {
                         FM_TRY(auto options, sockets::parse_sockets_options(s, context.registry));
                         return std::make_unique<sockets::SocketsSource>(
                             sockets::source_name(s), std::move(options), context.counters);
                       });
}

}  // namespace flowmark::daemon
