#include "daemon/backends/kafka/kafka_backend.hpp"

#include <arpa/inet.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <functional>
#include <iterator>
#include <map>
#include <mutex>

#include "daemon/backends/kafka/rdkafka_api.hpp"
#include "flowmark/collector/record.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon {
namespace {

enum class What : std::uint8_t { kRecords, kFireflies, kBoth };

struct ConfDeleter {
  const RdKafka* api = nullptr;
  void operator()(rd_kafka_conf_t* c) const noexcept { api->conf_destroy(c); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;

struct KafkaOptions {
  std::string name;
  std::string brokers;
  What what = What::kRecords;
  std::string topic;            // records (or fireflies with what = "fireflies")
  std::string fireflies_topic;  // what = "both"
  int flush_timeout_ms = 5000;
};

std::function<std::string(std::uint64_t)> not_shown(const std::string& name) {
  return [name](std::uint64_t n) {
    return fmt::format("backend {}: {} more warning(s) not shown", name, n);
  };
}

// How often on_event polls the producer for delivery reports (it also polls on every tick
// and whenever the queue is full).
constexpr unsigned kPollEvery = 64;

class KafkaBackend final : public Backend {
 public:
  KafkaBackend(const RdKafka* api, KafkaOptions o, ConfPtr conf, ServiceContext& ctx)
      : api_(api),
        o_(std::move(o)),
        conf_(std::move(conf)),
        counters_(ctx.counters),
        // A copy: a reload replaces the service's registry and frees the old one, while a
        // backend whose section did not change is kept (a pointer would dangle).
        registry_(ctx.registry ? std::make_unique<const scitags::Registry>(*ctx.registry)
                               : nullptr),
        sites_(ctx.sites),
        encoder_({.hostname = ctx.hostname, .syslog_header = false}),
        limit_(5, std::chrono::seconds(10), LogLimiter::Report::kLine, not_shown(o_.name)),
        client_limit_(5, std::chrono::seconds(10), LogLimiter::Report::kLine, not_shown(o_.name)) {
    constexpr std::string_view kHelp = "Messages of a kafka backend, by outcome";
    auto messages = [&](std::string_view outcome) {
      return &ctx.counters.counter("flowmark_kafka_messages_total",
                                   {{"backend", o_.name}, {"outcome", std::string(outcome)}},
                                   kHelp);
    };
    delivered_ = messages("delivered");
    failed_ = messages("failed");
    dropped_ = messages("dropped_buffer_full");
    queued_ = &ctx.counters.gauge("flowmark_kafka_queued", {{"backend", o_.name}},
                                  "Messages a kafka backend holds, not yet acknowledged");
    api_->conf_set_opaque(conf_.get(), this);
    api_->conf_set_dr_msg_cb(conf_.get(), &KafkaBackend::on_delivery);
    api_->conf_set_error_cb(conf_.get(), &KafkaBackend::on_error);
    api_->conf_set_log_cb(conf_.get(), &KafkaBackend::on_log);
  }

  ~KafkaBackend() override { destroy(); }

  Result<void> start() override {
    char err[512];
    rk_ = api_->create(RD_KAFKA_PRODUCER, conf_.get(), err, sizeof err);
    if (!rk_) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("[backend.{}] cannot create the Kafka producer: {}", o_.name, err));
    }
    [[maybe_unused]] auto* owned = conf_.release();  // rd_kafka_new owns it now
    topic_ = api_->topic_new(rk_, o_.topic.c_str(), nullptr);
    if (!topic_) return topic_error("topic", o_.topic);
    if (o_.what == What::kBoth) {
      fireflies_topic_ = api_->topic_new(rk_, o_.fireflies_topic.c_str(), nullptr);
      if (!fireflies_topic_) return topic_error("fireflies_topic", o_.fireflies_topic);
    }
    spdlog::info("backend {}: {} to Kafka topic {}{} at {}", o_.name,
                 o_.what == What::kFireflies ? "fireflies" : "flow records", o_.topic,
                 o_.what == What::kBoth ? fmt::format(" (fireflies to {})", o_.fireflies_topic)
                                        : std::string(),
                 o_.brokers);
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    if (++since_poll_ >= kPollEvery) {
      since_poll_ = 0;
      api_->poll(rk_, 0);
    }
    make_key(e);
    if (o_.what != What::kFireflies) {
      // The map as it is now: the service fills it after making its parts, a reload swaps it.
      auto sites = sites_ ? sites_->get() : nullptr;
      auto record = collector::make_record(e, registry_.get(), sites.get());
      json_.clear();
      collector::append_json(record, json_);
      produce(topic_, json_);
    }
    if (o_.what != What::kRecords) {
      auto wire = encoder_.encode(e, now_micros());
      if (!wire) {
        failed_->fetch_add(1, std::memory_order_relaxed);
        count_error("unencodable");
        limit_.log(spdlog::level::warn, "backend {}: cannot encode the firefly: {}", o_.name,
                   wire.error().message());
        return;
      }
      produce(o_.what == What::kBoth ? fireflies_topic_ : topic_, *wire);
    }
  }

