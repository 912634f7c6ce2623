#include "daemon/backends/ipfix/ipfix_backend.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <utility>

#include "flowmark/core/time.hpp"
#include "flowmark/net/ipfix_export.hpp"
#include "flowmark/observe/ipfix.hpp"

namespace flowmark::daemon {
namespace {

struct IpfixBackendOptions {
  std::string target;
  std::uint32_t observation_domain = 0;
  bool uniflow = false;
  std::size_t max_message = 0;  // 0: by the target's kind
  std::optional<std::uint32_t> template_refresh_seconds;
  std::size_t buffer = std::size_t{64} << 20;
  std::chrono::milliseconds drain_timeout{5000};
};

// The flow of an end event as the writer's record. Times in microseconds become
// nanoseconds; the octets are the event's usage: sent forward, received reverse.
observe::FlowRecord record_of(const FlowEvent& e) {
  observe::FlowRecord r;
  r.sip = e.src.address;
  r.dip = e.dst.address;
  r.sp = e.src.port;
  r.dp = e.dst.port;
  r.has_ports = true;
  r.proto = e.protocol == scitags::Protocol::kTcp ? 6 : 17;
  r.ip_version = e.src.address.family() == Family::kV6 ? 6 : 4;
  const Micros end = e.end_time != 0 ? e.end_time : e.current_time;
  r.first = static_cast<observe::Nanos>(e.start_time) * 1000;
  r.last = static_cast<observe::Nanos>(end != 0 ? end : e.start_time) * 1000;
  if (e.usage) {
    r.oct_fwd = e.usage->sent;
    r.oct_rev = e.usage->received;
  }
  // flowEndReason from how the flow ended: announced (end detected), not heard of for the
  // idle time, pushed out of the table, or still live when the service stopped (forced).
  switch (e.end_reason) {
    case scitags::EndReason::kEnded: r.end_reason = observe::EndReason::kEndDetected; break;
    case scitags::EndReason::kExpired: r.end_reason = observe::EndReason::kIdleTimeout; break;
    case scitags::EndReason::kEvicted: r.end_reason = observe::EndReason::kLackOfResources; break;
    case scitags::EndReason::kShutdown: r.end_reason = observe::EndReason::kForcedEnd; break;
  }
  return r;
}

class IpfixBackend final : public Backend {
 public:
  IpfixBackend(std::string name, IpfixBackendOptions o, ServiceContext& ctx)
      : name_(std::move(name)), o_(std::move(o)) {
    constexpr std::string_view kHelp = "Flow records of an ipfix backend, by outcome";
    exported_ = &ctx.counters.counter("flowmark_ipfix_records_total",
                                      {{"backend", name_}, {"outcome", "exported"}}, kHelp);
    dropped_ = &ctx.counters.counter("flowmark_ipfix_records_total",
                                     {{"backend", name_}, {"outcome", "dropped"}}, kHelp);
    messages_ = &ctx.counters.counter("flowmark_ipfix_messages_total", {{"backend", name_}},
                                      "IPFIX messages an ipfix backend sent or wrote");
    reconnects_ = &ctx.counters.counter("flowmark_ipfix_reconnects_total", {{"backend", name_}},
                                        "Connections an ipfix backend made again to its TCP "
                                        "collector after losing one");
    buffered_ = &ctx.counters.gauge("flowmark_ipfix_buffered_bytes", {{"backend", name_}},
                                    "Bytes an ipfix backend holds for its TCP collector");
  }
  ~IpfixBackend() override { stop(); }

  Result<void> start() override {
    auto exporter = net::IpfixExporter::open(
        o_.target,
        {.buffer_bytes = o_.buffer, .append = true, .log = [name = name_](std::string_view m) {
           spdlog::warn("backend {}: {}", name, m);
         }});
    if (!exporter)
      return fail(
          exporter.error().code() == make_error_code(Errc::kInvalidArgument)
              ? Errc::kInvalidArgument
              : Errc::kRefused,
          fmt::format("[backend.{}] target: {}: {}", name_, o_.target, exporter.error().message()));
    exporter_ = std::move(*exporter);
    const bool udp = exporter_->kind() == net::IpfixExporter::Kind::kUdp;
    // The event's experiment and activity as CESNET's Scitags elements, IPv4 and IPv6 alike.
    writer_.emplace(observe::IpfixOptions{.observation_domain = o_.observation_domain,
                                          .max_message_size = o_.max_message != 0 ? o_.max_message
                                                              : udp               ? 1400
                                                                                  : 65535,
                                          .uniflow = o_.uniflow,
                                          .flow_label = false,
                                          .scitags = true,
                                          .scitags_ipv4 = true,
                                          .nanoseconds = false,
                                          // Events carry octets, not packets, flags, class
                                          // of service or VLAN: left out of the templates.
                                          .packet_fields = false,
                                          .template_refresh_messages = udp ? 100u : 0u,
                                          .template_refresh_seconds =
                                              o_.template_refresh_seconds.value_or(udp ? 60u : 0u),
                                          .now = {}},
                    [this](std::span<const std::uint8_t> m) {
                      exporter_->send(m, writer_->records_in_message());
                    });
    exporter_->set_templates(writer_->templates_message());
    spdlog::info("backend {}: IPFIX flow records to {}", name_, o_.target);
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    if (e.state != scitags::FlowState::kEnd || !writer_) return;
    if (e.src.address.family() != e.dst.address.family()) return;
    const observe::FlowRecord r = record_of(e);
    const observe::IpfixExtras x{
        .scitags_experiment =
            static_cast<std::uint16_t>(std::min<std::uint32_t>(e.experiment, 0xFFFF)),
        .scitags_activity = static_cast<std::uint8_t>(std::min<std::uint32_t>(e.activity, 0xFF))};
    writer_->add(r, x);
    // Uniflow: the writer makes a reverse record from packet counts, which events lack; the
    // reverse direction is written here as a flow of its own when it carried octets.
    if (o_.uniflow && r.oct_rev != 0) {
      observe::FlowRecord back = r;
      std::swap(back.sip, back.dip);
      std::swap(back.sp, back.dp);
      back.oct_fwd = r.oct_rev;
      back.oct_rev = 0;
      writer_->add(back, x);
    }
  }

