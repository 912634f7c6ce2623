// The `kafka` backend: flowmarkd as a Kafka producer (librdkafka), the hand-off to Kafka-based
// stacks. Each event becomes a JSON message keyed by its flow (protocol, source, source port,
// destination, destination port, start time), so that one flow's messages go to one
// partition, in order:
//   what = "records"   the flow's collector record (collector::append_json); a flow's later
//                      record replaces its earlier ones: a consumer keeps the latest per key
//   what = "fireflies" the event as the firefly JSON document flowmark sends (no syslog header)
//   what = "both"      records to `topic`, fireflies to `fireflies_topic`
// While brokers are unreachable up to `buffer` messages wait in librdkafka's queue; past it a
// message is dropped and counted (outcome dropped_buffer_full). Delivery reports are counted:
//   flowmark_kafka_messages_total{backend,outcome=delivered|failed|dropped_buffer_full}
//   flowmark_kafka_errors_total{backend,reason=<rd_kafka_err2name>}
//
// [backend.kafka]
// type = "kafka"
// brokers = "kafka1:9092,kafka2:9092"
// topic = "flowmark.records"
// what = "records"          # "records" | "fireflies" | "both" (then fireflies_topic = "...")
// buffer = 100000           # messages held while brokers are unreachable
// acks = "all"              # "all" | "1" | "0"
// compression = "lz4"       # "none" | "gzip" | "snappy" | "lz4" | "zstd"
// flush_timeout = 5.0       # seconds stop() waits for the queue to drain
// [backend.kafka.librdkafka]  # any librdkafka property, passed through
// "security.protocol" = "ssl"
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_kafka_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
