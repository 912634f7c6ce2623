// Store: what SQLite and PostgreSQL share — opening by target, the schema and upsert text, a
// record's column values, report grouping and percentiles, error reasons.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <tuple>

#include <fmt/format.h>

#include "collector/store_impl.hpp"

namespace flowmark::collector {

std::string_view to_string(GroupBy g) noexcept {
  switch (g) {
    case GroupBy::kExperiment: return "experiment";
    case GroupBy::kActivity: return "activity";
    case GroupBy::kSrcSite: return "src_site";
    case GroupBy::kDstSite: return "dst_site";
    case GroupBy::kDay: return "day";
  }
  return "experiment";
}

std::optional<GroupBy> parse_group_by(std::string_view s) noexcept {
  for (auto g : {GroupBy::kExperiment, GroupBy::kActivity, GroupBy::kSrcSite, GroupBy::kDstSite,
                 GroupBy::kDay}) {
    if (s == to_string(g)) return g;
  }
  return std::nullopt;
}

std::string_view group_by_names() noexcept {
  return "experiment, activity, src_site, dst_site, day";
}

double percentile_sorted(std::span<const double> v, double p) noexcept {
  if (v.empty()) return 0;
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  if (lo + 1 >= v.size()) return v.back();
  const double frac = pos - static_cast<double>(lo);
  return v[lo] + frac * (v[lo + 1] - v[lo]);
}

double percentile_unsorted(std::span<double> v, double p) noexcept {
  if (v.empty()) return 0;
  // The two ranks around p (as percentile_sorted), found without sorting everything.
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(lo), v.end());
  const double a = v[lo];
  if (lo + 1 >= v.size()) return a;
  const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(lo) + 1, v.end());
  return a + (pos - static_cast<double>(lo)) * (b - a);
}

Result<std::unique_ptr<Store>> Store::open(std::string_view target, const StoreOptions& o) {
  if (target.starts_with("postgresql://") || target.starts_with("postgres://")) {
    return detail::open_postgres(target, o);
  }
  if (target.empty())
    return fail(Errc::kInvalidArgument, "no store given (a file or a postgresql:// URL)");
  if (target.find("://") != std::string_view::npos) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: not a store: give a SQLite file path or a postgresql:// URL",
                            redact_store_target(target)));
  }
  return detail::open_sqlite(target, o);
}

std::string_view store_error_reason(const Error& e) noexcept {
  const auto& c = e.code();
  if (c == std::errc::connection_refused || c == std::errc::connection_reset ||
      c == std::errc::not_connected || c == std::errc::timed_out) {
    return "unavailable";
  }
  if (c == std::errc::no_space_on_device) return "full";
  if (c == std::errc::read_only_file_system || c == std::errc::permission_denied ||
      c == std::errc::io_error || c == std::errc::no_such_file_or_directory) {
    return "unwritable";
  }
  if (c == std::errc::device_or_resource_busy) return "busy";
  if (c == std::errc::wrong_protocol_type) return "schema";
  return "other";
}

std::string redact_store_target(std::string_view target) {
  std::string out(target);
  const auto scheme = out.find("://");
  if (scheme == std::string::npos) return out;
  const auto at = out.find('@', scheme + 3);
  if (at == std::string::npos) return out;
  const auto colon = out.find(':', scheme + 3);
  if (colon == std::string::npos || colon > at) return out;
  out.replace(colon + 1, at - colon - 1, "***");
  return out;
}

