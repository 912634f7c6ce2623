#include <unistd.h>

#include <charconv>
#include <climits>
#include <cstring>
#include <span>

#include <fmt/format.h>

#include "firefly_json.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/firefly.hpp"

// The hot path writes through a raw pointer into room reserved up front (one
// resize_and_overwrite per event, no per-piece capacity checks), formats addresses by
// hand (inet_ntop goes through sprintf) and never allocates once the buffer is sized.

namespace flowmark::scitags {
namespace detail {

// The "netlink" object in one of flowd-go's shapes (enrichment.hpp).
struct Enrichment {
  const TcpDetail* detail = nullptr;
  EnrichmentShape shape = EnrichmentShape::kFlowmark;
};

namespace {

// Room the document needs besides context.application: the longest literal text, three
// quoted times, two quoted IPv6 addresses, ten 20-digit numbers, with margin.
constexpr std::size_t kDocumentBound = 1024;
// The "netlink" object: 14 members of at most 16 + 4 + 20 + 1 characters, with margin.
constexpr std::size_t kTcpBound = 1024;
// The same in a flowd-go shape (compatible: 47 members of at most 30 + 4 + 20 + 1).
constexpr std::size_t kDetailBound = 4096;

// "00" "01" ... "99": two digits per lookup.
constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

class Writer {
 public:
  explicit Writer(char* p) noexcept : p_(p) {}
  char* pos() const noexcept { return p_; }

  template <std::size_t N>
  void lit(const char (&s)[N]) noexcept {
    std::memcpy(p_, s, N - 1);
    p_ += N - 1;
  }
  void text(std::string_view s) noexcept {
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void ch(char c) noexcept { *p_++ = c; }
  void skip(std::size_t n) noexcept { p_ += n; }
  void uint(std::uint64_t v) noexcept { p_ = std::to_chars(p_, p_ + 20, v).ptr; }

  void time(Micros t) noexcept {
    *p_++ = '"';
    format_rfc3339_micros(p_, t);
    p_ += kRfc3339MicrosSize;
    *p_++ = '"';
  }
  // A time already formatted elsewhere (kRfc3339MicrosSize characters).
  void time(const char* formatted) noexcept {
    *p_++ = '"';
    std::memcpy(p_, formatted, kRfc3339MicrosSize);
    p_ += kRfc3339MicrosSize;
    *p_++ = '"';
  }

  // 0..255 without leading zeros, as inet_ntop's "%u".
  void octet(unsigned v) noexcept {
    if (v >= 100) {
      *p_++ = static_cast<char>('0' + v / 100);
      v %= 100;
      std::memcpy(p_, kDigitPairs + 2 * v, 2);
      p_ += 2;
    } else if (v >= 10) {
      std::memcpy(p_, kDigitPairs + 2 * v, 2);
      p_ += 2;
    } else {
      *p_++ = static_cast<char>('0' + v);
    }
  }

  void ipv4(const std::uint8_t* b) noexcept {
    octet(b[0]);
    *p_++ = '.';
    octet(b[1]);
    *p_++ = '.';
    octet(b[2]);
    *p_++ = '.';
    octet(b[3]);
  }

  // Lower-case hex without leading zeros, as inet_ntop's "%x".
  void hex16(unsigned v) noexcept {
    static constexpr char kHex[] = "0123456789abcdef";
    if (v >= 0x1000) *p_++ = kHex[v >> 12];
    if (v >= 0x100) *p_++ = kHex[(v >> 8) & 0xf];
    if (v >= 0x10) *p_++ = kHex[(v >> 4) & 0xf];
    *p_++ = kHex[v & 0xf];
  }

  // Exactly glibc's inet_ntop(AF_INET6): the longest run (the first of equal ones) of two
  // or more zero groups becomes "::"; ::a.b.c.d and ::ffff:a.b.c.d end in dotted IPv4.
  void ipv6(const std::uint8_t* b) noexcept {
    unsigned words[8];
    for (int i = 0; i < 8; ++i) words[i] = (unsigned{b[2 * i]} << 8) | b[2 * i + 1];
    int best_base = -1, best_len = 0, cur_base = -1, cur_len = 0;
    for (int i = 0; i < 8; ++i) {
      if (words[i] == 0) {
        if (cur_base == -1) {
          cur_base = i;
          cur_len = 1;
        } else {
          ++cur_len;
        }
      } else if (cur_base != -1) {
        if (best_base == -1 || cur_len > best_len) {
          best_base = cur_base;
          best_len = cur_len;
        }
        cur_base = -1;
      }
    }
    if (cur_base != -1 && (best_base == -1 || cur_len > best_len)) {
      best_base = cur_base;
      best_len = cur_len;
    }
    if (best_base != -1 && best_len < 2) best_base = -1;
    for (int i = 0; i < 8; ++i) {
      if (best_base != -1 && i >= best_base && i < best_base + best_len) {
        if (i == best_base) *p_++ = ':';
        continue;
      }
      if (i != 0) *p_++ = ':';
      if (i == 6 && best_base == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))) {
        ipv4(b + 12);
        return;
      }
      hex16(words[i]);
    }
    if (best_base != -1 && best_base + best_len == 8) *p_++ = ':';
  }

