// flowmark::scitags — fireflies: the UDP datagrams (port 10514) that announce a flow.
//
// Wire form: an RFC 5424 syslog header, then one compact JSON document (schema v1):
//   <134>1 2025-03-25T10:00:00.123456+00:00 host.example.org flowmark - firefly-json - {...}
// The encoder always writes start-time (end-time on end events, and on others when known;
// usage when known), never a port 0 or a null time, and reuses one buffer: no allocation
// per event.
// The decoder (simdjson) accepts what flowd (Python) sends, what flowd-go sends (header
// optional, empty timestamp) and what XRootD-style producers send (extra top-level
// objects, usage); every rejection has a typed reason and a detail naming the element.
//
//   FireflyEncoder enc({.hostname = "dtn1.example.org"});
//   FM_TRY(std::string_view wire, enc.encode(event, now_micros()));
//   FireflyDecoder dec;
//   auto f = dec.decode(wire);   // std::expected<const Firefly*, Rejection>
//   if (!f) count(f.error().reason);
#pragma once

#include <array>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmark/core/result.hpp"
#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::scitags {
namespace detail {
struct Enrichment;
}

inline constexpr std::uint16_t kFireflyPort = 10514;

struct EncoderOptions {
  std::string hostname;                  // syslog HOSTNAME; empty: this host's name
  std::string app_name = "flowmark";     // syslog APP-NAME
  std::string application = "flowmark";  // context.application in the JSON
  bool syslog_header = true;             // false: the JSON document alone
};

class FireflyEncoder {
 public:
  explicit FireflyEncoder(EncoderOptions options = {});

  // Encodes `e`; `now` is the syslog timestamp and the current-time when the event has
  // none. The view is valid until the next call. Errc::kInvalidArgument for an event that
  // would break the schema: a port 0, no start time, an end event without end time,
  // endpoints of different families.
  Result<std::string_view> encode(const FlowEvent& e, Micros now);
  // The same with the "netlink" object built from `tcp` in `shape` (enrichment.hpp)
  // instead of from e.tcp; kFlowmark is encode(e, now).
  Result<std::string_view> encode(const FlowEvent& e, Micros now, const TcpDetail& tcp,
                                  EnrichmentShape shape);
  // The same bytes as encode(), appended to `out` (a send buffer: no copy from the encoder's
  // own); returns their size. On an error `out` is left as it was.
  Result<std::size_t> encode_to(std::string& out, const FlowEvent& e, Micros now);
  Result<std::size_t> encode_to(std::string& out, const FlowEvent& e, Micros now,
                                const TcpDetail& tcp, EnrichmentShape shape);

 private:
  Result<std::size_t> append(std::string& out, const FlowEvent& e, Micros now,
                             const detail::Enrichment* enrichment);
  std::string prefix_;       // "<134>1 "
  std::string after_time_;   // " host app - firefly-json - "
  std::string application_;  // already a JSON string literal, quotes included
  bool header_;
  std::string buf_;
};

enum class Reject : std::uint8_t {
  kEmpty,            // nothing but whitespace
  kBadHeader,        // a syslog header that is not a firefly's
  kNotJson,          // the JSON does not parse
  kNotObject,        // the document (or a member that must be one) is not an object
  kMissingField,     // a required member is absent
  kWrongType,        // a member has the wrong JSON type
  kUnknownKey,       // a member that flow-lifecycle, flow-id, context or usage do not allow
  kBadVersion,       // version is not 1
  kUnknownState,     // state is not start, ongoing or end
  kUnknownProtocol,  // protocol is not tcp or udp
  kUnknownAfi,       // afi is not ipv4 or ipv6
  kBadAddress,       // src-ip / dst-ip does not parse
  kAfiMismatch,      // an address is not of the afi's family
  kPortOutOfRange,   // a port outside 1..65535
  kBadTime,          // a time that is not an RFC 3339 date-time in 1970..9999 (or null / empty)
  kMissingEndTime,   // state end without end-time
  kBadNumber,        // an id or a counter that is negative or too large
  kTooLarge,         // the datagram is larger than any firefly may be
};
inline constexpr std::size_t kRejectKinds = static_cast<std::size_t>(Reject::kTooLarge) + 1;
std::string_view to_string(Reject r) noexcept;  // "bad_header", "not_json", ...

struct Rejection {
  Reject reason;
  std::string detail;  // e.g. "flow-id.src-port: 70000 is out of range 1..65535"
};

struct Firefly {
  FlowEvent event;
  std::string application;  // context.application ("" when absent)
  bool has_header = false;
  std::string hostname;    // syslog HOSTNAME ("" without header or when nil)
  std::string app_name;    // syslog APP-NAME
  Micros header_time = 0;  // syslog TIMESTAMP (0: nil or empty)
  // Top-level members the schema does not name (e.g. "storage-stats", "netlink"), as
  // (key, compact JSON text), in document order.
  std::vector<std::pair<std::string, std::string>> extra;
};

struct DecoderOptions {
  // Accept end events whose start-time is null or "" (flowd's defect) with start_time 0,
  // instead of rejecting them (kBadTime).
  bool lenient_start_time = false;
};

class FireflyDecoder {
 public:
  static constexpr std::size_t kMaxSize = 65536;

  explicit FireflyDecoder(DecoderOptions options = {});
  ~FireflyDecoder();
  FireflyDecoder(FireflyDecoder&&) noexcept;
  FireflyDecoder& operator=(FireflyDecoder&&) noexcept;

  // The firefly in `datagram` (header optional, trailing newline allowed), or why not.
  // The Firefly is owned by the decoder and valid until the next call.
  std::expected<const Firefly*, Rejection> decode(std::string_view datagram);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The JSON of a decoded firefly, for printing (one line; compact).
void append_firefly_json(std::string& out, const Firefly& f);

}  // namespace flowmark::scitags