namespace detail {

std::unexpected<Error> store_fail(std::errc code, std::string message) {
  return std::unexpected(Error(std::make_error_code(code), std::move(message)));
}

namespace {

constexpr std::string_view kFlowsTable =
    "CREATE TABLE IF NOT EXISTS flows ("
    " protocol TEXT NOT NULL, src_ip TEXT NOT NULL, src_port INTEGER NOT NULL,"
    " dst_ip TEXT NOT NULL, dst_port INTEGER NOT NULL, start_time BIGINT NOT NULL,"
    " end_time BIGINT, updated BIGINT NOT NULL, state TEXT NOT NULL,"
    " duration DOUBLE PRECISION NOT NULL, bytes_sent BIGINT, bytes_received BIGINT,"
    " volume BIGINT NOT NULL, throughput DOUBLE PRECISION NOT NULL, direction TEXT,"
    " experiment_id INTEGER NOT NULL, activity_id INTEGER NOT NULL, experiment TEXT,"
    " activity TEXT, src_site TEXT, dst_site TEXT,"
    // start_time first: new flows go to the end of the index (inserts touch the same few
    // pages), comparisons end at an integer, and it is the index of time ranges too.
    " UNIQUE (start_time, protocol, src_ip, src_port, dst_ip, dst_port))";

constexpr std::string_view kExperimentIndex =
    "CREATE INDEX IF NOT EXISTS flows_experiment ON flows (experiment_id, activity_id, "
    "start_time)";

constexpr std::string_view kSchema[] = {
    "CREATE TABLE IF NOT EXISTS flowmark_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    kFlowsTable,
    kExperimentIndex,
    "CREATE INDEX IF NOT EXISTS flows_sites ON flows (src_site, dst_site, start_time)",
};

constexpr std::array<std::string_view, kColumnCount> kColumns = {
    "protocol", "src_ip",     "src_port",  "dst_ip",        "dst_port",    "start_time",
    "end_time", "updated",    "state",     "duration",      "bytes_sent",  "bytes_received",
    "volume",   "throughput", "direction", "experiment_id", "activity_id", "experiment",
    "activity", "src_site",   "dst_site"};
constexpr std::size_t kIdentityColumns = 6;  // the first six

}  // namespace

std::span<const std::string_view> schema_statements() noexcept { return kSchema; }

std::span<const std::string_view, kColumnCount> column_names() noexcept { return kColumns; }

const std::string& column_list() {
  static const std::string list = fmt::format("{}", fmt::join(kColumns, ", "));
  return list;
}

std::string upsert_sql(char placeholder, std::size_t rows) {
  std::string s = "INSERT INTO flows (" + column_list() + ") VALUES ";
  std::size_t n = 1;
  for (std::size_t r = 0; r < rows; ++r) {
    s += r == 0 ? "(" : ", (";
    for (std::size_t c = 0; c < kColumnCount; ++c, ++n) {
      if (c != 0) s += ',';
      s += placeholder;
      s += std::to_string(n);
    }
    s += ')';
  }
  s += " ON CONFLICT (start_time, protocol, src_ip, src_port, dst_ip, dst_port) DO UPDATE SET ";
  for (std::size_t c = kIdentityColumns; c < kColumnCount; ++c) {
    if (c != kIdentityColumns) s += ", ";
    s += fmt::format("{0} = excluded.{0}", kColumns[c]);
  }
  // A late start or ongoing record of the flow (a duplicate relayed, another collector that
  // lags) does not reopen a flow that ended.
  s += " WHERE flows.end_time IS NULL OR excluded.end_time IS NOT NULL";
  return s;
}

void record_values(const Record& r, std::string& src_ip, std::string& dst_ip,
                   std::array<Value, kColumnCount>& out) {
  using K = Value::Kind;
  auto text = [](std::string_view s) { return Value{.kind = K::kText, .i = 0, .d = 0, .s = s}; };
  auto name = [&](std::string_view s) { return s.empty() ? Value{} : text(s); };
  auto integer = [](std::int64_t i) { return Value{.kind = K::kInt, .i = i, .d = 0, .s = {}}; };
  auto real = [](double d) { return Value{.kind = K::kReal, .i = 0, .d = d, .s = {}}; };
  src_ip = r.src.address.to_string();
  dst_ip = r.dst.address.to_string();
  out[0] = text(scitags::to_string(r.protocol));
  out[1] = text(src_ip);
  out[2] = integer(r.src.port);
  out[3] = text(dst_ip);
  out[4] = integer(r.dst.port);
  out[5] = integer(r.start_time);
  out[6] = r.end_time != 0 ? integer(r.end_time) : Value{};
  out[7] = integer(r.updated);
  out[8] = text(to_string(r.state));
  out[9] = real(r.duration());
  out[10] = r.has_usage ? integer(static_cast<std::int64_t>(r.bytes_sent)) : Value{};
  out[11] = r.has_usage ? integer(static_cast<std::int64_t>(r.bytes_received)) : Value{};
  out[12] = integer(static_cast<std::int64_t>(r.volume()));
  out[13] = real(r.throughput());
  out[14] = name(to_string(r.direction()));
  out[15] = integer(r.experiment_id);
  out[16] = integer(r.activity_id);
  out[17] = name(r.experiment);
  out[18] = name(r.activity);
  out[19] = name(r.src_site);
  out[20] = name(r.dst_site);
}

namespace {

template <typename T>
bool parse_int(const char* s, T& out) {
  if (s == nullptr) return false;
  const char* end = s + std::char_traits<char>::length(s);
  auto [p, ec] = std::from_chars(s, end, out);
  return ec == std::errc() && p == end;
}

}  // namespace

Result<Record> record_from_text(const std::array<const char*, kColumnCount>& c) {
  Record r;
  auto bad = [&](std::size_t i) {
    return store_fail(std::errc::wrong_protocol_type,
                      fmt::format("flows.{}: unexpected value '{}'", kColumns[i],
                                  c[i] != nullptr ? c[i] : "null"));
  };
  auto proto = c[0] != nullptr ? scitags::parse_protocol(c[0]) : std::nullopt;
  if (!proto) return bad(0);
  r.protocol = *proto;
  auto src = c[1] != nullptr ? IpAddress::parse(c[1]) : fail(Errc::kMalformed, "");
  if (!src) return bad(1);
  auto dst = c[3] != nullptr ? IpAddress::parse(c[3]) : fail(Errc::kMalformed, "");
  if (!dst) return bad(3);
  r.src.address = *src;
  r.dst.address = *dst;
  if (!parse_int(c[2], r.src.port)) return bad(2);
  if (!parse_int(c[4], r.dst.port)) return bad(4);
  if (!parse_int(c[5], r.start_time)) return bad(5);
  if (c[6] != nullptr && !parse_int(c[6], r.end_time)) return bad(6);
  if (!parse_int(c[7], r.updated)) return bad(7);
  auto state = c[8] != nullptr ? parse_record_state(c[8]) : std::nullopt;
  if (!state) return bad(8);
  r.state = *state;
  if (c[10] != nullptr || c[11] != nullptr) {
    r.has_usage = true;
    if (!parse_int(c[10], r.bytes_sent)) return bad(10);
    if (!parse_int(c[11], r.bytes_received)) return bad(11);
  }
  if (!parse_int(c[15], r.experiment_id)) return bad(15);
  if (!parse_int(c[16], r.activity_id)) return bad(16);
  if (c[17] != nullptr) r.experiment = c[17];
  if (c[18] != nullptr) r.activity = c[18];
  if (c[19] != nullptr) r.src_site = c[19];
  if (c[20] != nullptr) r.dst_site = c[20];
  return r;
}

std::string identity_key(const Record& r) {
  return fmt::format("{}|{}|{}|{}|{}|{}", scitags::to_string(r.protocol), r.src.address.to_string(),
                     r.src.port, r.dst.address.to_string(), r.dst.port, r.start_time);
}

// The group columns as bytes: integers as their raw bytes, names length-prefixed.
void ReportAggregator::key_of(const ReportRow& r, std::string& k) const {
  k.clear();
  auto raw = [&](const auto& v) { k.append(reinterpret_cast<const char*>(&v), sizeof v); };
  auto name = [&](const std::string& s) {
    raw(static_cast<std::uint32_t>(s.size()));
    k += s;
  };
  for (auto g : by_) {
    switch (g) {
      case GroupBy::kExperiment:
        raw(r.experiment_id);
        name(r.experiment);
        break;
      case GroupBy::kActivity:
        raw(r.activity_id);
        name(r.activity);
        break;
      case GroupBy::kSrcSite: name(r.src_site); break;
      case GroupBy::kDstSite: name(r.dst_site); break;
      case GroupBy::kDay: raw(r.day); break;
    }
  }
}

void ReportAggregator::add(const ReportRow& key, std::uint64_t volume, double throughput) {
  key_of(key, scratch_);
  auto [it, fresh] = index_.try_emplace(scratch_, groups_.size());
  if (fresh) groups_.push_back(Group{.row = key, .rates = {}});
  auto& g = groups_[it->second];
  ++g.row.flows;
  g.row.bytes += volume;
  if (throughput >= 0) g.rates.push_back(throughput);
}

void ReportAggregator::merge(ReportAggregator&& other) {
  for (auto& g : other.groups_) {
    key_of(g.row, scratch_);
    auto [it, fresh] = index_.try_emplace(scratch_, groups_.size());
    if (fresh) {
      groups_.push_back(std::move(g));
      continue;
    }
    auto& mine = groups_[it->second];
    mine.row.flows += g.row.flows;
    mine.row.bytes += g.row.bytes;
    mine.rates.insert(mine.rates.end(), g.rates.begin(), g.rates.end());
  }
  other.groups_.clear();
  other.index_.clear();
}

std::vector<ReportRow> ReportAggregator::finish() {
  std::vector<ReportRow> rows;
  rows.reserve(groups_.size());
  for (auto& g : groups_) {
    g.row.rated = g.rates.size();
    g.row.throughput_median = percentile_unsorted(g.rates, 0.5);
    g.row.throughput_p95 = percentile_unsorted(g.rates, 0.95);
    rows.push_back(std::move(g.row));
  }
  groups_.clear();
  index_.clear();
  sort_rows(rows, by_);
  return rows;
}

void sort_rows(std::vector<ReportRow>& rows, const std::vector<GroupBy>& by) {
  // Names: known ones first, alphabetically; null (empty) last.
  auto name_less = [](const std::string& a, const std::string& b) {
    if (a.empty() != b.empty()) return b.empty();
    return a < b;
  };
  std::stable_sort(rows.begin(), rows.end(), [&](const ReportRow& a, const ReportRow& b) {
    for (auto g : by) {
      switch (g) {
        case GroupBy::kExperiment:
          if (a.experiment_id != b.experiment_id) return a.experiment_id < b.experiment_id;
          if (a.experiment != b.experiment) return name_less(a.experiment, b.experiment);
          break;
        case GroupBy::kActivity:
          if (a.activity_id != b.activity_id) return a.activity_id < b.activity_id;
          if (a.activity != b.activity) return name_less(a.activity, b.activity);
          break;
        case GroupBy::kSrcSite:
          if (a.src_site != b.src_site) return name_less(a.src_site, b.src_site);
          break;
        case GroupBy::kDstSite:
          if (a.dst_site != b.dst_site) return name_less(a.dst_site, b.dst_site);
          break;
        case GroupBy::kDay:
          if (a.day != b.day) return a.day < b.day;
          break;
      }
    }
    return false;
  });
}

}  // namespace detail
}  // namespace flowmark::collector
