#include <simdjson.h>

#include <charconv>
#include <cstring>

#include <fmt/format.h>

#include "firefly_json.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::scitags {

std::string_view to_string(Reject r) noexcept {
  switch (r) {
    case Reject::kEmpty: return "empty";
    case Reject::kBadHeader: return "bad_header";
    case Reject::kNotJson: return "not_json";
    case Reject::kNotObject: return "not_object";
    case Reject::kMissingField: return "missing_field";
    case Reject::kWrongType: return "wrong_type";
    case Reject::kUnknownKey: return "unknown_key";
    case Reject::kBadVersion: return "bad_version";
    case Reject::kUnknownState: return "unknown_state";
    case Reject::kUnknownProtocol: return "unknown_protocol";
    case Reject::kUnknownAfi: return "unknown_afi";
    case Reject::kBadAddress: return "bad_address";
    case Reject::kAfiMismatch: return "afi_mismatch";
    case Reject::kPortOutOfRange: return "port_out_of_range";
    case Reject::kBadTime: return "bad_time";
    case Reject::kMissingEndTime: return "missing_end_time";
    case Reject::kBadNumber: return "bad_number";
    case Reject::kTooLarge: return "too_large";
  }
  return "unknown";
}

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;
using simdjson::dom::object;

std::unexpected<Rejection> reject(Reject r, std::string detail) {
  return std::unexpected(Rejection{r, std::move(detail)});
}

std::string_view type_name(element_type t) noexcept {
  switch (t) {
    case element_type::ARRAY: return "an array";
    case element_type::OBJECT: return "an object";
    case element_type::INT64:
    case element_type::UINT64: return "an integer";
    case element_type::DOUBLE: return "a number with a fraction";
    case element_type::STRING: return "a string";
    case element_type::BOOL: return "a boolean";
    case element_type::NULL_VALUE: return "null";
  }
  return "?";
}

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// Splits off the next space-delimited token of the syslog header (may be empty: flowd-go
// leaves the timestamp out and writes two spaces).
bool next_token(std::string_view& rest, std::string_view& token) noexcept {
  const auto sp = rest.find(' ');
  if (sp == std::string_view::npos) return false;
  token = rest.substr(0, sp);
  rest.remove_prefix(sp + 1);
  return true;
}

using Status = std::expected<void, Rejection>;

// The typed readers: each names the element ("flow-id.src-port") in its rejection.
Status read_string(element v, std::string_view path, std::string_view& out) {
  if (v.get_string().get(out) != simdjson::SUCCESS)
    return reject(Reject::kWrongType,
                  fmt::format("{}: expected a string, got {}", path, type_name(v.type())));
  return {};
}

Status read_uint(element v, std::string_view path, std::uint64_t max, std::uint64_t& out) {
  const auto t = v.type();
  if (t == element_type::INT64) {
    std::int64_t i = 0;
    i = v.get_int64().value_unsafe();  // the type was checked above
    if (i < 0)
      return reject(Reject::kBadNumber, fmt::format("{}: {} is negative", path, i));
    out = static_cast<std::uint64_t>(i);
  } else if (t == element_type::UINT64) {
    out = v.get_uint64().value_unsafe();
  } else {
    return reject(Reject::kWrongType,
                  fmt::format("{}: expected an integer, got {}", path, type_name(t)));
  }
  if (out > max)
    return reject(Reject::kBadNumber, fmt::format("{}: {} is larger than {}", path, out, max));
  return {};
}

Status read_port(element v, std::string_view path, std::uint16_t& out) {
  const auto t = v.type();
  std::int64_t i = 0;
  std::uint64_t u = 0;
  if (t == element_type::INT64) {
    i = v.get_int64().value_unsafe();  // the type was checked above
  } else if (t == element_type::UINT64) {
    u = v.get_uint64().value_unsafe();
    i = -1;  // larger than any int64: out of range
  } else {
    return reject(Reject::kWrongType,
                  fmt::format("{}: expected an integer, got {}", path, type_name(t)));
  }
  if (i < 1 || i > 65535)
    return reject(Reject::kPortOutOfRange,
                  fmt::format("{}: {} is out of range 1..65535", path,
                              t == element_type::UINT64 ? std::to_string(u) : std::to_string(i)));
  out = static_cast<std::uint16_t>(i);
  return {};
}

