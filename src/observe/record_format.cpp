// Records as text, written straight into a stack buffer: one append to the output per
// record. Addresses are formatted here rather than by inet_ntop() (glibc's goes through
// sprintf for every IPv4 address and every IPv6 group), with the same text: RFC 5952
// compression of the longest run of two or more zero groups, the first of equal runs, and
// the IPv4-compatible / IPv4-mapped forms (::a.b.c.d, ::ffff:a.b.c.d) as glibc prints them.
#include "flowmark/observe/record_format.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <string_view>

namespace flowmark::observe {
namespace {

// Room for the fixed part of a record: two IPv6 addresses (45 bytes each), the field names
// and twenty-digit numbers; the chains' fields are appended separately.
constexpr std::size_t kRecordRoom = 640;

char* put(char* p, std::string_view s) noexcept {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char* put_u_long(char* p, std::uint64_t v) noexcept { return std::to_chars(p, p + 20, v).ptr; }

// Most of a record's numbers are one or two digits (protocol, version, flags, counts of a
// few packets): those without a call.
[[gnu::always_inline]] inline char* put_u(char* p, std::uint64_t v) noexcept {
  if (v < 10) {
    *p = static_cast<char>('0' + v);
    return p + 1;
  }
  if (v < 100) {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
    return p + 2;
  }
  return put_u_long(p, v);
}

char* put_v4(char* p, const std::uint8_t* b) noexcept {
  for (int i = 0; i < 4; ++i) {
    if (i != 0) *p++ = '.';
    p = put_u(p, b[i]);
  }
  return p;
}

char* put_v6(char* p, const std::uint8_t* b) noexcept {
  unsigned words[8];
  for (int i = 0; i < 8; ++i) words[i] = (unsigned{b[2 * i]} << 8) | b[2 * i + 1];
  // The longest run of zero groups (the first of equal ones); only a run of two or more is
  // written as "::".
  int best = -1, best_len = 0, cur = -1, cur_len = 0;
  for (int i = 0; i < 8; ++i) {
    if (words[i] == 0) {
      if (cur < 0) cur = i, cur_len = 0;
      ++cur_len;
    } else if (cur >= 0) {
      if (cur_len > best_len) best = cur, best_len = cur_len;
      cur = -1;
    }
  }
  if (cur >= 0 && cur_len > best_len) best = cur, best_len = cur_len;
  if (best_len < 2) best = -1;
  for (int i = 0; i < 8; ++i) {
    if (best >= 0 && i >= best && i < best + best_len) {
      if (i == best) *p++ = ':';
      continue;
    }
    if (i != 0) *p++ = ':';
    if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && words[5] == 0xffff)))
      return put_v4(p, b + 12);
    p = std::to_chars(p, p + 4, words[i], 16).ptr;
  }
  if (best >= 0 && best + best_len == 8) *p++ = ':';
  return p;
}

char* put_ip(char* p, const IpAddress& a) noexcept {
  return a.is_v4() ? put_v4(p, a.bytes()) : put_v6(p, a.bytes());
}