  // At most INET6_ADDRSTRLEN - 1 characters.
  void ip(const IpAddress& a) noexcept {
    if (a.is_v4())
      ipv4(a.bytes());
    else
      ipv6(a.bytes());
  }

  void address(const IpAddress& a) noexcept {
    *p_++ = '"';
    ip(a);
    *p_++ = '"';
  }

 private:
  char* p_;
};

// Writes the document at w. `current_text`, when not null, is current_time already
// formatted (the encoder's syslog timestamp, when the event has no current time).
void write_enrichment(Writer& w, const Enrichment& x) noexcept;

void write_document(Writer& w, const FlowEvent& e, std::string_view application_literal,
                    Micros current_time, const char* current_text = nullptr,
                    const Enrichment* enrichment = nullptr) {
  w.lit(R"({"version":1,"flow-lifecycle":{"state":")");
  w.text(to_string(e.state));
  w.ch('"');
  // The encoder always has both times; a decoded firefly being printed may lack them
  // (current-time is optional; --lenient keeps flowd's null start-time): never invent one.
  if (current_text) {
    w.lit(R"(,"current-time":)");
    w.time(current_text);
  } else if (current_time > 0) {
    w.lit(R"(,"current-time":)");
    w.time(current_time);
  }
  if (e.start_time > 0) {
    w.lit(R"(,"start-time":)");
    w.time(e.start_time);
  } else {
    w.lit(R"(,"start-time":null)");
  }
  // End events always carry it (encode() checks); others when known, so that a decoded
  // firefly re-encodes to the same event (found by fuzz_firefly).
  if (e.state == FlowState::kEnd || e.end_time > 0) {
    w.lit(R"(,"end-time":)");
    w.time(e.end_time);
  }
  if (e.src.address.is_v4())
    w.lit(R"(},"flow-id":{"afi":"ipv4","src-ip":)");
  else
    w.lit(R"(},"flow-id":{"afi":"ipv6","src-ip":)");
  w.address(e.src.address);
  w.lit(R"(,"dst-ip":)");
  w.address(e.dst.address);
  if (e.protocol == Protocol::kTcp)
    w.lit(R"(,"protocol":"tcp","src-port":)");
  else
    w.lit(R"(,"protocol":"udp","src-port":)");
  w.uint(e.src.port);
  w.lit(R"(,"dst-port":)");
  w.uint(e.dst.port);
  w.lit(R"(},"context":{"experiment-id":)");
  w.uint(e.experiment);
  w.lit(R"(,"activity-id":)");
  w.uint(e.activity);
  if (!application_literal.empty()) {
    w.lit(R"(,"application":)");
    w.text(application_literal);
  }
  w.ch('}');
  if (e.usage) {
    w.lit(R"(,"usage":{"received":)");
    w.uint(e.usage->received);
    w.lit(R"(,"sent":)");
    w.uint(e.usage->sent);
    w.ch('}');
  }
  if (enrichment) {
    write_enrichment(w, *enrichment);
  } else if (e.tcp) {
    const TcpInfo& t = *e.tcp;
    const std::pair<std::string_view, std::uint64_t> fields[] = {
        {"rtt_us", t.rtt_us},
        {"rtt_var_us", t.rtt_var_us},
        {"cwnd", t.cwnd},
        {"ssthresh", t.ssthresh},
        {"mss", t.mss},
        {"pmtu", t.pmtu},
        {"bytes_sent", t.bytes_sent},
        {"bytes_acked", t.bytes_acked},
        {"bytes_received", t.bytes_received},
        {"segs_out", t.segs_out},
        {"segs_in", t.segs_in},
        {"retrans", t.retrans},
        {"pacing_rate", t.pacing_rate},
        {"delivery_rate", t.delivery_rate}};
    w.lit(R"(,"netlink":{)");
    bool first = true;
    for (const auto& [name, value] : fields) {
      if (!first) w.ch(',');
      first = false;
      w.ch('"');
      w.text(name);
      w.lit("\":");
      w.uint(value);
    }
    w.ch('}');
  }
  w.ch('}');
}

std::size_t document_bound(const FlowEvent& e, std::string_view application_literal) noexcept {
  return kDocumentBound + application_literal.size() + (e.tcp ? kTcpBound : 0);
}

// flowd's names of the TCP states (its ss-based netlink code), as flowd-go's compatible mode.
std::string_view compatible_state(std::uint8_t s) noexcept {
  static constexpr std::string_view kNames[] = {
      "INVALID",   "established", "syn-sent",   "syn-recv", "fin-wait-1", "fin-wait-2",
      "time-wait", "unconnected", "close-wait", "last-ack", "listening",  "closing"};
  return s < std::size(kNames) ? kNames[s] : "invalid";
}

void write_members(Writer& w, std::span<const std::pair<std::string_view, std::uint64_t>> fields,
                   bool first) noexcept {
  for (const auto& [name, value] : fields) {
    if (!first) w.ch(',');
    first = false;
    w.ch('"');
    w.text(name);
    w.lit("\":");
    w.uint(value);
  }
}

void write_enrichment(Writer& w, const Enrichment& x) noexcept {
  const TcpDetail& d = *x.detail;
  using Fields = std::pair<std::string_view, std::uint64_t>;
  if (x.shape == EnrichmentShape::kLean) {
    // flowd-go's `lean` tags, its keys in the order Go writes a map: sorted.
    w.lit(R"(,"netlink":{)");
    if (const auto cong = d.congestion_name(); !cong.empty()) {
      w.lit(R"("cong":{"algorithm":")");
      for (char c : cong) {
        if (c > ' ' && c < 127 && c != '"' && c != '\\') w.ch(c);  // a kernel identifier
      }
      w.lit(R"("},)");
    }
    const Fields tcp[] = {{"Retransmits", d.retransmits},
                          {"advMss", d.advmss},
                          {"bytesSent", d.bytes_sent},
                          {"deliveryRate", d.delivery_rate},
                          {"minRtt", d.min_rtt},
                          {"pMtu", d.pmtu},
                          {"rtt", d.rtt},
                          {"rttVar", d.rttvar},
                          {"sndCwnd", d.snd_cwnd},
                          {"sndMss", d.snd_mss},
                          {"sndSsThresh", d.snd_ssthresh}};
    w.lit(R"("tcpInfo":{)");
    write_members(w, tcp, true);
    w.lit("}}");
    return;
  }
  // compatible: flowd's object, in flowd-go's member order, with its conversions (times in
  // ms, an unset rto or ssthresh as 0, the options as names).
  auto ms = [](std::uint32_t us) -> std::uint64_t { return us / 1000; };
  const Fields before[] = {{"pmtu", d.pmtu},
                           {"retrans", d.retrans},
                           {"ato", ms(d.ato)},
                           {"rto", d.rto != 3000000 ? ms(d.rto) : 0},
                           {"snd_wscale", d.snd_wscale},
                           {"rcv_wscale", d.rcv_wscale},
                           {"snd_mss", d.snd_mss},
                           {"snd_cwnd", d.snd_cwnd},
                           {"snd_ssthresh", d.snd_ssthresh < 0xFFFF ? d.snd_ssthresh : 0},
                           {"rtt", ms(d.rtt)},
                           {"rttvar", ms(d.rttvar)},
                           {"rcv_rtt", ms(d.rcv_rtt)},
                           {"rcv_space", d.rcv_space}};
  const Fields after[] = {{"last_data_sent", d.last_data_sent},
                          {"rcv_ssthresh", d.rcv_ssthresh},
                          {"segs_in", d.segs_in},
                          {"segs_out", d.segs_out},
                          {"data_segs_in", d.data_segs_in},
                          {"data_segs_out", d.data_segs_out},
                          {"lost", d.lost},
                          {"notsent_bytes", d.notsent_bytes},
                          {"rcv_mss", d.rcv_mss},
                          {"pacing_rate", d.pacing_rate},
                          {"retransmits", d.retransmits},
                          {"min_rtt", d.min_rtt},
                          {"rwnd_limited", d.rwnd_limited},
                          {"max_pacing_rate", d.max_pacing_rate},
                          {"probes", d.probes},
                          {"reordering", d.reordering},
                          {"last_data_recv", d.last_data_recv},
                          {"bytes_received", d.bytes_received},
                          {"fackets", d.fackets},
                          {"last_ack_recv", d.last_ack_recv},
                          {"last_ack_sent", d.last_ack_sent},
                          {"unacked", d.unacked},
                          {"sacked", d.sacked},
                          {"bytes_acked", d.bytes_acked},
                          {"delivery_rate_app_limited", d.delivery_rate_app_limited},
                          {"delivery_rate", d.delivery_rate},
                          {"sndbuf_limited", d.sndbuf_limited},
                          {"ca_state", d.ca_state},
                          {"busy_time", d.busy_time},
                          {"total_retrans", d.total_retrans},
                          {"advmss", d.advmss},
                          {"backoff", d.backoff}};
  w.lit(R"(,"netlink":{"state":")");
  w.text(compatible_state(d.state));
  w.ch('"');
  write_members(w, before, false);
  w.lit(R"(,"opts":[)");
  bool first = true;
  for (const auto& [bit, name] :
       {std::pair<std::uint8_t, std::string_view>{1, "ts"}, {2, "sack"}, {8, "ecn"}}) {
    if (!(d.options & bit)) continue;
    if (!first) w.ch(',');
    first = false;
    w.ch('"');
    w.text(name);
    w.ch('"');
  }
  w.ch(']');
  write_members(w, after, false);
  w.ch('}');
}

}  // namespace

