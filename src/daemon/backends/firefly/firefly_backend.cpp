#include "daemon/backends/firefly/firefly_backend.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "flowmark/core/log_limit.hpp"
#include "flowmark/daemon/flow_key.hpp"
#include "flowmark/net/resolve.hpp"
#include "flowmark/scitags/firefly.hpp"
#include "flowmark/scitags/firefly_sender.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;

struct FireflyOptions {
  bool to_destination = true;
  std::uint16_t port = scitags::kFireflyPort;
  std::vector<std::string> collector_texts;
  scitags::FireflySenderConfig sender;
  scitags::EncoderOptions encoder;
  double ongoing_interval = 0;
  scitags::EnrichmentShape ongoing_shape = scitags::EnrichmentShape::kFlowmark;
  bool tcp_info = false;
};

class FireflyBackend final : public Backend {
 public:
  FireflyBackend(std::string name, FireflyOptions o, FlowInfoReader reader,
                 FlowDetailReader detail_reader, ServiceContext& ctx)
      : name_(std::move(name)),
        o_(std::move(o)),
        reader_(std::move(reader)),
        detail_reader_(std::move(detail_reader)),
        sender_(o_.sender),
        encoder_(o_.encoder) {
    auto c = [&](std::string_view to, std::string_view outcome) {
      return &ctx.counters.counter(
          "flowmark_firefly_sends_total",
          {{"backend", name_}, {"to", std::string(to)}, {"outcome", std::string(outcome)}},
          "Firefly datagrams sent by a backend, by destination kind and outcome");
    };
    for (int k = 0; k < 2; ++k) {
      const char* to = k == 0 ? "destination" : "collector";
      sent_[k] = c(to, "sent");
      refused_[k] = c(to, "refused");
      failed_[k] = c(to, "error");
    }
    invalid_ = &ctx.counters.counter("flowmark_backend_invalid_events_total", {{"backend", name_}},
                                     "Events a backend could not encode (schema violations)");
  }

  Result<void> start() override {
    for (const auto& text : o_.collector_texts) {
      FM_TRY(auto ep, net::resolve_endpoint(text, scitags::kFireflyPort));
      auto prepared = sender_.prepare(ep);
      if (!prepared) {
        return std::unexpected(std::move(prepared).error().with_context("collector " + text));
      }
      collectors_.push_back(*prepared);
    }
    spdlog::info("backend {}: fireflies to {}{} collector(s)", name_,
                 o_.to_destination ? "each flow's destination and " : "", collectors_.size());
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    if (o_.ongoing_interval > 0) track(e);
    send(e);
  }

  std::chrono::milliseconds tick_interval() const noexcept override {
    return std::chrono::milliseconds(static_cast<std::int64_t>(o_.ongoing_interval * 1000));
  }

  void on_tick() noexcept override {
    for (auto& [key, e] : live_) {
      FlowEvent ongoing = e;
      ongoing.state = FlowState::kOngoing;
      ongoing.current_time = 0;
      if (o_.ongoing_shape != scitags::EnrichmentShape::kFlowmark) {
        send_shaped(ongoing);
        continue;
      }
      if (reader_) {
        if (auto info = reader_(ongoing)) {
          ongoing.tcp = *info;
          ongoing.usage = scitags::Usage{info->bytes_received, info->bytes_acked};
        }
      }
      send(ongoing);
    }
    flush();
  }