// Seconds since the epoch with nanosecond digits, as a JSON/CSV number.
char* put_seconds(char* p, Nanos t) noexcept {
  const Nanos s = t / 1'000'000'000;
  Nanos ns = t % 1'000'000'000;
  if (ns < 0) {
    ns = -ns;
    if (s == 0) *p++ = '-';  // -0.5 s: the seconds alone do not carry the sign
  }
  // Groups of four digits by two pairs: fewer dependent divisions than a digit at a time.
  auto four = [](char* q, unsigned v) {
    const unsigned hi = v / 100, lo = v % 100;
    q[0] = static_cast<char>('0' + hi / 10);
    q[1] = static_cast<char>('0' + hi % 10);
    q[2] = static_cast<char>('0' + lo / 10);
    q[3] = static_cast<char>('0' + lo % 10);
  };
  if (s >= 1'000'000'000 && s < 10'000'000'000) {  // 2001-09-09 .. 2286: ten digits, 2 + 4 + 4
    const auto v = static_cast<std::uint64_t>(s);
    const auto top = static_cast<unsigned>(v / 100'000'000);
    p[0] = static_cast<char>('0' + top / 10);
    p[1] = static_cast<char>('0' + top % 10);
    four(p + 2, static_cast<unsigned>(v / 10'000 % 10'000));
    four(p + 6, static_cast<unsigned>(v % 10'000));
    p += 10;
  } else {
    p = std::to_chars(p, p + 20, s).ptr;
  }
  *p++ = '.';
  // The nine digits as 1 + 4 + 4.
  const auto u = static_cast<unsigned>(ns);
  p[0] = static_cast<char>('0' + u / 100'000'000);
  four(p + 1, u / 10'000 % 10'000);
  four(p + 5, u % 10'000);
  return p + 9;
}

constexpr const char* kColumns[] = {
    "sip",  "dip",           "proto",         "sp",        "dp",          "first",
    "last", "pkt_fwd",       "pkt_rev",       "oct_fwd",   "oct_rev",     "ip_version",
    "vlan", "tcp_flags_fwd", "tcp_flags_rev", "fragments", "icmp_errors", "continuation"};

}  // namespace

std::string format_address(const IpAddress& a) {
  char buf[64];
  return {buf, put_ip(buf, a)};
}

char* format_address(char* out, const IpAddress& a) noexcept { return put_ip(out, a); }

// --- chain fields --------------------------------------------------------------------------

namespace {

// memcpy of up to 32 bytes without a call: two fixed-size copies that overlap in the middle
// (a record's chain fields are short names and values, ~70 of them per record).
[[gnu::always_inline]] inline char* copy_short(char* d, const char* s, std::size_t n) noexcept {
  if (n >= 16) {
    if (n > 32) {
      std::memcpy(d, s, n);
    } else {
      std::memcpy(d, s, 16);
      std::memcpy(d + n - 16, s + n - 16, 16);
    }
  } else if (n >= 8) {
    std::memcpy(d, s, 8);
    std::memcpy(d + n - 8, s + n - 8, 8);
  } else if (n >= 4) {
    std::memcpy(d, s, 4);
    std::memcpy(d + n - 4, s + n - 4, 4);
  } else {
    for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
  }
  return d + n;
}

}  // namespace

FieldPrefixes::FieldPrefixes(std::span<const std::string> names) : slots_(names.size()) {
  for (std::size_t i = 0; i < names.size(); ++i) {
    Slot& s = slots_[i];
    std::memset(s.text, 0, sizeof s.text);
    s.length = 0;
    const std::string& n = names[i];
    if (n.size() + 4 > sizeof s.text) continue;  // put together from the name, as without
    s.text[0] = ',';
    s.text[1] = '"';
    std::memcpy(s.text + 2, n.data(), n.size());
    s.text[n.size() + 2] = '"';
    s.text[n.size() + 3] = ':';
    s.length = static_cast<std::uint32_t>(n.size() + 4);
  }
}

char* FieldWriter::begin_field(std::string_view name, std::size_t value_room) noexcept {
  ++column_;
  const std::size_t need = name.size() + 4 + value_room;
  if (static_cast<std::size_t>(end_ - cur_) < need) [[unlikely]] {
    flush();
    if (static_cast<std::size_t>(end_ - cur_) < need) return nullptr;
  }
  char* q = cur_;
  if (format_ == Format::kCsv) {
    *q = ',';
    return q + 1;
  }
  *q++ = ',';
  *q++ = '"';
  q = copy_short(q, name.data(), name.size());
  *q++ = '"';
  *q++ = ':';
  return q;
}

void FieldWriter::direct_field(std::string_view name, std::string_view value) {
  // Put together on the stack, then one append (std::string's resize_and_overwrite would
  // spare the copy, but libstdc++ 12's passes the grown capacity as the size to its callback).
  char buf[128];
  const bool json = format_ == Format::kJson;
  const std::size_t n = (json ? name.size() + 4 : 1) + value.size();
  if (n > sizeof buf) {
    *out_ += json ? ",\"" : ",";
    if (json) {
      *out_ += name;
      *out_ += "\":";
    }
    *out_ += value;
    return;
  }
  char* q = buf;
  *q++ = ',';
  if (json) {
    *q++ = '"';
    q = copy_short(q, name.data(), name.size());
    *q++ = '"';
    *q++ = ':';
  }
  copy_short(q, value.data(), value.size());
  out_->append(buf, n);
}

void FieldWriter::null_slow(std::string_view name) {
  if (visitor_ != nullptr) [[unlikely]]
    return visitor_->null(name);
  const bool json = format_ == Format::kJson;
  char* q = begin_field(name, 8);
  if (q == nullptr) [[unlikely]]
    return direct_field(name, json ? std::string_view("null") : std::string_view());
  std::memcpy(q, "null", 4);
  cur_ = q + (json ? 4 : 0);
}

void FieldWriter::boolean_slow(std::string_view name, bool value) {
  if (visitor_ != nullptr) [[unlikely]]
    return visitor_->boolean(name, value);
  char* q = begin_field(name, 8);
  if (q == nullptr) [[unlikely]]
    return direct_field(name, value ? std::string_view("true") : std::string_view("false"));
  std::memcpy(q, value ? "true\0\0\0" : "false\0\0", 8);
  cur_ = q + (value ? 4 : 5);
}

void FieldWriter::number_slow(std::string_view name, std::uint64_t value) {
  if (visitor_ != nullptr) [[unlikely]]
    return visitor_->number(name, value);
  char* q = begin_field(name, 20);
  if (q == nullptr) [[unlikely]] {
    char num[24];
    const auto n = static_cast<std::size_t>(put_u(num, value) - num);
    return direct_field(name, std::string_view(num, n));
  }
  cur_ = put_u(q, value);
}

void FieldWriter::text(std::string_view name, std::string_view value) {
  if (visitor_ != nullptr) [[unlikely]]
    return visitor_->text(name, value);
  ++column_;
  flush();  // the value is escaped straight into out_
  direct_field(name, {});
  if (format_ == Format::kCsv) {
    // RFC 4180: quoted when it holds a comma, a quote or a line break; quotes doubled.
    if (value.find_first_of(",\"\r\n") == std::string_view::npos) {
      *out_ += value;
      return;
    }
    out_->push_back('"');
    for (const char c : value) {
      if (c == '"') out_->push_back('"');
      out_->push_back(c);
    }
    out_->push_back('"');
    return;
  }
  out_->push_back('"');
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out_->push_back('\\');
      out_->push_back(c);
    } else if (u < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      *out_ += "\\u00";
      out_->push_back(kHex[u >> 4]);
      out_->push_back(kHex[u & 15]);
    } else {
      out_->push_back(c);
    }
  }
  out_->push_back('"');
}

