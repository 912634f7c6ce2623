// The kafka backend alone: N distinct flow events (start and end of N/2 flows) handed to
// on_event() one after the other, as a backend worker does, into librdkafka's mock cluster
// run in this process (3 brokers, a topic of 8 partitions). Prints events/s from the first
// on_event() to the last delivery report (stop() flushes), the CPU of the calling thread per
// event (make_record/encode, key, rd_kafka_produce, delivery reports), the CPU of the whole
// process per event (librdkafka's threads and the mock brokers too), and checks that the mock
// cluster holds every message (high watermarks summed).
//
//   kafka_backend_bench [EVENTS=1000000] [records|fireflies]
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <sys/resource.h>

#include <fmt/format.h>
#include <toml++/toml.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "daemon/backends/kafka/kafka_backend.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/daemon/section.hpp"

using namespace flowmark;
using namespace flowmark::daemon;

namespace {

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double process_cpu_s() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

long long high_watermarks(const std::string& bootstrap, const char* topic, int partitions) {
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
  rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
  long long total = 0;
  for (int p = 0; p < partitions; ++p) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(c, topic, p, &lo, &hi, 10000)) return -1;
    total += hi;
  }
  rd_kafka_destroy(c);
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  const long events = argc > 1 ? std::atol(argv[1]) : 1000000;
  const std::string what = argc > 2 ? argv[2] : "fireflies";
  constexpr const char* kTopic = "bench";
  constexpr int kPartitions = 8;

  char err[256];
  rd_kafka_conf_t* mconf = rd_kafka_conf_new();
  rd_kafka_conf_set(mconf, "log_level", "3", err, sizeof err);  // no bootstrap: on purpose
  rd_kafka_t* owner = rd_kafka_new(RD_KAFKA_PRODUCER, mconf, err, sizeof err);
  rd_kafka_mock_cluster_t* cluster = rd_kafka_mock_cluster_new(owner, 3);
  rd_kafka_mock_topic_create(cluster, kTopic, kPartitions, 1);
  const std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);

  auto doc = toml::parse(fmt::format(R"([backend.k]
type = "kafka"
brokers = "{}"
topic = "{}"
what = "{}"
buffer = 2000000
flush_timeout = 60
[backend.k.librdkafka]
"linger.ms" = 20
)",
                                     bootstrap, kTopic, what));
  Counters counters;
  ServiceContext ctx{counters, nullptr, "bench.example.org"};
  BackendFactories factories("backend");
  if (auto r = register_kafka_backend(factories); !r) return 1;
  Section section(doc["backend"]["k"].as_table(), "[backend.k]", "k");
  section.mark_used("type");  // the service reads it
  auto backend = factories.create("kafka", section, ctx);
  if (!backend) {
    std::fprintf(stderr, "%s\n", backend.error().message().c_str());
    return 1;
  }
  if (auto r = section.finish(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }
  if (auto r = (*backend)->start(); !r) {
    std::fprintf(stderr, "%s\n", r.error().message().c_str());
    return 1;
  }

  scitags::FlowEvent e;
  e.protocol = scitags::Protocol::kTcp;
  e.dst = *Endpoint::parse("192.0.2.1:443");
  e.experiment = 2;
  e.activity = 1;
  const Micros t0 = now_micros();
  const double cpu0 = thread_cpu_s(), pcpu0 = process_cpu_s();
  const auto start = std::chrono::steady_clock::now();
  auto next_tick = start;
  for (long i = 0; i < events; ++i) {
    const long f = i / 2;
    e.state = i % 2 ? scitags::FlowState::kEnd : scitags::FlowState::kStart;
    e.src = Endpoint{IpAddress::v4(static_cast<std::uint32_t>(0x0a000000 + (f & 0xffffff))),
                     static_cast<std::uint16_t>(1024 + f % 60000)};
    e.start_time = t0 + f;
    e.end_time = i % 2 ? t0 + f + 1000000 : 0;
    if (i % 2)
      e.usage = scitags::Usage{.received = 10, .sent = static_cast<std::uint64_t>(f)};
    else
      e.usage.reset();
    (*backend)->on_event(e);
    if ((i & 1023) == 0) {
      auto now = std::chrono::steady_clock::now();
      if (now >= next_tick) {
        (*backend)->on_tick();
        next_tick = now + (*backend)->tick_interval();
      }
    }
  }
  const double produce_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  (*backend)->stop();
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = thread_cpu_s() - cpu0, pcpu = process_cpu_s() - pcpu0;
  const auto delivered =
      counters.value("flowmark_kafka_messages_total", {{"backend", "k"}, {"outcome", "delivered"}});
  const long long arrived = high_watermarks(bootstrap, kTopic, kPartitions);
  std::printf(
      "{\"what\":\"%s\",\"events\":%ld,\"delivered\":%llu,\"arrived\":%lld,\"seconds\":%.3f,"
      "\"per_s\":%.0f,\"produce_seconds\":%.3f,\"caller_cpu_us_per_event\":%.3f,"
      "\"process_cpu_us_per_event\":%.3f}\n",
      what.c_str(), events, static_cast<unsigned long long>(delivered), arrived, total_s,
      static_cast<double>(delivered) / total_s, produce_s, cpu / static_cast<double>(events) * 1e6,
      pcpu / static_cast<double>(events) * 1e6);
  backend->reset();
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(owner);
  return arrived == static_cast<long long>(delivered) && delivered == std::uint64_t(events) ? 0 : 1;
}