Status read_time(element v, std::string_view path, Micros& out, bool allow_empty) {
  if (allow_empty && (v.is_null() || (v.is_string() && v.get_string().value().empty()))) {
    out = 0;
    return {};
  }
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS)
    return reject(Reject::kBadTime,
                  fmt::format("{}: expected a date-time string, got {}", path, type_name(v.type())));
  auto t = parse_rfc3339(s);
  if (!t) return reject(Reject::kBadTime, fmt::format("{}: {}", path, t.error().message()));
  out = *t;
  return {};
}

Status read_object(element v, std::string_view path, object& out) {
  if (v.get_object().get(out) != simdjson::SUCCESS)
    return reject(Reject::kNotObject,
                  fmt::format("{}: expected an object, got {}", path, type_name(v.type())));
  return {};
}

Status unknown_key(std::string_view object_name, std::string_view key) {
  return reject(Reject::kUnknownKey,
                fmt::format("{}: member '{}' is not allowed here", object_name, key));
}

Status missing(std::string_view path) {
  return reject(Reject::kMissingField, fmt::format("{}: required member is missing", path));
}

#define FF_CHECK(expr)                                 \
  do {                                                 \
    if (auto st_ = (expr); !st_) return st_;           \
  } while (0)

Status read_lifecycle(element v, FlowEvent& e, const DecoderOptions& opt) {
  object o;
  FF_CHECK(read_object(v, "flow-lifecycle", o));
  bool have_state = false, have_start = false, have_end = false;
  for (auto field : o) {
    const std::string_view k = field.key;
    if (k == "state") {
      std::string_view s;
      FF_CHECK(read_string(field.value, "flow-lifecycle.state", s));
      auto st = parse_flow_state(s);
      if (!st)
        return reject(Reject::kUnknownState,
                      fmt::format("flow-lifecycle.state: '{}' is not start, ongoing or end", s));
      e.state = *st;
      have_state = true;
    } else if (k == "current-time") {
      FF_CHECK(read_time(field.value, "flow-lifecycle.current-time", e.current_time, false));
    } else if (k == "start-time") {
      FF_CHECK(read_time(field.value, "flow-lifecycle.start-time", e.start_time,
                         opt.lenient_start_time));
      have_start = true;
    } else if (k == "end-time") {
      FF_CHECK(read_time(field.value, "flow-lifecycle.end-time", e.end_time, false));
      have_end = true;
    } else {
      return unknown_key("flow-lifecycle", k);
    }
  }
  if (!have_state) return missing("flow-lifecycle.state");
  if (!have_start && !opt.lenient_start_time) return missing("flow-lifecycle.start-time");
  if (e.state == FlowState::kEnd && !have_end)
    return reject(Reject::kMissingEndTime,
                  "flow-lifecycle.end-time: required when the state is end");
  if (e.state == FlowState::kStart && opt.lenient_start_time && e.start_time == 0)
    return reject(Reject::kBadTime, "flow-lifecycle.start-time: a start event needs one");
  return {};
}

Status read_address(element v, std::string_view path, Family afi, IpAddress& out) {
  std::string_view s;
  FF_CHECK(read_string(v, path, s));
  auto a = IpAddress::parse(s);
  if (!a || a->scope_id() != 0)
    return reject(Reject::kBadAddress, fmt::format("{}: '{}' is not an IP address", path, s));
  if (a->family() != afi)
    return reject(Reject::kAfiMismatch,
                  fmt::format("{}: {} is not an {} address", path, s,
                              afi == Family::kV4 ? "ipv4" : "ipv6"));
  out = *a;
  return {};
}