namespace {

// Each chain's fields: from its state, or null (a record the observer does not hold).
void append_chain_fields(std::string& out, const FlowRecord& r, const Observer* obs,
                         FieldWriter::Format format) {
  if (obs == nullptr) return;
  char scratch[4096];  // the fields go to out in one append (or a few)
  FieldWriter w(out, format, scratch, &obs->field_prefixes());
  const auto& chains = obs->chains();
  // The states of the first chains in one lookup (more than kAtOnce chains: one a chain).
  constexpr std::size_t kAtOnce = 16;
  const std::byte* states[kAtOnce];
  obs->chain_states(r, std::span(states, std::min(chains.size(), kAtOnce)));
  for (std::size_t i = 0; i < chains.size(); ++i) {
    if (const std::byte* st = i < kAtOnce ? states[i] : obs->chain_state(r, i)) {
      chains[i]->write(r, st, w);
    } else {
      for (const auto& c : chains[i]->columns()) w.null(c);
    }
  }
}

}  // namespace

void visit_chain_fields(const FlowRecord& r, const Observer& obs, FieldVisitor& visitor) {
  FieldWriter w(visitor);
  const auto& chains = obs.chains();
  constexpr std::size_t kAtOnce = 16;  // as append_chain_fields()
  const std::byte* states[kAtOnce];
  obs.chain_states(r, std::span(states, std::min(chains.size(), kAtOnce)));
  for (std::size_t i = 0; i < chains.size(); ++i) {
    if (const std::byte* st = i < kAtOnce ? states[i] : obs.chain_state(r, i)) {
      chains[i]->write(r, st, w);
    } else {
      for (const auto& c : chains[i]->columns()) w.null(c);
    }
  }
}

