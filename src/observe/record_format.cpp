#include "flowmark/observe/record_format.hpp"

#include <fmt/format.h>

namespace flowmark::observe {
namespace {

// Seconds since the epoch with nanosecond digits, as a JSON/CSV number.
void append_seconds(std::string& out, Nanos t) {
  const Nanos s = t / 1'000'000'000;
  Nanos ns = t % 1'000'000'000;
  if (ns < 0) ns = -ns;
  fmt::format_to(std::back_inserter(out), "{}.{:09}", s, ns);
}

constexpr const char* kColumns[] = {
    "sip",  "dip",           "proto",         "sp",        "dp",          "first",
    "last", "pkt_fwd",       "pkt_rev",       "oct_fwd",   "oct_rev",     "ip_version",
    "vlan", "tcp_flags_fwd", "tcp_flags_rev", "fragments", "icmp_errors", "continuation"};

}  // namespace

void append_record_json(std::string& out, const FlowRecord& r, const FieldNames& fields) {
  fmt::format_to(std::back_inserter(out), R"({{"sip":"{}","dip":"{}","proto":{},"sp":{},"dp":{},)",
                 r.sip.to_string(), r.dip.to_string(), r.proto, r.sp, r.dp);
  out += R"("first":)";
  append_seconds(out, r.first);
  out += R"(,"last":)";
  append_seconds(out, r.last);
  fmt::format_to(std::back_inserter(out),
                 R"(,"pkt_fwd":{},"pkt_rev":{},"oct_fwd":{},"oct_rev":{},"ip_version":{},)"
                 R"("vlan":{},"tcp_flags_fwd":{},"tcp_flags_rev":{},"fragments":{},)"
                 R"("icmp_errors":{},"continuation":{})",
                 r.pkt_fwd, r.pkt_rev, r.oct_fwd, r.oct_rev, r.ip_version, r.vlan, r.tcp_flags_fwd,
                 r.tcp_flags_rev, r.fragments, r.icmp_errors, r.continuation ? "true" : "false");
  for (const auto& [slot, name] : fields)
    fmt::format_to(std::back_inserter(out), R"(,"{}":{})", name, r.user[slot]);
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
  fmt::format_to(std::back_inserter(out), "{},{},{},{},{},", r.sip.to_string(), r.dip.to_string(),
                 r.proto, r.sp, r.dp);
  append_seconds(out, r.first);
  out.push_back(',');
  append_seconds(out, r.last);
  fmt::format_to(std::back_inserter(out), ",{},{},{},{},{},{},{},{},{},{},{}", r.pkt_fwd, r.pkt_rev,
                 r.oct_fwd, r.oct_rev, r.ip_version, r.vlan, r.tcp_flags_fwd, r.tcp_flags_rev,
                 r.fragments, r.icmp_errors, r.continuation ? 1 : 0);
  for (const auto& [slot, name] : fields)
    fmt::format_to(std::back_inserter(out), ",{}", r.user[slot]);
  out.push_back('\n');
}

}  // namespace flowmark::observe
