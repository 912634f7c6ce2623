// Record: what a collector keeps of one joined flow, and its JSON form.
#include "flowmark/collector/record.hpp"

#include <fmt/format.h>

#include "flowmark/core/json.hpp"

namespace flowmark::collector {

std::string_view to_string(RecordState s) noexcept {
  switch (s) {
    case RecordState::kOpen: return "open";
    case RecordState::kComplete: return "complete";
    case RecordState::kTimedOut: return "timed_out";
    case RecordState::kEvicted: return "evicted";
  }
  return "open";
}

std::optional<RecordState> parse_record_state(std::string_view s) noexcept {
  if (s == "open") return RecordState::kOpen;
  if (s == "complete") return RecordState::kComplete;
  if (s == "timed_out") return RecordState::kTimedOut;
  if (s == "evicted") return RecordState::kEvicted;
  return std::nullopt;
}

std::string_view to_string(Direction d) noexcept {
  switch (d) {
    case Direction::kUnknown: return "";
    case Direction::kSrcToDst: return "src_to_dst";
    case Direction::kDstToSrc: return "dst_to_src";
  }
  return "";
}

double Record::duration() const noexcept {
  const Micros end = end_time != 0 ? end_time : updated;
  if (end <= start_time || start_time == 0) return 0;
  return static_cast<double>(end - start_time) / 1e6;
}

double Record::throughput() const noexcept {
  const double d = duration();
  return d > 0 ? static_cast<double>(volume()) / d : 0;
}

Direction Record::direction() const noexcept {
  if (!has_usage || (bytes_sent == 0 && bytes_received == 0)) return Direction::kUnknown;
  return bytes_received > bytes_sent ? Direction::kDstToSrc : Direction::kSrcToDst;
}

Record make_record(const scitags::FlowEvent& e, const scitags::Registry* registry,
                   const SiteMap* sites) {
  using scitags::EndReason;
  using scitags::FlowState;
  Record r;
  r.protocol = e.protocol;
  r.src = e.src;
  r.dst = e.dst;
  r.start_time = e.start_time;
  r.updated = e.state == FlowState::kEnd && e.end_time != 0 ? e.end_time : e.current_time;
  if (r.updated == 0) r.updated = e.end_time != 0 ? e.end_time : e.start_time;
  if (e.usage) {
    r.has_usage = true;
    r.bytes_sent = e.usage->sent;
    r.bytes_received = e.usage->received;
  }
  r.experiment_id = e.experiment;
  r.activity_id = e.activity;
  if (registry != nullptr) {
    if (auto n = registry->experiment_name(e.experiment)) {
      r.experiment = *n;
      if (auto a = registry->activity_name(e.experiment, e.activity)) r.activity = *a;
    }
  }
  if (sites != nullptr) {
    if (auto s = sites->lookup(e.src.address)) r.src_site = *s;
    if (auto s = sites->lookup(e.dst.address)) r.dst_site = *s;
  }
  if (e.state == FlowState::kEnd) {
    switch (e.end_reason) {
      case EndReason::kEnded: r.state = RecordState::kComplete; break;
      case EndReason::kExpired: r.state = RecordState::kTimedOut; break;
      case EndReason::kEvicted: r.state = RecordState::kEvicted; break;
      case EndReason::kShutdown: r.state = RecordState::kOpen; break;
    }
    if (r.state != RecordState::kOpen) r.end_time = e.end_time != 0 ? e.end_time : r.updated;
  }
  return r;
}

namespace {

void append_time(std::string& out, Micros t) {
  if (t == 0) {
    out += "null";
    return;
  }
  char buf[kRfc3339MicrosSize];
  format_rfc3339_micros(buf, t);
  out += '"';
  out.append(buf, kRfc3339MicrosSize);
  out += '"';
}

void append_name(std::string& out, const std::string& s) {
  if (s.empty()) {
    out += "null";
  } else {
    append_json_string(out, s);
  }
}

}  // namespace

void append_json(const Record& r, std::string& out) {
  out += R"({"protocol":")";
  out += scitags::to_string(r.protocol);
  out += R"(","src_ip":")";
  out += r.src.address.to_string();
  fmt::format_to(std::back_inserter(out), R"(","src_port":{},"dst_ip":")", r.src.port);
  out += r.dst.address.to_string();
  fmt::format_to(std::back_inserter(out), R"(","dst_port":{},"start_time":)", r.dst.port);
  append_time(out, r.start_time);
  out += R"(,"end_time":)";
  append_time(out, r.end_time);
  out += R"(,"state":")";
  out += to_string(r.state);
  fmt::format_to(std::back_inserter(out),
                 R"(","duration":{},"bytes_sent":{},"bytes_received":{},"volume":{},)"
                 R"("throughput":{},"direction":)",
                 r.duration(), r.bytes_sent, r.bytes_received, r.volume(), r.throughput());
  if (const auto d = r.direction(); d == Direction::kUnknown) {
    out += "null";
  } else {
    out += '"';
    out += to_string(d);
    out += '"';
  }
  fmt::format_to(std::back_inserter(out), R"(,"experiment_id":{},"activity_id":{},"experiment":)",
                 r.experiment_id, r.activity_id);
  append_name(out, r.experiment);
  out += R"(,"activity":)";
  append_name(out, r.activity);
  out += R"(,"src_site":)";
  append_name(out, r.src_site);
  out += R"(,"dst_site":)";
  append_name(out, r.dst_site);
  out += '}';
}

}  // namespace flowmark::collector