void append_record_json(std::string& out, const FlowRecord& r, const Observer* obs) {
  char buf[kRecordRoom];
  char* p = put(buf, R"({"sip":")");
  p = put_ip(p, r.sip);
  p = put(p, R"(","dip":")");
  p = put_ip(p, r.dip);
  p = put_u(put(p, R"(","proto":)"), r.proto);
  if (r.has_ports) {
    p = put_u(put(p, R"(,"sp":)"), r.sp);
    p = put_u(put(p, R"(,"dp":)"), r.dp);
  } else {
    p = put(p, R"(,"sp":null,"dp":null)");  // no ports: pathspider's None
  }
  p = put_seconds(put(p, R"(,"first":)"), r.first);
  p = put_seconds(put(p, R"(,"last":)"), r.last);
  p = put_u(put(p, R"(,"pkt_fwd":)"), r.pkt_fwd);
  p = put_u(put(p, R"(,"pkt_rev":)"), r.pkt_rev);
  p = put_u(put(p, R"(,"oct_fwd":)"), r.oct_fwd);
  p = put_u(put(p, R"(,"oct_rev":)"), r.oct_rev);
  p = put_u(put(p, R"(,"ip_version":)"), r.ip_version);
  p = put_u(put(p, R"(,"vlan":)"), r.vlan);
  p = put_u(put(p, R"(,"tcp_flags_fwd":)"), r.tcp_flags_fwd);
  p = put_u(put(p, R"(,"tcp_flags_rev":)"), r.tcp_flags_rev);
  p = put_u(put(p, R"(,"fragments":)"), r.fragments);
  p = put_u(put(p, R"(,"icmp_errors":)"), r.icmp_errors);
  p = put(p, r.continuation ? R"(,"continuation":true)" : R"(,"continuation":false)");
  out.append(buf, p);
  append_chain_fields(out, r, obs, FieldWriter::Format::kJson);
  out += "}\n";
}

void append_csv_header(std::string& out, const Observer* obs) {
  bool first = true;
  for (const char* c : kColumns) {
    if (!first) out.push_back(',');
    first = false;
    out += c;
  }
  if (obs != nullptr) {
    for (const auto& chain : obs->chains()) {
      for (const auto& c : chain->columns()) {
        out.push_back(',');
        out += c;
      }
    }
  }
  out.push_back('\n');
}

void append_record_csv(std::string& out, const FlowRecord& r, const Observer* obs) {
  char buf[kRecordRoom];
  char* p = put_ip(buf, r.sip);
  *p++ = ',';
  p = put_ip(p, r.dip);
  *p++ = ',';
  p = put_u(p, r.proto);
  if (r.has_ports) {
    *p++ = ',';
    p = put_u(p, r.sp);
    *p++ = ',';
    p = put_u(p, r.dp);
  } else {
    p = put(p, ",,");  // no ports: empty fields (JSON's null)
  }
  *p++ = ',';
  p = put_seconds(p, r.first);
  *p++ = ',';
  p = put_seconds(p, r.last);
  for (const std::uint64_t v :
       {r.pkt_fwd, r.pkt_rev, r.oct_fwd, r.oct_rev, std::uint64_t{r.ip_version},
        std::uint64_t{r.vlan}, std::uint64_t{r.tcp_flags_fwd}, std::uint64_t{r.tcp_flags_rev},
        std::uint64_t{r.fragments}, std::uint64_t{r.icmp_errors},
        std::uint64_t{r.continuation ? 1u : 0u}}) {
    *p++ = ',';
    p = put_u(p, v);
  }
  out.append(buf, p);
  append_chain_fields(out, r, obs, FieldWriter::Format::kCsv);
  out.push_back('\n');
}

}  // namespace flowmark::observe