  // Messages leave when full or, at the latest, a second after their first record.
  std::chrono::milliseconds tick_interval() const noexcept override {
    return std::chrono::milliseconds(1000);
  }
  void on_tick() noexcept override {
    if (!writer_) return;
    writer_->flush();
    publish(exporter_->stats());
  }

  void reopen() noexcept override {
    if (!writer_) return;
    writer_->flush();
    if (auto r = exporter_->reopen(); !r)
      spdlog::error("backend {}: {}: {}", name_, o_.target, r.error().message());
  }

  void stop() noexcept override {
    if (!writer_) return;
    writer_->flush();
    const auto end = exporter_->finish(o_.drain_timeout);
    publish(end.stats);
    if (end.not_delivered != 0)
      spdlog::warn(
          "backend {}: {}: {} records not delivered (the collector did not take them "
          "in {:g} s)",
          name_, o_.target, end.not_delivered,
          static_cast<double>(o_.drain_timeout.count()) / 1000);
    if (end.error) spdlog::error("backend {}: {}: {}", name_, o_.target, end.error->message());
    dropped_->fetch_add(end.not_delivered, std::memory_order_relaxed);
    writer_.reset();
    exporter_.reset();
  }

 private:
  void publish(const net::IpfixExportStats& s) {
    exported_->store(s.records, std::memory_order_relaxed);
    dropped_->store(s.records_dropped, std::memory_order_relaxed);
    messages_->store(s.messages, std::memory_order_relaxed);
    reconnects_->store(s.reconnects, std::memory_order_relaxed);
    buffered_->store(s.bytes_buffered, std::memory_order_relaxed);
  }

  std::string name_;
  IpfixBackendOptions o_;
  std::unique_ptr<net::IpfixExporter> exporter_;
  std::optional<observe::IpfixWriter> writer_;
  std::atomic<std::uint64_t>*exported_, *dropped_, *messages_, *reconnects_, *buffered_;
};

}  // namespace

Result<void> register_ipfix_backend(BackendFactories& factories) {
  return factories.add(
      "ipfix", "every flow that ends as an IPFIX record, to a UDP or TCP collector or a file",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        IpfixBackendOptions o;
        FM_TRY(auto target, s.optional_string("target"));
        if (!target || target->empty())
          return s.error("target",
                         "missing: give udp://HOST[:PORT], tcp://HOST[:PORT] or a file path");
        o.target = std::move(*target);
        if (!o.target.starts_with("udp://") && !o.target.starts_with("tcp://") &&
            o.target.find("://") != std::string::npos)
          return s.error("target", fmt::format("'{}': expected udp://HOST[:PORT], "
                                               "tcp://HOST[:PORT] or a file path",
                                               o.target));
        FM_TRY(auto domain, s.integer("observation_domain", 0, 0, 0xffffffffLL));
        o.observation_domain = static_cast<std::uint32_t>(domain);
        FM_TRY(o.uniflow, s.boolean("uniflow", false));
        if (s.has("max_message")) {
          FM_TRY(auto m, s.integer("max_message", 65535, 512, 65535));
          o.max_message = static_cast<std::size_t>(m);
        }
        if (s.has("template_refresh_seconds")) {
          FM_TRY(auto t, s.integer("template_refresh_seconds", 60, 0, 86400));
          o.template_refresh_seconds = static_cast<std::uint32_t>(t);
        }
        FM_TRY(auto buffer, s.integer("buffer", 64LL << 20, 0, 1LL << 40));
        o.buffer = static_cast<std::size_t>(buffer);
        FM_TRY(auto drain, s.number("drain_timeout", 5.0, 0, 3600));
        o.drain_timeout = std::chrono::milliseconds(std::llround(drain * 1000));
        return std::make_unique<IpfixBackend>(s.name(), std::move(o), ctx);
      });
}

}  // namespace flowmark::daemon