  // The worker's batch is over: what is queued leaves now (sendmmsg).
  void flush() noexcept override {
    batch_now_ = 0;  // the next event reads the clock again
    if (queued_.empty()) return;
    // Each destination's datagrams together, in their order (a stable sort; the order between
    // different destinations is nobody's to see): consecutive datagrams of one destination and
    // one size leave as one GSO buffer.
    auto by_destination = [](const Queued& a, const Queued& b) {
      return a.kind != b.kind ? a.kind < b.kind : a.to < b.to;
    };
    if (!std::is_sorted(queued_.begin(), queued_.end(), by_destination)) {
      std::stable_sort(queued_.begin(), queued_.end(), by_destination);
    }
    messages_.clear();
    for (const auto& q : queued_) {
      messages_.push_back({&q.to, std::string_view(arena_).substr(q.offset, q.size)});
    }
    errors_.resize(queued_.size());
    sender_.send_many(messages_, errors_);
    std::uint64_t sent[2] = {0, 0};  // added once per flush, not per datagram
    for (std::size_t i = 0; i < queued_.size(); ++i) {
      const int err = errors_[i];
      const int kind = queued_[i].kind;
      if (err == 0) {
        ++sent[kind];
        continue;
      }
      (err == ECONNREFUSED ? refused_ : failed_)[kind]->fetch_add(1, std::memory_order_relaxed);
      log_.log(spdlog::level::warn, [&] {
        return fmt::format("backend {}: firefly to {}: {}{}", name_, queued_[i].to.to_string(),
                           std::strerror(err),
                           err == ENETUNREACH || err == EHOSTUNREACH
                               ? " (no route: is the address right, the link up?)"
                               : "");
      });
    }
    for (int k = 0; k < 2; ++k) {
      if (sent[k]) sent_[k]->fetch_add(sent[k], std::memory_order_relaxed);
    }
    queued_.clear();
    arena_.clear();
  }

  void stop() noexcept override {
    flush();
    live_.clear();
  }

 private:
  void track(const FlowEvent& e) {
    auto key = key_of(e);
    if (e.state == FlowState::kEnd) {
      live_.erase(key);
    } else {
      live_[key] = e;
    }
  }

  // An ongoing firefly whose "netlink" object is in one of flowd-go's shapes (none when the
  // socket is not found: UDP, another host's flow, gone).
  void send_shaped(FlowEvent& ongoing) {
    std::optional<scitags::TcpDetail> detail;
    if (detail_reader_) detail = detail_reader_(ongoing);
    if (!detail) return send(ongoing);
    ongoing.usage = scitags::Usage{detail->bytes_received, detail->bytes_acked};
    ongoing.tcp.reset();
    // The send path of send(), with this encoding.
    const std::size_t offset = arena_.size();
    auto size = encoder_.encode_to(arena_, ongoing, now(), *detail, o_.ongoing_shape);
    if (!size) return invalid(size.error());
    queue_wire(ongoing, offset, *size);
  }

  void invalid(const Error& error) {
    invalid_->fetch_add(1, std::memory_order_relaxed);
    log_.log(spdlog::level::warn, "backend {}: cannot encode: {}", name_, error.message());
  }

  void send(const FlowEvent& in) {
    if (o_.tcp_info && reader_ && !in.tcp && in.protocol == scitags::Protocol::kTcp) {
      if (auto info = reader_(in)) {
        FlowEvent with_info = in;  // only here: a FlowEvent built per firefly was 1 % of the CPU
        with_info.tcp = *info;
        return encode_and_queue(with_info);
      }
    }
    encode_and_queue(in);
  }

  // Encoded straight into the send buffer (arena_): no copy from the encoder's own.
  void encode_and_queue(const FlowEvent& e) {
    const std::size_t offset = arena_.size();
    auto size = encoder_.encode_to(arena_, e, now());
    if (!size) return invalid(size.error());
    queue_wire(e, offset, *size);
  }

  // The syslog timestamp (and the current time of events without one): the clock is read once
  // for the fireflies sent together by one flush() — at most kFlushAt datagrams, a fraction of
  // a millisecond — rather than per firefly.
  Micros now() noexcept {
    if (batch_now_ == 0) batch_now_ = now_micros();
    return batch_now_;
  }

  // Queued (the datagram once — at arena_[offset, offset + size), encoded there — for every
  // destination), sent by flush() in sendmmsg calls (GSO runs) rather than one sendto each.
  void queue_wire(const FlowEvent& e, std::size_t offset, std::size_t size) {
    if (o_.to_destination) {
      queued_.push_back({Endpoint{e.dst.address, o_.port}, offset, size, 0});
    }
    for (const auto& c : collectors_) queued_.push_back({c, offset, size, 1});
    if (queued_.size() >= kFlushAt) flush();
  }

