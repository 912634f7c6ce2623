// A Kafka cluster for tests and benchmarks: librdkafka's mock cluster (rdkafka_mock.h), which
// speaks the Kafka protocol over real TCP on loopback, driven from standard input.
//
//   kafka_mock_broker [--brokers N] [TOPIC:PARTITIONS ...]
//
// Prints the bootstrap servers ("127.0.0.1:PORT,...") as its first stdout line, then reads
// one command per line and answers each with one line:
//   down N        broker N (1-based) closes its connections and refuses new ones → "ok"
//   up N          broker N accepts again → "ok"
//   count TOPIC   the sum of the topic's partitions' high watermarks (messages appended since
//                 the start; the mock drops old segments, the watermark stays) → "count N"
//   quit          (or end of input) → exits
// Errors are one line starting with "error".
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>

namespace {

rd_kafka_t* new_client(rd_kafka_type_t type, const std::string& bootstrap) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (!bootstrap.empty() && rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), err,
                                              sizeof err) != RD_KAFKA_CONF_OK) {
    std::fprintf(stderr, "kafka_mock_broker: %s\n", err);
    std::exit(1);
  }
  rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
  rd_kafka_t* rk = rd_kafka_new(type, conf, err, sizeof err);
  if (!rk) {
    std::fprintf(stderr, "kafka_mock_broker: rd_kafka_new: %s\n", err);
    std::exit(1);
  }
  return rk;
}

// The sum of the high watermarks of every partition of `topic`, or -1 (error on stdout).
long long count(rd_kafka_t* client, const std::string& topic) {
  rd_kafka_topic_t* t = rd_kafka_topic_new(client, topic.c_str(), nullptr);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t e = rd_kafka_metadata(client, 0, t, &md, 5000);
  rd_kafka_topic_destroy(t);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 || md->topics[0].err) {
    std::cout << "error metadata " << topic << ": " << rd_kafka_err2str(e ? e : md->topics[0].err)
              << std::endl;
    if (md) rd_kafka_metadata_destroy(md);
    return -1;
  }
  long long total = 0;
  for (int p = 0; p < md->topics[0].partition_cnt; ++p) {
    int64_t low = 0, high = 0;
    e = rd_kafka_query_watermark_offsets(client, topic.c_str(), md->topics[0].partitions[p].id,
                                         &low, &high, 5000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
      std::cout << "error watermarks " << topic << "/" << p << ": " << rd_kafka_err2str(e)
                << std::endl;
      rd_kafka_metadata_destroy(md);
      return -1;
    }
    total += high;
  }
  rd_kafka_metadata_destroy(md);
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  int brokers = 3;
  rd_kafka_t* owner = new_client(RD_KAFKA_PRODUCER, "");  // the mock cluster's handle
  rd_kafka_mock_cluster_t* cluster = nullptr;
  int i = 1;
  if (i + 1 < argc && std::string(argv[i]) == "--brokers") {
    brokers = std::atoi(argv[i + 1]);
    i += 2;
  }
  if (brokers < 1) {
    std::fprintf(stderr, "usage: kafka_mock_broker [--brokers N] [TOPIC:PARTITIONS ...]\n");
    return 2;
  }
  cluster = rd_kafka_mock_cluster_new(owner, brokers);
  if (!cluster) {
    std::fprintf(stderr, "kafka_mock_broker: cannot create the mock cluster\n");
    return 1;
  }
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    auto colon = arg.rfind(':');
    int parts = colon == std::string::npos ? 1 : std::atoi(arg.c_str() + colon + 1);
    std::string name = arg.substr(0, colon);
    if (parts < 1 || name.empty()) {
      std::fprintf(stderr, "kafka_mock_broker: bad topic %s (TOPIC:PARTITIONS)\n", argv[i]);
      return 2;
    }
    if (auto e = rd_kafka_mock_topic_create(cluster, name.c_str(), parts, 1)) {
      std::fprintf(stderr, "kafka_mock_broker: topic %s: %s\n", name.c_str(), rd_kafka_err2str(e));
      return 1;
    }
  }
  std::string bootstrap = rd_kafka_mock_cluster_bootstraps(cluster);
  std::cout << bootstrap << std::endl;

  rd_kafka_t* client = nullptr;  // for `count`, made on first use
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd, arg;
    in >> cmd >> arg;
    if (cmd == "quit") break;
    if (cmd == "down" || cmd == "up") {
      int id = std::atoi(arg.c_str());
      if (id < 1 || id > brokers) {
        std::cout << "error no broker " << arg << std::endl;
        continue;
      }
      auto e = cmd == "down" ? rd_kafka_mock_broker_set_down(cluster, id)
                             : rd_kafka_mock_broker_set_up(cluster, id);
      if (e) {
        std::cout << "error " << rd_kafka_err2str(e) << std::endl;
      } else {
        std::cout << "ok" << std::endl;
      }
    } else if (cmd == "count" && !arg.empty()) {
      if (!client) client = new_client(RD_KAFKA_CONSUMER, bootstrap);
      long long n = count(client, arg);
      if (n >= 0) std::cout << "count " << n << std::endl;
    } else if (!cmd.empty()) {
      std::cout << "error unknown command '" << cmd << "' (down N, up N, count TOPIC, quit)"
                << std::endl;
    }
  }
  if (client) rd_kafka_destroy(client);
  rd_kafka_mock_cluster_destroy(cluster);
  rd_kafka_destroy(owner);
  return 0;
}
