// flowmark::observe — flow records as IPFIX messages (RFC 7011), biflows per RFC 5103.
//
// Our own writer, beside the JSON/CSV record formats: it encodes records into messages
// and hands each finished message to a callback (a file writer for the RFC 5655 file
// format, a socket later). Templates (one per IP version) go in the first message, before
// any data set; messages stay at or below max_message_size; the sequence number counts
// data records sent before the message in the observation domain.
//
//   IpfixWriter w({.observation_domain = 7}, [&](std::span<const std::uint8_t> m) {
//     fwrite(m.data(), 1, m.size(), f);
//   });
//   w.add(record);   // from the observer's sink
//   w.flush();       // at the end: the message being built is emitted
//
// Biflow records carry reverse counters as the same element ids with the enterprise bit
// set and PEN 29305 (RFC 5103). In uniflow mode each record becomes a forward record and,
// when the reverse direction saw packets, a reverse record with the endpoints swapped.
// The elements are listed in the README ("IPFIX export") and flowmark-observe(1); from the
// record: ipClassOfService from tos_fwd/tos_rev (an observer fills them with
// ObserverConfig::record_tos set), flowEndReason from end_reason, biflowDirection from
// direction; from IpfixExtras (the scitags chain): the flow labels and the Scitags marking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "flowmark/observe/observer.hpp"

namespace flowmark::observe {

inline constexpr std::uint32_t kIpfixReversePen = 29305;  // RFC 5103 reverse elements
inline constexpr std::uint16_t kIpfixTemplateV4 = 256;
inline constexpr std::uint16_t kIpfixTemplateV6 = 257;
inline constexpr std::uint16_t kIpfixTemplateUniV4 = 258;
inline constexpr std::uint16_t kIpfixTemplateUniV6 = 259;

struct IpfixOptions {
  std::uint32_t observation_domain = 0;
  // Largest message written (header included); at least 512. 65535 for files; for UDP the
  // path MTU less the IP and UDP headers.
  std::size_t max_message_size = 65535;
  bool uniflow = false;
  // IPv6 templates also carry flowLabelIPv6 (31), forward and (biflow) reverse, from
  // IpfixExtras (the scitags chain's first label each way; 0 where none was seen).
  bool flow_label = false;
  // IPv6 templates also carry the Scitags experiment and activity as CESNET's enterprise
  // elements (PEN 8057: scitagExperimentID 1200, scitagExperimentAct 1201), from IpfixExtras
  // (both 0: not marked).
  bool scitags = false;
  // With scitags: IPv4 templates carry them too (flowmarkd's events are tagged by fireflies
  // and rules for IPv4 flows as well; the observer reads marks from IPv6 packets only).
  bool scitags_ipv4 = false;
  // flowStartNanoseconds / flowEndNanoseconds (156/157, NTP format) instead of
  // flowStartMilliseconds / flowEndMilliseconds (152/153).
  bool nanoseconds = false;
  // packetDeltaCount, tcpControlBits, ipClassOfService (forward and reverse) and vlanId in
  // the templates. False for records that do not know them (flowmarkd's flow events carry
  // octets only): those elements are left out of the templates, never written as 0, which a
  // collector would read as a count.
  bool packet_fields = true;
  // Templates again every N messages and/or every S seconds (0: only in the first message, as
  // a file needs); for UDP, where a collector may start late or restart.
  std::uint32_t template_refresh_messages = 0;
  std::uint32_t template_refresh_seconds = 0;
  // Export time (seconds since the epoch) for each message; default: the wall clock.
  std::function<std::uint32_t()> now;
};

// What a record does not hold but a chain may know.
struct IpfixExtras {
  std::uint32_t flow_label_fwd = 0, flow_label_rev = 0;
  std::uint16_t scitags_experiment = 0;  // 0 and 0: the flow is not marked
  std::uint8_t scitags_activity = 0;
};

// CESNET's enterprise elements for the Scitags marking (libfds config/system/elements/
// cesnet.xml; ipfixprobe's scitags plugin).
inline constexpr std::uint32_t kIpfixCesnetPen = 8057;
inline constexpr std::uint16_t kIpfixScitagExperimentId = 1200;   // unsigned16
inline constexpr std::uint16_t kIpfixScitagExperimentAct = 1201;  // unsigned8

// dateTimeNanoseconds (RFC 7011 §6.1.10): NTP seconds since 1900 in the high 32 bits, the
// fraction of a second in the low 32 (rounded up, so that ntp_to_nanos gives ns back).
std::uint64_t nanos_to_ntp(std::int64_t ns) noexcept;
std::int64_t ntp_to_nanos(std::uint64_t ntp) noexcept;  // in NTP era 0 (until 2036-02-07)

class IpfixWriter {
 public:
  struct Field {  // one field specifier of a template
    std::uint16_t id;
    std::uint16_t length;
    std::uint32_t pen = 0;  // enterprise elements: kIpfixReversePen (RFC 5103), kIpfixCesnetPen
  };

  // One complete message; the bytes are valid for the call only.
  using MessageSink = std::function<void(std::span<const std::uint8_t>)>;

  IpfixWriter(IpfixOptions options, MessageSink sink);

  void add(const FlowRecord& r, const IpfixExtras& extras = {});
  // Emits the message being built, if it holds anything.
  void flush();

  std::uint64_t records_written() const noexcept { return records_; }  // data records
  std::uint64_t messages_written() const noexcept { return messages_; }
  std::uint32_t sequence() const noexcept { return sequence_; }
  // The data records of the message being handed to the sink (during the sink's call).
  std::uint32_t records_in_message() const noexcept { return records_in_message_; }
  // A message holding the templates alone (the sequence number and export time of now): a
  // transport sends it first on every new session — a TCP connection, a reopened file — so
  // that the collector can read the messages that follow, built before the session began.
  std::vector<std::uint8_t> templates_message();

 private:
  void add_one(const FlowRecord& r, const IpfixExtras& x, bool reverse_side);
  void begin_message();
  void end_set();
  void write_templates();
  template <class T>
  void put(T v);

  IpfixOptions options_;
  MessageSink sink_;
  std::vector<Field> fields_[2];  // the templates' fields: [0] IPv4, [1] IPv6
  std::size_t record_size_[2] = {};
  std::uint16_t template_id_[2] = {};
  std::vector<std::uint8_t> buf_;
  std::size_t set_start_ = 0;       // offset of the open data set's header (0: none open)
  std::uint16_t set_template_ = 0;  // its template id
  std::uint32_t sequence_ = 0;      // data records sent before the message being built
  std::uint32_t records_in_message_ = 0;
  bool templates_sent_ = false;
  std::uint64_t templates_message_ = 0;  // messages_ when the templates were last written
  std::uint32_t templates_time_ = 0;     // and the export time then
  std::uint64_t records_ = 0, messages_ = 0;
};

}  // namespace flowmark::observe