  // Datagrams queued before they are sent (flush() also comes at the end of each of the
  // worker's batches): enough for a few GSO buffers per sendmmsg.
  static constexpr std::size_t kFlushAt = 4 * scitags::FireflySender::kBatch;

  std::string name_;
  FireflyOptions o_;
  FlowInfoReader reader_;
  FlowDetailReader detail_reader_;
  scitags::FireflySender sender_;
  scitags::FireflyEncoder encoder_;
  std::vector<Endpoint> collectors_;
  // Datagrams waiting for flush(): their bytes in arena_, one entry per destination.
  struct Queued {
    Endpoint to;
    std::size_t offset, size;
    int kind;  // 0: the flow's destination, 1: a collector
  };
  std::string arena_;
  std::vector<Queued> queued_;
  Micros batch_now_ = 0;  // now() of the fireflies until the next flush(); 0: not read yet
  std::vector<scitags::FireflySender::Message> messages_;
  std::vector<int> errors_;
  // The flows this backend was told of, with the last event of each: the `ongoing` fireflies
  // repeat it. Its own, not the pipeline's table: it holds the events as delivered here (source
  // addresses made public, the last TcpInfo), only those this queue did not drop, and is read
  // on this backend's thread at its ticks without a lock on the pipeline's data path.
  std::unordered_map<FlowKey, FlowEvent, FlowKeyHash> live_;
  std::atomic<std::uint64_t>*sent_[2], *refused_[2], *failed_[2], *invalid_;
  // One failure a second on stderr, with the count of those not shown.
  LogLimiter log_{1, std::chrono::seconds(1), LogLimiter::Report::kSuffix};
};

}  // namespace

Result<void> register_firefly_backend(BackendFactories& factories, const FlowInfoReader& reader,
                                      const FlowDetailReader& detail_reader) {
  return factories.add(
      "firefly", "UDP fireflies to each flow's destination and to collectors (udp_firefly)",
      [reader, detail_reader](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        FireflyOptions o;
        FM_TRY(o.to_destination, s.boolean("to_destination", true));
        FM_TRY(auto port, s.integer("port", scitags::kFireflyPort, 1, 65535));
        o.port = static_cast<std::uint16_t>(port);
        FM_TRY(o.collector_texts, s.strings("collectors"));
        FM_TRY(auto ttl, s.integer("ttl", 1, 0, 255));
        o.sender.ttl = static_cast<int>(ttl);
        FM_TRY(auto iface, s.string("interface", ""));
        if (!iface.empty()) {
          auto i = resolve_interface(iface);
          if (!i) return s.error("interface", i.error().message());
          o.sender.iface = *i;
        }
        FM_TRY(o.encoder.application, s.string("application", "flowmark"));
        FM_TRY(o.encoder.hostname, s.string("hostname", ctx.hostname));
        FM_TRY(o.encoder.syslog_header, s.boolean("syslog_header", true));
        FM_TRY(auto shape, s.optional_string("ongoing_shape"));
        if (shape) {
          auto parsed = scitags::parse_enrichment_shape(*shape);
          if (!parsed) {
            return s.error("ongoing_shape",
                           fmt::format("'{}' is not flowmark, lean or compatible", *shape));
          }
          o.ongoing_shape = *parsed;
        }
        // flowd-go's period (enrichers.period, 1 s) when a shape asks for ongoing fireflies.
        FM_TRY(o.ongoing_interval, s.number("ongoing_interval", shape ? 1 : 0, 0, 86400));
        if (shape && o.ongoing_interval == 0) {
          return s.error("ongoing_shape",
                         "given while ongoing_interval = 0 (no ongoing fireflies): remove one");
        }
        FM_TRY(o.tcp_info, s.boolean("tcp_info", false));
        if (!o.to_destination && o.collector_texts.empty()) {
          return s.error("collectors",
                         "empty while to_destination = false: fireflies would go "
                         "nowhere");
        }
        return std::make_unique<FireflyBackend>(s.name(), std::move(o), reader, detail_reader, ctx);
      });
}

}  // namespace flowmark::daemon