  std::chrono::milliseconds tick_interval() const noexcept override {
    return std::chrono::milliseconds(100);
  }

  void on_tick() noexcept override {
    api_->poll(rk_, 0);
    since_poll_ = 0;
    queued_->store(static_cast<std::uint64_t>(api_->outq_len(rk_)), std::memory_order_relaxed);
  }

  void stop() noexcept override {
    if (!rk_) return;
    // Bounded: what is still queued after flush_timeout is purged, and each purged message's
    // delivery report counts it as failed (reason _PURGE_QUEUE or _PURGE_INFLIGHT).
    if (api_->flush(rk_, o_.flush_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      int left = api_->outq_len(rk_);
      spdlog::warn(
          "backend {}: {} message(s) not acknowledged within flush_timeout ({} ms): dropped, "
          "counted as failed",
          o_.name, left, o_.flush_timeout_ms);
      api_->purge(rk_, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      for (int i = 0; i < 100 && api_->outq_len(rk_) > 0; ++i) api_->poll(rk_, 10);
    }
    // What still has no report (none, unless librdkafka kept it): failed, not flushed.
    if (int left = api_->outq_len(rk_); left > 0) {
      failed_->fetch_add(static_cast<std::uint64_t>(left), std::memory_order_relaxed);
      count_error("not_flushed", static_cast<std::uint64_t>(left));
    }
    queued_->store(0, std::memory_order_relaxed);
    limit_.flush();
    client_limit_.flush();
    destroy();
  }

 private:
  Result<void> topic_error(std::string_view key, const std::string& topic) {
    return fail(Errc::kInvalidArgument,
                fmt::format("[backend.{}] {}: cannot use topic '{}': {}", o_.name, key, topic,
                            api_->err2str(api_->last_error())));
  }

  void destroy() noexcept {
    if (topic_) api_->topic_destroy(topic_);
    if (fireflies_topic_) api_->topic_destroy(fireflies_topic_);
    topic_ = fireflies_topic_ = nullptr;
    if (rk_) api_->destroy(rk_);
    rk_ = nullptr;
  }

  // The flow's identity: "tcp 192.0.2.1 2345 192.0.2.2 443 1765081800000000" (start time in
  // microseconds since the epoch), written into a fixed buffer: no allocation, and not
  // inet_ntop for IPv4 (it formats with sprintf: a tenth of this backend's time).
  void make_key(const FlowEvent& e) {
    char* p = key_;
    for (char c : scitags::to_string(e.protocol)) *p++ = c;
    p = put_endpoint(p, e.src);
    p = put_endpoint(p, e.dst);
    *p++ = ' ';
    p = put_number(p, static_cast<std::uint64_t>(e.start_time));
    key_len_ = static_cast<std::size_t>(p - key_);
  }

  static char* put_endpoint(char* p, const Endpoint& ep) {
    *p++ = ' ';
    if (ep.address.is_v4()) {
      const std::uint8_t* b = ep.address.bytes();
      for (int i = 0; i < 4; ++i) {
        if (i) *p++ = '.';
        p = put_number(p, b[i]);
      }
    } else {
      auto a = ep.address.in6();
      if (::inet_ntop(AF_INET6, &a, p, INET6_ADDRSTRLEN)) p += std::strlen(p);
    }
    *p++ = ' ';
    return put_number(p, ep.port);
  }

  static char* put_number(char* p, std::uint64_t v) {
    char digits[20];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    while (n) *p++ = digits[--n];
    return p;
  }

  void produce(rd_kafka_topic_t* topic, std::string_view payload) noexcept {
    auto send = [&] {
      return api_->produce(topic, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY,
                           const_cast<char*>(payload.data()), payload.size(), key_, key_len_,
                           nullptr);
    };
    if (send() == 0) return;
    auto err = api_->last_error();
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      // Reports not yet served keep their messages counted in the queue: serve them, retry.
      api_->poll(rk_, 0);
      if (send() == 0) return;
      err = api_->last_error();
    }
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      dropped_->fetch_add(1, std::memory_order_relaxed);
      limit_.log(spdlog::level::warn,
                 "backend {}: the buffer is full ({} messages wait for the brokers): message "
                 "dropped",
                 o_.name, api_->outq_len(rk_));
      return;
    }
    failed_->fetch_add(1, std::memory_order_relaxed);
    count_error(api_->err2name(err));
    limit_.log(spdlog::level::warn, "backend {}: cannot produce to {}: {}", o_.name,
               api_->topic_name(topic), api_->err2str(err));
  }