Status read_flow_id(element v, FlowEvent& e) {
  object o;
  FF_CHECK(read_object(v, "flow-id", o));
  std::string_view afi_text;
  element src_ip, dst_ip, src_port, dst_port;
  bool have_afi = false, have_src = false, have_dst = false, have_proto = false,
       have_sport = false, have_dport = false;
  for (auto field : o) {
    const std::string_view k = field.key;
    if (k == "afi") {
      FF_CHECK(read_string(field.value, "flow-id.afi", afi_text));
      have_afi = true;
    } else if (k == "src-ip") {
      src_ip = field.value;
      have_src = true;
    } else if (k == "dst-ip") {
      dst_ip = field.value;
      have_dst = true;
    } else if (k == "protocol") {
      std::string_view p;
      FF_CHECK(read_string(field.value, "flow-id.protocol", p));
      auto proto = parse_protocol(p);
      if (!proto)
        return reject(Reject::kUnknownProtocol,
                      fmt::format("flow-id.protocol: '{}' is not tcp or udp", p));
      e.protocol = *proto;
      have_proto = true;
    } else if (k == "src-port") {
      src_port = field.value;
      have_sport = true;
    } else if (k == "dst-port") {
      dst_port = field.value;
      have_dport = true;
    } else {
      return unknown_key("flow-id", k);
    }
  }
  if (!have_afi) return missing("flow-id.afi");
  if (!have_src) return missing("flow-id.src-ip");
  if (!have_dst) return missing("flow-id.dst-ip");
  if (!have_proto) return missing("flow-id.protocol");
  if (!have_sport) return missing("flow-id.src-port");
  if (!have_dport) return missing("flow-id.dst-port");
  Family afi;
  if (afi_text == "ipv4") {
    afi = Family::kV4;
  } else if (afi_text == "ipv6") {
    afi = Family::kV6;
  } else {
    return reject(Reject::kUnknownAfi,
                  fmt::format("flow-id.afi: '{}' is not ipv4 or ipv6", afi_text));
  }
  FF_CHECK(read_address(src_ip, "flow-id.src-ip", afi, e.src.address));
  FF_CHECK(read_address(dst_ip, "flow-id.dst-ip", afi, e.dst.address));
  FF_CHECK(read_port(src_port, "flow-id.src-port", e.src.port));
  FF_CHECK(read_port(dst_port, "flow-id.dst-port", e.dst.port));
  return {};
}

Status read_context(element v, FlowEvent& e, std::string& application) {
  object o;
  FF_CHECK(read_object(v, "context", o));
  bool have_exp = false, have_act = false;
  for (auto field : o) {
    const std::string_view k = field.key;
    std::uint64_t n = 0;
    if (k == "experiment-id") {
      FF_CHECK(read_uint(field.value, "context.experiment-id", UINT32_MAX, n));
      e.experiment = static_cast<std::uint32_t>(n);
      have_exp = true;
    } else if (k == "activity-id") {
      FF_CHECK(read_uint(field.value, "context.activity-id", UINT32_MAX, n));
      e.activity = static_cast<std::uint32_t>(n);
      have_act = true;
    } else if (k == "application") {
      std::string_view s;
      FF_CHECK(read_string(field.value, "context.application", s));
      application.assign(s);
    } else {
      return unknown_key("context", k);
    }
  }
  if (!have_exp) return missing("context.experiment-id");
  if (!have_act) return missing("context.activity-id");
  return {};
}

Status read_usage(element v, FlowEvent& e) {
  object o;
  FF_CHECK(read_object(v, "usage", o));
  Usage u;
  for (auto field : o) {
    const std::string_view k = field.key;
    if (k == "received") {
      FF_CHECK(read_uint(field.value, "usage.received", UINT64_MAX, u.received));
    } else if (k == "sent") {
      FF_CHECK(read_uint(field.value, "usage.sent", UINT64_MAX, u.sent));
    } else {
      return unknown_key("usage", k);
    }
  }
  e.usage = u;
  return {};
}

}  // namespace

struct FireflyDecoder::Impl {
  DecoderOptions options;
  simdjson::dom::parser parser;
  std::vector<char> padded;
  Firefly out;

  // Strips the syslog header (if any) and fills the header fields; returns the JSON.
  std::expected<std::string_view, Rejection> split_header(std::string_view d) {
    out.has_header = false;
    out.hostname.clear();
    out.app_name.clear();
    out.header_time = 0;
    if (d.front() == '{') return d;
    if (d.front() != '<')
      return reject(Reject::kBadHeader, "neither a syslog header ('<134>1 ...') nor JSON");
    const auto close = d.find('>');
    unsigned pri = 0;
    auto [p, ec] = std::from_chars(d.data() + 1, d.data() + std::min(close, d.size()), pri);
    if (close == std::string_view::npos || close < 2 || close > 4 || ec != std::errc() ||
        p != d.data() + close || pri > 191)
      return reject(Reject::kBadHeader, "syslog PRI is not <0> .. <191>");
    std::string_view rest = d.substr(close + 1);
    std::string_view version, timestamp, host, app, procid, msgid;
    if (!next_token(rest, version) || version != "1")
      return reject(Reject::kBadHeader, "syslog VERSION is not 1");
    if (!next_token(rest, timestamp) || !next_token(rest, host) || !next_token(rest, app) ||
        !next_token(rest, procid) || !next_token(rest, msgid))
      return reject(Reject::kBadHeader, "syslog header cut short");
    if (msgid != "firefly-json")
      return reject(Reject::kBadHeader,
                    fmt::format("syslog MSGID is '{}', not firefly-json", msgid.substr(0, 32)));
    if (!timestamp.empty() && timestamp != "-") {
      auto t = parse_rfc3339(timestamp);
      if (!t)
        return reject(Reject::kBadHeader, fmt::format("syslog TIMESTAMP: {}", t.error().message()));
      out.header_time = *t;
    }
    if (host != "-") out.hostname.assign(host);
    if (app != "-") out.app_name.assign(app);
    out.has_header = true;
    // Structured data ("-") and then the message: the JSON starts at the first '{'.
    const auto brace = rest.find('{');
    if (brace == std::string_view::npos)
      return reject(Reject::kNotJson, "no JSON document after the syslog header");
    return rest.substr(brace);
  }

