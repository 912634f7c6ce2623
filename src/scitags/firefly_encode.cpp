#include <arpa/inet.h>
#include <unistd.h>

#include <charconv>
#include <climits>

#include <fmt/format.h>

#include "firefly_json.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::scitags {
namespace detail {
namespace {

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

void append_time(std::string& out, Micros t) {
  char buf[kRfc3339MicrosSize];
  format_rfc3339_micros(buf, t);
  out.push_back('"');
  out.append(buf, kRfc3339MicrosSize);
  out.push_back('"');
}

void append_address(std::string& out, const IpAddress& a) {
  out.push_back('"');
  append_ip_text(out, a);
  out.push_back('"');
}

void append_dec_u8(std::string& out, unsigned v) {
  if (v >= 100) out.push_back(static_cast<char>('0' + v / 100));
  if (v >= 10) out.push_back(static_cast<char>('0' + v / 10 % 10));
  out.push_back(static_cast<char>('0' + v % 10));
}

void append_hex_u16(std::string& out, unsigned v) {
  static constexpr char kHex[] = "0123456789abcdef";
  bool started = false;
  for (int shift = 12; shift >= 0; shift -= 4) {
    const unsigned nibble = (v >> shift) & 0xf;
    if (nibble != 0 || started || shift == 0) {
      out.push_back(kHex[nibble]);
      started = true;
    }
  }
}

}  // namespace

// What inet_ntop writes (RFC 5952 for IPv6), without its sprintf: at 300,000 fireflies a
// second the listener formats three addresses per firefly.
void append_ip_text(std::string& out, const IpAddress& a) {
  const std::uint8_t* b = a.bytes();
  if (a.is_v4()) {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) out.push_back('.');
      append_dec_u8(out, b[i]);
    }
    return;
  }
  unsigned words[8];
  for (int i = 0; i < 8; ++i) words[i] = static_cast<unsigned>(b[2 * i] << 8 | b[2 * i + 1]);
  // The first longest run of two or more zero words becomes "::".
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (words[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && words[j] == 0) ++j;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best = -1;
  // IPv4-compatible and -mapped addresses keep their dotted tail: let inet_ntop do those.
  if (best == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff) ||
                    (best_len == 7 && words[7] != 0x0001))) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, b, buf, sizeof buf);
    out += buf;
    return;
  }
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (i > 0 && i != best + best_len) out.push_back(':');
    append_hex_u16(out, words[i]);
  }
}

void append_document(std::string& out, const FlowEvent& e, std::string_view application_literal,
                     Micros current_time) {
  out += R"({"version":1,"flow-lifecycle":{"state":")";
  out += to_string(e.state);
  out.push_back('"');
  // The encoder always has both times; a decoded firefly being printed may lack them
  // (current-time is optional; --lenient keeps flowd's null start-time): never invent one.
  if (current_time > 0) {
    out += R"(,"current-time":)";
    append_time(out, current_time);
  }
  out += R"(,"start-time":)";
  if (e.start_time > 0) {
    append_time(out, e.start_time);
  } else {
    out += "null";
  }
  if (e.state == FlowState::kEnd) {
    out += R"(,"end-time":)";
    append_time(out, e.end_time);
  }
  out += R"(},"flow-id":{"afi":")";
  out += e.src.address.is_v4() ? "ipv4" : "ipv6";
  out += R"(","src-ip":)";
  append_address(out, e.src.address);
  out += R"(,"dst-ip":)";
  append_address(out, e.dst.address);
  out += R"(,"protocol":")";
  out += to_string(e.protocol);
  out += R"(","src-port":)";
  append_uint(out, e.src.port);
  out += R"(,"dst-port":)";
  append_uint(out, e.dst.port);
  out += R"(},"context":{"experiment-id":)";
  append_uint(out, e.experiment);
  out += R"(,"activity-id":)";
  append_uint(out, e.activity);
  if (!application_literal.empty()) {
    out += R"(,"application":)";
    out += application_literal;
  }
  out.push_back('}');
  if (e.usage) {
    out += R"(,"usage":{"received":)";
    append_uint(out, e.usage->received);
    out += R"(,"sent":)";
    append_uint(out, e.usage->sent);
    out.push_back('}');
  }
  if (e.tcp) {
    const TcpInfo& t = *e.tcp;
    const std::pair<const char*, std::uint64_t> fields[] = {
        {"rtt_us", t.rtt_us},           {"rtt_var_us", t.rtt_var_us},
        {"cwnd", t.cwnd},               {"ssthresh", t.ssthresh},
        {"mss", t.mss},                 {"pmtu", t.pmtu},
        {"bytes_sent", t.bytes_sent},   {"bytes_acked", t.bytes_acked},
        {"bytes_received", t.bytes_received}, {"segs_out", t.segs_out},
        {"segs_in", t.segs_in},         {"retrans", t.retrans},
        {"pacing_rate", t.pacing_rate}, {"delivery_rate", t.delivery_rate}};
    out += R"(,"netlink":{)";
    bool first = true;
    for (const auto& [name, value] : fields) {
      if (!first) out.push_back(',');
      first = false;
      out.push_back('"');
      out += name;
      out += "\":";
      append_uint(out, value);
    }
    out.push_back('}');
  }
  out.push_back('}');
}

}  // namespace detail

namespace {

std::string local_hostname() {
  char name[HOST_NAME_MAX + 1] = {};
  if (gethostname(name, sizeof name) != 0 || name[0] == '\0') return "-";
  return name;
}

// RFC 5424 header fields: printable US-ASCII without spaces, or the nil value "-".
std::string header_field(std::string_view v, std::size_t max) {
  std::string out;
  for (char c : v.substr(0, max))
    if (c > 32 && c < 127) out.push_back(c);
  return out.empty() ? "-" : out;
}

}  // namespace

FireflyEncoder::FireflyEncoder(EncoderOptions options)
    : prefix_("<134>1 "), header_(options.syslog_header) {
  const std::string host =
      header_field(options.hostname.empty() ? local_hostname() : options.hostname, 255);
  after_time_ = fmt::format(" {} {} - firefly-json - ", host, header_field(options.app_name, 48));
  append_json_string(application_, is_valid_utf8(options.application) ? options.application
                                                                       : std::string("flowmark"));
  buf_.reserve(1024);
}

Result<std::string_view> FireflyEncoder::encode(const FlowEvent& e, Micros now) {
  if (e.src.port == 0 || e.dst.port == 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("flow {} -> {}: a port 0 is not allowed in a firefly",
                            e.src.to_string(), e.dst.to_string()));
  if (e.src.address.family() != e.dst.address.family())
    return fail(Errc::kInvalidArgument,
                fmt::format("flow {} -> {}: the endpoints are of different families",
                            e.src.to_string(), e.dst.to_string()));
  if (e.start_time <= 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("flow {} -> {}: no start time (a firefly always carries one)",
                            e.src.to_string(), e.dst.to_string()));
  if (e.state == FlowState::kEnd && e.end_time <= 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("flow {} -> {}: an end event needs its end time", e.src.to_string(),
                            e.dst.to_string()));
  buf_.clear();
  if (header_) {
    buf_ += prefix_;
    char ts[kRfc3339MicrosSize];
    format_rfc3339_micros(ts, now);
    buf_.append(ts, kRfc3339MicrosSize);
    buf_ += after_time_;
  }
  detail::append_document(buf_, e, application_, e.current_time > 0 ? e.current_time : now);
  return std::string_view(buf_);
}

}  // namespace flowmark::scitags