  void count_error(const char* reason, std::uint64_t n = 1) {
    std::atomic<std::uint64_t>* c;
    {
      std::lock_guard lock(errors_mutex_);
      auto it = errors_.find(reason);
      if (it == errors_.end()) {
        it = errors_
                 .emplace(reason, &counters_.counter("flowmark_kafka_errors_total",
                                                     {{"backend", o_.name}, {"reason", reason}},
                                                     "Errors of a kafka backend, by reason"))
                 .first;
      }
      c = it->second;
    }
    c->fetch_add(n, std::memory_order_relaxed);
  }

  // Delivery report: on the thread that polls (the worker).
  static void on_delivery(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
    auto* self = static_cast<KafkaBackend*>(opaque);
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      self->delivered_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    self->failed_->fetch_add(1, std::memory_order_relaxed);
    self->count_error(self->api_->err2name(m->err));
    self->limit_.log(spdlog::level::warn, "backend {}: message not delivered: {}", self->o_.name,
                     self->api_->err2str(m->err));
  }

  // Client errors (brokers down, authentication...): on the polling thread too.
  static void on_error(rd_kafka_t*, int err, const char* reason, void* opaque) {
    auto* self = static_cast<KafkaBackend*>(opaque);
    auto code = static_cast<rd_kafka_resp_err_t>(err);
    self->count_error(self->api_->err2name(code));
    self->client_limit_.log(spdlog::level::warn, "backend {}: Kafka: {}: {}", self->o_.name,
                            self->api_->err2name(code), reason);
  }

  // librdkafka's own log lines, from its threads: debug unless they are warnings or worse.
  static void on_log(const rd_kafka_t* rk, int level, const char* facility, const char* buf) {
    auto* self = static_cast<KafkaBackend*>((*rdkafka_api())->opaque(rk));  // loaded: cached
    // Connection failures come through on_error too (counted there): debug here.
    if (level > 4 || std::strcmp(facility, "FAIL") == 0) {
      spdlog::debug("backend {}: librdkafka {}: {}", self->o_.name, facility, buf);
      return;
    }
    std::lock_guard lock(self->log_mutex_);
    self->log_limit_.log(spdlog::level::warn, "backend {}: librdkafka {}: {}", self->o_.name,
                         facility, buf);
  }

  const RdKafka* api_;  // librdkafka, loaded at run time
  KafkaOptions o_;
  ConfPtr conf_;
  Counters& counters_;
  std::unique_ptr<const scitags::Registry> registry_;  // names as of this backend's creation
  std::shared_ptr<collector::SiteMapHandle> sites_;
  scitags::FireflyEncoder encoder_;
  rd_kafka_t* rk_ = nullptr;
  rd_kafka_topic_t* topic_ = nullptr;  // `topic`: records, or fireflies with what = fireflies
  rd_kafka_topic_t* fireflies_topic_ = nullptr;
  // "udp " + 2 × (" " + IPv6 text + " " + port) + " " + 20 digits: under 140 bytes.
  char key_[4 + 2 * (2 + INET6_ADDRSTRLEN + 5) + 1 + 20];
  std::size_t key_len_ = 0;
  std::string json_;
  unsigned since_poll_ = 0;
  std::atomic<std::uint64_t>*delivered_, *failed_, *dropped_, *queued_;
  std::mutex errors_mutex_;
  std::map<std::string, std::atomic<std::uint64_t>*, std::less<>> errors_;
  LogLimiter limit_;         // the worker's messages (data path, delivery reports)
  LogLimiter client_limit_;  // client errors
  std::mutex log_mutex_;     // librdkafka logs from its own threads
  LogLimiter log_limit_{5, std::chrono::seconds(10), LogLimiter::Report::kLine, not_shown(o_.name)};
};

// Kafka topic names: 1..249 of [a-zA-Z0-9._-].
Result<void> check_topic(Section& s, std::string_view key, const std::string& t) {
  if (t.empty() || t.size() > 249 || t == "." || t == "..") {
    return s.error(key, fmt::format("'{}' is not a Kafka topic name (1 to 249 characters)", t));
  }
  for (char c : t) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) {
      return s.error(key, fmt::format("'{}' is not a Kafka topic name (letters, digits, '.', "
                                      "'_' and '-' only)",
                                      t));
    }
  }
  return {};
}