  Status validate(element doc) {
    object top;
    if (doc.get_object().get(top) != simdjson::SUCCESS)
      return reject(Reject::kNotObject,
                    fmt::format("the document is {}, not an object", type_name(doc.type())));
    FlowEvent& e = out.event;
    bool have_lifecycle = false, have_id = false, have_context = false;
    for (auto field : top) {
      const std::string_view k = field.key;
      if (k == "version") {
        std::uint64_t v = 0;
        if (auto st = read_uint(field.value, "version", UINT32_MAX, v); !st || v != 1)
          return reject(Reject::kBadVersion, "version: only version 1 is known");
      } else if (k == "flow-lifecycle") {
        FF_CHECK(read_lifecycle(field.value, e, options));
        have_lifecycle = true;
      } else if (k == "flow-id") {
        FF_CHECK(read_flow_id(field.value, e));
        have_id = true;
      } else if (k == "context") {
        FF_CHECK(read_context(field.value, e, out.application));
        have_context = true;
      } else if (k == "usage") {
        FF_CHECK(read_usage(field.value, e));
      } else {
        // Other producers add their own objects (storage-stats, netlink …): keep them.
        out.extra.emplace_back(std::string(k), simdjson::minify(field.value));
      }
    }
    if (!have_lifecycle) return missing("flow-lifecycle");
    if (!have_id) return missing("flow-id");
    if (!have_context) return missing("context");
    return {};
  }
};

#undef FF_CHECK

FireflyDecoder::FireflyDecoder(DecoderOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  impl_->padded.resize(kMaxSize + simdjson::SIMDJSON_PADDING);
  // Capacity for the largest firefly up front; on failure parse() allocates on demand.
  if (impl_->parser.allocate(kMaxSize) != simdjson::SUCCESS) impl_->parser = simdjson::dom::parser();
}
FireflyDecoder::~FireflyDecoder() = default;
FireflyDecoder::FireflyDecoder(FireflyDecoder&&) noexcept = default;
FireflyDecoder& FireflyDecoder::operator=(FireflyDecoder&&) noexcept = default;

std::expected<const Firefly*, Rejection> FireflyDecoder::decode(std::string_view d) {
  while (!d.empty() && (is_space(d.back()) || d.back() == '\0')) d.remove_suffix(1);
  while (!d.empty() && is_space(d.front())) d.remove_prefix(1);
  if (d.empty()) return reject(Reject::kEmpty, "empty datagram");
  if (d.size() > kMaxSize)
    return reject(Reject::kTooLarge, fmt::format("{} bytes; a firefly is at most {}", d.size(),
                                                 kMaxSize));
  Impl& s = *impl_;
  auto json = s.split_header(d);
  if (!json) return std::unexpected(std::move(json.error()));
  std::memcpy(s.padded.data(), json->data(), json->size());
  element doc;
  if (auto err = s.parser.parse(s.padded.data(), json->size(), false).get(doc); err)
    return reject(Reject::kNotJson, fmt::format("not JSON: {}", simdjson::error_message(err)));
  s.out.event = FlowEvent{};
  s.out.application.clear();
  s.out.extra.clear();
  if (auto st = s.validate(doc); !st) return std::unexpected(std::move(st.error()));
  return &s.out;
}

void append_firefly_json(std::string& out, const Firefly& f) {
  // Straight into `out`: no allocation per firefly beyond a long application name.
  std::string app;
  if (!f.application.empty()) append_json_string(app, f.application);
  detail::append_document(out, f.event, app, f.event.current_time);
  if (f.extra.empty()) return;
  out.pop_back();  // re-open the top-level object for the kept members
  for (const auto& [key, value] : f.extra) {
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    out += value;
  }
  out.push_back('}');
}

}  // namespace flowmark::scitags
