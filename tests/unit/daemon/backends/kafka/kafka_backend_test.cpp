// The `kafka` backend: its configuration errors name the key; against librdkafka's mock
// cluster (in this process, the Kafka protocol over loopback TCP) every event becomes one
// message keyed by its flow, read back by a plain consumer; with no broker reachable the
// buffer bound drops and counts, and stop() purges what is left and counts it as failed.
#include "daemon/backends/kafka/kafka_backend.hpp"

#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../../test_util.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;

struct Fixture : testing::BackendFixture {
  Fixture() : BackendFixture("kafka.example.org") {
    EXPECT_TRUE(register_kafka_backend(factories));
  }
  Result<std::unique_ptr<Backend>> make(const std::string& text) {
    return BackendFixture::make("kafka", "k", text);
  }
  std::uint64_t messages(const char* outcome) const {
    return counters.value("flowmark_kafka_messages_total",
                          {{"backend", "k"}, {"outcome", outcome}});
  }
  std::uint64_t errors(const char* reason) const {
    return counters.value("flowmark_kafka_errors_total", {{"backend", "k"}, {"reason", reason}});
  }
};

std::string error_of(const std::string& text) {
  Fixture f;
  auto b = f.make(text);
  return b ? std::string("no error") : b.error().message();
}

TEST(KafkaBackend, ConfigurationErrorsNameTheKey) {
  const std::string base = "brokers = '127.0.0.1:1'\n";
  EXPECT_NE(error_of("topic = 't'").find("[backend.k] brokers: required"), std::string::npos);
  EXPECT_NE(error_of(base).find("[backend.k] topic: required"), std::string::npos);
  EXPECT_NE(error_of(base + "topic = 'a b'").find("[backend.k] topic: 'a b' is not a Kafka"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\nwhat = 'both'").find("[backend.k] fireflies_topic"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\nfireflies_topic = 'f'").find("only with what"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\nwhat = 'both'\nfireflies_topic = 't'").find("differ"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\nacks = 2").find("[backend.k] acks: '2'"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\nbuffer = 0").find("[backend.k] buffer"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\ncompression = 'lzma'").find("[backend.k] compression"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\n[librdkafka]\n'linger.ms' = 'soon'")
                .find("[backend.k.librdkafka] linger.ms: librdkafka property linger.ms = 'soon'"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\n[librdkafka]\n'no.such' = 1")
                .find("[backend.k.librdkafka] no.such"),
            std::string::npos);
  EXPECT_NE(error_of(base + "topic = 't'\n[librdkafka]\n'linger.ms' = [1]")
                .find("[backend.k.librdkafka] linger.ms: is not a string, an integer or a boolean"),
            std::string::npos);
  // Strings, integers and booleans pass through; acks as an integer.
  EXPECT_EQ(error_of(base + "topic = 't'\nacks = 1\n[librdkafka]\n'linger.ms' = 20\n"
                            "'enable.idempotence' = true\n'client.id' = 'x'"),
            "no error");
}

// A mock cluster of one broker with topic "t" of 4 partitions, for the test's lifetime.
class MockCluster {
 public:
  MockCluster() {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
    owner_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    cluster_ = rd_kafka_mock_cluster_new(owner_, 1);
    rd_kafka_mock_topic_create(cluster_, "t", 4, 1);
  }
  ~MockCluster() {
    rd_kafka_mock_cluster_destroy(cluster_);
    rd_kafka_destroy(owner_);
  }
  std::string bootstrap() const { return rd_kafka_mock_cluster_bootstraps(cluster_); }

  // Every message of topic `t` as (key, payload), by partition, read from the beginning.
  std::map<int, std::vector<std::pair<std::string, std::string>>> consume() const {
    char err[256];
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap().c_str(), err, sizeof err);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", err, sizeof err);  // EOF soon
    rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    rd_kafka_topic_t* t = rd_kafka_topic_new(c, "t", nullptr);
    std::map<int, std::vector<std::pair<std::string, std::string>>> out;
    for (int p = 0; p < 4; ++p) {
      rd_kafka_consume_start(t, p, RD_KAFKA_OFFSET_BEGINNING);
      for (;;) {
        rd_kafka_message_t* m = rd_kafka_consume(t, p, 5000);
        if (!m) break;  // timed out: the test then fails on the count
        bool eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (!m->err) {
          out[p].emplace_back(std::string(static_cast<const char*>(m->key), m->key_len),
                              std::string(static_cast<const char*>(m->payload), m->len));
        }
        rd_kafka_message_destroy(m);
        if (eof) break;
      }
      rd_kafka_consume_stop(t, p);
    }
    rd_kafka_topic_destroy(t);
    rd_kafka_destroy(c);
    return out;
  }

 private:
  rd_kafka_t* owner_;
  rd_kafka_mock_cluster_t* cluster_;
};

TEST(KafkaBackend, EveryEventOneMessageKeyedByFlowInOnePartition) {
  MockCluster cluster;
  Fixture f;
  auto b = f.make("brokers = '" + cluster.bootstrap() + "'\ntopic = 't'\nflush_timeout = 20");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  constexpr int kFlows = 20;
  for (int i = 0; i < kFlows; ++i) {
    auto e = testing::sample_event("192.0.2.1", "198.51.100.7",
                                   static_cast<std::uint16_t>(3000 + i), FlowState::kStart);
    e.start_time = 1765081800000000 + i;
    (*b)->on_event(e);
    e.state = FlowState::kEnd;
    e.end_time = e.start_time + 2000000;
    e.usage = scitags::Usage{.received = 5, .sent = 1000};
    (*b)->on_event(e);
  }
  auto v6 = testing::sample_event("2001:db8::1", "2001:db8:ffff::2", 4444);  // an IPv6 flow
  (*b)->on_event(v6);
  (*b)->stop();  // flushes: every delivery report is in
  EXPECT_EQ(f.messages("delivered"), 2u * kFlows + 1);
  EXPECT_EQ(f.messages("failed"), 0u);
  std::map<std::string, std::vector<std::string>> by_key;
  std::map<std::string, int> partition_of;
  for (const auto& [p, msgs] : cluster.consume()) {
    for (const auto& [key, payload] : msgs) {
      by_key[key].push_back(payload);
      auto [it, fresh] = partition_of.emplace(key, p);
      EXPECT_EQ(it->second, p) << key << " in two partitions";
    }
  }
  ASSERT_EQ(by_key.size(), static_cast<std::size_t>(kFlows) + 1);
  const std::string v6_key =
      "tcp 2001:db8::1 4444 2001:db8:ffff::2 5777 " + std::to_string(v6.start_time);
  ASSERT_EQ(by_key[v6_key].size(), 1u);
  EXPECT_NE(by_key[v6_key][0].find(R"("src_ip":"2001:db8::1")"), std::string::npos);
  for (int i = 0; i < kFlows; ++i) {
    const std::string key = "tcp 192.0.2.1 " + std::to_string(3000 + i) + " 198.51.100.7 5777 " +
                            std::to_string(1765081800000000 + i);
    ASSERT_EQ(by_key[key].size(), 2u) << key;
    EXPECT_NE(by_key[key][0].find(R"("state":"open")"), std::string::npos) << by_key[key][0];
    EXPECT_NE(by_key[key][1].find(R"("state":"complete")"), std::string::npos) << by_key[key][1];
    EXPECT_NE(by_key[key][1].find(R"("bytes_sent":1000,)"), std::string::npos) << by_key[key][1];
  }
}

TEST(KafkaBackend, BufferBoundDropsAndStopPurgesWhatIsLeft) {
  Fixture f;
  // Port 1 on loopback: refused, the messages wait. Never delivered.
  auto b = f.make("brokers = '127.0.0.1:1'\ntopic = 't'\nbuffer = 3\nflush_timeout = 0.2");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  for (int i = 0; i < 10; ++i) {
    (*b)->on_event(
        testing::sample_event("192.0.2.1", "192.0.2.2", static_cast<std::uint16_t>(4000 + i)));
  }
  EXPECT_EQ(f.messages("dropped_buffer_full"), 7u);
  (*b)->stop();
  EXPECT_EQ(f.messages("failed"), 3u);
  EXPECT_EQ(f.messages("delivered"), 0u);
  EXPECT_EQ(f.errors("_PURGE_QUEUE") + f.errors("_PURGE_INFLIGHT"), 3u);
}

}  // namespace
}  // namespace flowmark::daemon