void append_document(std::string& out, const FlowEvent& e, std::string_view application_literal,
                     Micros current_time) {
  const std::size_t old = out.size();
  out.resize_and_overwrite(old + document_bound(e, application_literal),
                           [&](char* p, std::size_t) noexcept {
                             Writer w(p + old);
                             write_document(w, e, application_literal, current_time);
                             return static_cast<std::size_t>(w.pos() - p);
                           });
}

void append_ip_text(std::string& out, const IpAddress& a) {
  char buf[INET6_ADDRSTRLEN];
  Writer w(buf);
  w.ip(a);
  out.append(buf, w.pos());
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
  buf_.reserve(prefix_.size() + kRfc3339MicrosSize + after_time_.size() + detail::kDocumentBound +
               application_.size() + detail::kTcpBound);
}

Result<std::string_view> FireflyEncoder::encode(const FlowEvent& e, Micros now) {
  buf_.clear();
  FM_TRY_VOID(append(buf_, e, now, nullptr));
  return std::string_view(buf_);
}

Result<std::string_view> FireflyEncoder::encode(const FlowEvent& e, Micros now,
                                                const TcpDetail& tcp, EnrichmentShape shape) {
  buf_.clear();
  FM_TRY_VOID(encode_to(buf_, e, now, tcp, shape));
  return std::string_view(buf_);
}

