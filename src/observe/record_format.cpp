// Records as text, written straight into a stack buffer: one append to the output per
// record. Addresses are formatted here rather than by inet_ntop() (glibc's goes through
// sprintf for every IPv4 address and every IPv6 group), with the same text: RFC 5952
// compression of the longest run of two or more zero groups, the first of equal runs, and
// the IPv4-compatible / IPv4-mapped forms (::a.b.c.d, ::ffff:a.b.c.d) as glibc prints them.
#include "flowmark/observe/record_format.hpp"

#include <charconv>
#include <cstring>
#include <string_view>

namespace flowmark::observe {
namespace {

// Room for the fixed part of a record: two IPv6 addresses (45 bytes each), the field names
// and twenty-digit numbers; user fields are appended separately.
constexpr std::size_t kRecordRoom = 640;

char* put(char* p, std::string_view s) noexcept {
  std::memcpy(p, s.data(), s.size());
  return p + s.size();
}

char* put_u(char* p, std::uint64_t v) noexcept { return std::to_chars(p, p + 20, v).ptr; }

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
  if (ns < 0) ns = -ns;
  p = std::to_chars(p, p + 20, s).ptr;
  *p++ = '.';
  for (int i = 8; i >= 0; --i) {
    p[i] = static_cast<char>('0' + ns % 10);
    ns /= 10;
  }
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

void append_record_json(std::string& out, const FlowRecord& r, const FieldNames& fields) {
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
  for (const auto& [slot, name] : fields) {
    out += R"(,")";
    out += name;
    out += R"(":)";
    char num[24];
    out.append(num, put_u(num, r.user[slot]));
  }
  out += "}\n";
}

void append_csv_header(std::string& out, const FieldNames& fields) {
  bool first = true;
  for (const char* c : kColumns) {
    if (!first) out.push_back(',');
    first = false;
    out += c;
  }
  for (const auto& [slot, name] : fields) {
    out.push_back(',');
    out += name;
  }
  out.push_back('\n');
}

void append_record_csv(std::string& out, const FlowRecord& r, const FieldNames& fields) {
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
  for (const auto& [slot, name] : fields) {
    *p++ = ',';
    p = put_u(p, r.user[slot]);
  }
  *p++ = '\n';
  out.append(buf, p);
}

}  // namespace flowmark::observe