Result<void> set(const RdKafka* api, Section& s, rd_kafka_conf_t* conf, std::string_view key,
                 const std::string& name, const std::string& value) {
  char err[512];
  if (api->conf_set(conf, name.c_str(), value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
    return s.error(key, fmt::format("librdkafka property {} = '{}': {}", name, value, err));
  }
  return {};
}

Result<std::unique_ptr<Backend>> make_kafka_backend(Section& s, ServiceContext& ctx) {
  KafkaOptions o;
  o.name = s.name();
  FM_TRY(o.brokers, s.string("brokers", ""));
  if (o.brokers.empty()) {
    return s.error("brokers", "required: the bootstrap brokers, \"host:port,host:port\"");
  }
  FM_TRY(auto what, s.choice("what", "records", {"records", "fireflies", "both"}));
  o.what = what == "records"     ? What::kRecords
           : what == "fireflies" ? What::kFireflies
                                 : What::kBoth;
  FM_TRY(o.topic, s.string("topic", ""));
  if (o.topic.empty()) return s.error("topic", "required: the Kafka topic to produce to");
  FM_TRY_VOID(check_topic(s, "topic", o.topic));
  FM_TRY(auto ff_topic, s.optional_string("fireflies_topic"));
  if (o.what == What::kBoth) {
    if (!ff_topic) return s.error("fireflies_topic", "required with what = \"both\"");
    FM_TRY_VOID(check_topic(s, "fireflies_topic", *ff_topic));
    if (*ff_topic == o.topic) {
      return s.error("fireflies_topic", "must differ from topic (records go there)");
    }
    o.fireflies_topic = *ff_topic;
  } else if (ff_topic) {
    return s.error("fireflies_topic", "only with what = \"both\"");
  }
  FM_TRY(auto buffer, s.integer("buffer", 100000, 1, 10000000));
  FM_TRY(auto acks, s.scalar("acks"));
  if (!acks) acks = "all";
  if (*acks != "all" && *acks != "1" && *acks != "0" && *acks != "-1") {
    return s.error("acks", fmt::format("'{}' is not one of: all, 1, 0", *acks));
  }
  FM_TRY(auto compression,
         s.choice("compression", "none", {"none", "gzip", "snappy", "lz4", "zstd"}));
  FM_TRY(auto flush_timeout, s.number("flush_timeout", 5.0, 0.0, 3600.0));
  o.flush_timeout_ms = static_cast<int>(flush_timeout * 1000.0);

  auto loaded = rdkafka_api();
  if (!loaded) {  // refused like a configuration error: this one cannot be served here
    return fail(Errc::kInvalidArgument,
                fmt::format("{} type: {}", s.where(), loaded.error().message()));
  }
  const RdKafka* api = *loaded;
  ConfPtr conf(api->conf_new(), ConfDeleter{api});
  FM_TRY_VOID(set(api, s, conf.get(), "brokers", "bootstrap.servers", o.brokers));
  FM_TRY_VOID(
      set(api, s, conf.get(), "buffer", "queue.buffering.max.messages", std::to_string(buffer)));
  FM_TRY_VOID(set(api, s, conf.get(), "acks", "acks", *acks));
  FM_TRY_VOID(set(api, s, conf.get(), "compression", "compression.codec", compression));
  FM_TRY_VOID(set(api, s, conf.get(), "type", "client.id", "flowmarkd"));
  // The partition of a key as Kafka's Java clients choose it (murmur2): a flow's messages
  // land where a Java producer of the same key would put them.
  FM_TRY_VOID(set(api, s, conf.get(), "type", "partitioner", "murmur2_random"));
  FM_TRY_VOID(set(api, s, conf.get(), "type", "log.connection.close", "false"));
  // Anything else librdkafka knows (security, timeouts, batching): after ours, so it wins.
  FM_TRY(auto extra, s.table("librdkafka"));
  if (extra) {
    for (const auto& key : extra->keys()) {
      std::string value;
      if (auto flag = extra->boolean(key, false)) {
        value = *flag ? "true" : "false";
      } else {
        auto text = extra->scalar(key);  // present: never nullopt
        if (!text) return extra->error(key, "is not a string, an integer or a boolean");
        value = text->value_or("");
      }
      FM_TRY_VOID(set(api, *extra, conf.get(), key, key, value));
    }
    FM_TRY_VOID(extra->finish());
  }
  return std::make_unique<KafkaBackend>(api, std::move(o), std::move(conf), ctx);
}

}  // namespace

Result<void> register_kafka_backend(BackendFactories& factories) {
  return factories.add("kafka",
                       "flow records and/or fireflies as JSON to Kafka topics (librdkafka), keyed "
                       "by flow",
                       make_kafka_backend);
}

}  // namespace flowmark::daemon