Result<std::size_t> FireflyEncoder::encode_to(std::string& out, const FlowEvent& e, Micros now) {
  return append(out, e, now, nullptr);
}

Result<std::size_t> FireflyEncoder::encode_to(std::string& out, const FlowEvent& e, Micros now,
                                              const TcpDetail& tcp, EnrichmentShape shape) {
  if (shape == EnrichmentShape::kFlowmark) return append(out, e, now, nullptr);
  const detail::Enrichment x{&tcp, shape};
  return append(out, e, now, &x);
}

Result<std::size_t> FireflyEncoder::append(std::string& out, const FlowEvent& e, Micros now,
                                           const detail::Enrichment* enrichment) {
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
  const Micros current = e.current_time > 0 ? e.current_time : now;
  const std::size_t bound = prefix_.size() + kRfc3339MicrosSize + after_time_.size() +
                            detail::document_bound(e, application_) +
                            (enrichment ? detail::kDetailBound : 0);
  // No allocation once `out` has grown (the constructor reserved buf_ for the largest event,
  // with TCP information); resize_and_overwrite does not zero-fill.
  const std::size_t old = out.size();
  out.resize_and_overwrite(old + bound, [&](char* p, std::size_t) noexcept {
    detail::Writer w(p + old);
    const char* now_text = nullptr;
    if (header_) {
      w.text(prefix_);
      now_text = w.pos();
      format_rfc3339_micros(w.pos(), now);
      w.skip(kRfc3339MicrosSize);
      w.text(after_time_);
    }
    // current-time is the syslog timestamp when the event has none: copy it, once formatted.
    detail::write_document(w, e, application_, current,
                           current == now && current > 0 ? now_text : nullptr, enrichment);
    return static_cast<std::size_t>(w.pos() - p);
  });
  return out.size() - old;
}

std::string_view to_string(EnrichmentShape s) noexcept {
  switch (s) {
    case EnrichmentShape::kFlowmark: return "flowmark";
    case EnrichmentShape::kLean: return "lean";
    case EnrichmentShape::kCompatible: return "compatible";
  }
  return "flowmark";
}

std::optional<EnrichmentShape> parse_enrichment_shape(std::string_view s) noexcept {
  for (auto shape :
       {EnrichmentShape::kFlowmark, EnrichmentShape::kLean, EnrichmentShape::kCompatible}) {
    if (s == to_string(shape)) return shape;
  }
  return std::nullopt;
}

}  // namespace flowmark::scitags
