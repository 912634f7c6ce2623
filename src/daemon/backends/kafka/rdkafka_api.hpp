// The librdkafka functions the kafka backend calls, resolved from librdkafka.so.1 loaded with
// dlopen() when a kafka backend is first configured, not linked: librdkafka brings OpenSSL
// and Cyrus SASL, about 2 MB of every flowmarkd's resident memory whether it sends to Kafka or
// not (the same reason libcurl and libpcap are loaded this way). Only the headers of
// librdkafka-dev are used at build time; at run time the kafka backend needs librdkafka1.
// FLOWMARK_LIBRDKAFKA=FILE loads FILE instead (tests: the error when it is missing).
//
//   FM_TRY(const RdKafka* rk, rdkafka_api());   // the error says which package to install
//   rd_kafka_conf_t* conf = rk->conf_new();   // rd_kafka_conf_new()
#pragma once

#include <librdkafka/rdkafka.h>

#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

// (member, rd_kafka_ suffix): rd_kafka_new is `create` (new is a keyword), the others keep
// their names.
#define FLOWMARK_RDKAFKA_FUNCTIONS(X)       \
  X(conf_new, conf_new)                     \
  X(conf_destroy, conf_destroy)             \
  X(conf_set, conf_set)                     \
  X(conf_set_opaque, conf_set_opaque)       \
  X(conf_set_dr_msg_cb, conf_set_dr_msg_cb) \
  X(conf_set_error_cb, conf_set_error_cb)   \
  X(conf_set_log_cb, conf_set_log_cb)       \
  X(create, new)                            \
  X(destroy, destroy)                       \
  X(opaque, opaque)                         \
  X(topic_new, topic_new)                   \
  X(topic_destroy, topic_destroy)           \
  X(topic_name, topic_name)                 \
  X(produce, produce)                       \
  X(last_error, last_error)                 \
  X(poll, poll)                             \
  X(flush, flush)                           \
  X(purge, purge)                           \
  X(outq_len, outq_len)                     \
  X(err2name, err2name)                     \
  X(err2str, err2str)

struct RdKafka {
// NOLINTNEXTLINE(bugprone-macro-parentheses): a declarator, not an expression
#define FLOWMARK_RDKAFKA_MEMBER(member, name) decltype(&::rd_kafka_##name) member = nullptr;
  FLOWMARK_RDKAFKA_FUNCTIONS(FLOWMARK_RDKAFKA_MEMBER)
#undef FLOWMARK_RDKAFKA_MEMBER
};

// Loads librdkafka once per process (thread-safe; it stays loaded); an error naming the
// package to install when it cannot.
Result<const RdKafka*> rdkafka_api();

}  // namespace flowmark::daemon
