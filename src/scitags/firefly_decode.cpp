#include <simdjson.h>

#include <bit>
#include <charconv>
#include <cstdint>
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
// leaves the timestamp out and writes two spaces). Eight bytes at a time: the tokens are
// short (a memchr call each cost more than the scan) but the timestamp has 32 characters.
bool next_token(std::string_view& rest, std::string_view& token) noexcept {
  const char* const p = rest.data();
  const std::size_t n = rest.size();
  std::size_t i = 0;
  if constexpr (std::endian::native == std::endian::little) {
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
    for (; i + 8 <= n; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      const std::uint64_t x = w ^ (kOnes * ' ');  // a zero byte where there is a space
      // The lowest set bit marks the first zero byte exactly (borrows only run upwards).
      const std::uint64_t m = (x - kOnes) & ~x & (kOnes * 0x80);
      if (m != 0) {
        i += static_cast<std::size_t>(std::countr_zero(m)) / 8;
        token = rest.substr(0, i);
        rest.remove_prefix(i + 1);
        return true;
      }
    }
  }
  for (; i < n; ++i) {
    if (p[i] == ' ') {
      token = rest.substr(0, i);
      rest.remove_prefix(i + 1);
      return true;
    }
  }
  return false;
}

// ---- addresses without inet_pton --------------------------------------------------------
// inet_pton needs a NUL-terminated copy and IpAddress::parse looks for a scope first; the
// two parsers below accept a subset of what IpAddress::parse accepts (no scope, no
// embedded IPv4 in IPv6) with the same result, and say false for everything else, which
// IpAddress::parse then judges (and words the rejection) as before.

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Dotted-quad IPv4 as glibc's inet_pton(AF_INET) reads it: four decimal octets 0..255,
// no leading zeros.
bool parse_ipv4_fast(std::string_view text, std::uint8_t (&out)[4]) noexcept {
  if (text.size() < 7 || text.size() > 15) return false;
  const char* p = text.data();
  const char* const end = p + text.size();
  for (int i = 0; i < 4; ++i) {
    if (i != 0) {
      if (p == end || *p != '.') return false;
      ++p;
    }
    if (p == end || !is_digit(*p)) return false;
    unsigned v = static_cast<unsigned>(*p++ - '0');
    if (v == 0) {
      if (p != end && is_digit(*p)) return false;  // a leading zero
    } else {
      for (int k = 0; k < 2 && p != end && is_digit(*p); ++k)
        v = v * 10 + static_cast<unsigned>(*p++ - '0');
      if (v > 255) return false;
    }
    out[i] = static_cast<std::uint8_t>(v);
  }
  return p == end;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// IPv6 text as glibc's inet_pton(AF_INET6) reads it (the same steps), except that a
// trailing dotted IPv4 part is left to IpAddress::parse.
bool parse_ipv6_fast(std::string_view text, std::uint8_t (&out)[16]) noexcept {
  if (text.empty() || text.size() > 39) return false;  // 8 groups of 4 and 7 colons
  std::uint8_t tmp[16] = {};
  std::uint8_t* tp = tmp;
  std::uint8_t* const endp = tmp + 16;
  std::uint8_t* colonp = nullptr;
  const char* src = text.data();
  const char* const src_end = src + text.size();
  if (*src == ':') {  // a leading "::"
    ++src;
    if (src == src_end || *src != ':') return false;
  }
  int xdigits_seen = 0;
  unsigned val = 0;
  while (src < src_end) {
    const char ch = *src++;
    if (const int digit = hex_value(ch); digit >= 0) {
      if (xdigits_seen == 4) return false;
      val = (val << 4) | static_cast<unsigned>(digit);
      ++xdigits_seen;
      continue;
    }
    if (ch != ':') return false;  // '.', '%' or anything else: not for the fast path
    if (xdigits_seen == 0) {
      if (colonp) return false;
      colonp = tp;
      continue;
    }
    if (src == src_end) return false;
    if (tp + 2 > endp) return false;
    *tp++ = static_cast<std::uint8_t>(val >> 8);
    *tp++ = static_cast<std::uint8_t>(val);
    xdigits_seen = 0;
    val = 0;
  }
  if (xdigits_seen > 0) {
    if (tp + 2 > endp) return false;
    *tp++ = static_cast<std::uint8_t>(val >> 8);
    *tp++ = static_cast<std::uint8_t>(val);
  }
  if (colonp != nullptr) {
    if (tp == endp) return false;  // "::" would stand for no group at all
    const auto n = static_cast<std::size_t>(tp - colonp);
    std::memmove(endp - n, colonp, n);
    std::memset(colonp, 0, static_cast<std::size_t>(endp - n - colonp));
    tp = endp;
  }
  if (tp != endp) return false;
  std::memcpy(out, tmp, 16);
  return true;
}

// The address in `text` when one of the fast parsers takes it.
bool parse_address_fast(std::string_view text, IpAddress& out) noexcept {
  std::uint8_t v4[4];
  if (parse_ipv4_fast(text, v4)) {
    in_addr a{};
    std::memcpy(&a, v4, 4);
    out = IpAddress::v4(a);
    return true;
  }
  std::uint8_t v6[16];
  if (parse_ipv6_fast(text, v6)) {
    in6_addr a{};
    std::memcpy(&a, v6, 16);
    out = IpAddress::v6(a);
    return true;
  }
  return false;
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
    if (i < 0) return reject(Reject::kBadNumber, fmt::format("{}: {} is negative", path, i));
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

// The latest time format_rfc3339_micros writes as it is: 9999-12-31T23:59:59.999999Z.
constexpr Micros kLatestTime = 253402300799LL * 1'000'000 + 999'999;

Status read_time(element v, std::string_view path, Micros& out, bool allow_empty) {
  if (allow_empty && (v.is_null() || (v.is_string() && v.get_string().value().empty()))) {
    out = 0;
    return {};
  }
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS)
    return reject(Reject::kBadTime, fmt::format("{}: expected a date-time string, got {}", path,
                                                type_name(v.type())));
  auto t = parse_rfc3339(s);
  if (!t) return reject(Reject::kBadTime, fmt::format("{}: {}", path, t.error().message()));
  // A FlowEvent time is > 0 (0 means unknown) and the encoder writes years up to 9999:
  // anything outside would not survive a re-encoding (found by fuzz_firefly).
  if (*t <= 0)
    return reject(Reject::kBadTime,
                  fmt::format("{}: '{}' is not after 1970-01-01T00:00:00Z", path, s));
  if (*t > kLatestTime)
    return reject(Reject::kBadTime,
                  fmt::format("{}: '{}' is after 9999-12-31T23:59:59.999999Z", path, s));
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

#define FF_CHECK(expr)                       \
  do {                                       \
    if (auto st_ = (expr); !st_) return st_; \
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

// Writes `out` even when the address is then refused (the event is discarded with it).
Status read_address(element v, std::string_view path, Family afi, IpAddress& out) {
  std::string_view s;
  FF_CHECK(read_string(v, path, s));
  if (!parse_address_fast(s, out)) {
    auto parsed = IpAddress::parse(s);
    if (!parsed || parsed->scope_id() != 0)
      return reject(Reject::kBadAddress, fmt::format("{}: '{}' is not an IP address", path, s));
    out = *parsed;
  }
  if (out.family() != afi)
    return reject(Reject::kAfiMismatch, fmt::format("{}: {} is not an {} address", path, s,
                                                    afi == Family::kV4 ? "ipv4" : "ipv6"));
  return {};
}

Status read_flow_id(element v, FlowEvent& e) {
  object o;
  FF_CHECK(read_object(v, "flow-id", o));
  std::string_view afi_text;
  element src_ip, dst_ip, src_port, dst_port;
  bool have_afi = false, have_src = false, have_dst = false, have_proto = false, have_sport = false,
       have_dport = false;
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
  // Kept members are written by simdjson's own minifier (simdjson::minify(x) is exactly
  // string_builder<>{}.append(x)), reused so that its buffer stays; and the (key, text)
  // pairs of the previous firefly are recycled with their capacity.
  simdjson::internal::string_builder<> minifier;
  std::vector<std::pair<std::string, std::string>> spare_extra;

  void recycle_extra() {
    for (auto& kv : out.extra) spare_extra.push_back(std::move(kv));
    out.extra.clear();
  }

  void keep_extra(std::string_view key, element value) {
    minifier.clear();
    minifier.append(value);
    if (spare_extra.empty()) {
      out.extra.emplace_back(std::string(key), std::string(minifier.str()));
      return;
    }
    auto kv = std::move(spare_extra.back());
    spare_extra.pop_back();
    kv.first.assign(key);
    kv.second.assign(minifier.str());
    out.extra.push_back(std::move(kv));
  }

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
        keep_extra(k, field.value);
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
  if (impl_->parser.allocate(kMaxSize) != simdjson::SUCCESS)
    impl_->parser = simdjson::dom::parser();
}
FireflyDecoder::~FireflyDecoder() = default;
FireflyDecoder::FireflyDecoder(FireflyDecoder&&) noexcept = default;
FireflyDecoder& FireflyDecoder::operator=(FireflyDecoder&&) noexcept = default;

std::expected<const Firefly*, Rejection> FireflyDecoder::decode(std::string_view d) {
  while (!d.empty() && (is_space(d.back()) || d.back() == '\0')) d.remove_suffix(1);
  while (!d.empty() && is_space(d.front())) d.remove_prefix(1);
  if (d.empty()) return reject(Reject::kEmpty, "empty datagram");
  if (d.size() > kMaxSize)
    return reject(Reject::kTooLarge,
                  fmt::format("{} bytes; a firefly is at most {}", d.size(), kMaxSize));
  Impl& s = *impl_;
  auto json = s.split_header(d);
  if (!json) return std::unexpected(std::move(json.error()));
  std::memcpy(s.padded.data(), json->data(), json->size());
  element doc;
  if (auto err = s.parser.parse(s.padded.data(), json->size(), false).get(doc); err)
    return reject(Reject::kNotJson, fmt::format("not JSON: {}", simdjson::error_message(err)));
  s.out.event = FlowEvent{};
  s.out.application.clear();
  s.recycle_extra();
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
