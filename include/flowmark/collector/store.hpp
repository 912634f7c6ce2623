// flowmark::collector — Store, where a collector keeps its flow records: an embedded SQLite
// file, or a PostgreSQL database shared by several collectors. One row per flow identity
// (protocol, src_ip, src_port, dst_ip, dst_port, start_time); a later record of the same flow
// replaces the earlier one (upsert). Used by flowmarkd's `store` backend (writes) and by
// `flowmark report` (reads); the schema is documented in README.md ("The store") and
// flowmark-report(1), so that other tools may read it too.
//
//   FM_TRY(auto store, Store::open("/var/lib/flowmark/flows.db", {.create = true}));
//   FM_TRY_VOID(store->write(records));                 // one transaction
//   FM_TRY(auto rows, store->report({.by = {GroupBy::kExperiment}}));
//   FM_TRY(auto gone, store->delete_before(now_micros() - 30 * kMicrosPerDay));
//
// Not thread-safe: one Store per thread. Errors carry a std::errc that store_error_reason()
// turns into the label of the error counters ("unavailable", "full", "unwritable", "busy",
// "schema", "other").
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/collector/record.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/core/time.hpp"

namespace flowmark::collector {

// The version written in the store's flowmark_meta table (key "schema_version"). A store of
// a newer version is refused.
inline constexpr int kStoreSchemaVersion = 1;
inline constexpr Micros kMicrosPerDay = 86'400'000'000;

// The columns a report groups by (`--by experiment,activity,src_site,dst_site,day`).
enum class GroupBy : std::uint8_t { kExperiment, kActivity, kSrcSite, kDstSite, kDay };
std::string_view to_string(GroupBy g) noexcept;  // "experiment", "activity", ...
std::optional<GroupBy> parse_group_by(std::string_view s) noexcept;
// "experiment, activity, src_site, dst_site, day" (for error messages and --help).
std::string_view group_by_names() noexcept;

struct ReportQuery {
  // Flows whose start_time is in [from, to); nullopt: unbounded.
  std::optional<Micros> from, to;
  std::vector<GroupBy> by = {GroupBy::kExperiment};
};

// One group of a report. Only the fields of the query's `by` are meaningful.
struct ReportRow {
  std::uint32_t experiment_id = 0, activity_id = 0;
  std::string experiment, activity;  // registry names; empty: unknown (null)
  std::string src_site, dst_site;    // empty: no site (null)
  Micros day = 0;                    // the UTC day of start_time (its midnight)
  std::uint64_t flows = 0;           // flows of the group, in any state
  std::uint64_t bytes = 0;           // the sum of their volumes
  // The throughput percentiles (bytes/s) are over the group's complete flows with a
  // duration > 0 (`rated` of them; the percentiles are meaningless when it is 0), by linear
  // interpolation between the nearest ranks (PostgreSQL's percentile_cont).
  std::uint64_t rated = 0;
  double throughput_median = 0, throughput_p95 = 0;
};

// Linear interpolation between the nearest ranks of sorted `v` (not empty), p in [0, 1].
double percentile_sorted(std::span<const double> v, double p) noexcept;
// The same of unsorted `v`, which it reorders (linear time).
double percentile_unsorted(std::span<double> v, double p) noexcept;

struct StoreOptions {
  bool create = false;     // create the file (SQLite) and the schema when absent
  bool read_only = false;  // SQLite: open read-only (reports)
  // PostgreSQL: seconds a connection attempt may take (libpq connect_timeout).
  int connect_timeout_s = 3;
};

class Store {
 public:
  virtual ~Store() = default;

  // "postgresql://..." or "postgres://...": PostgreSQL (libpq); anything else is the path of a
  // SQLite file. Without `create`, a missing file or schema is an error that says so.
  static Result<std::unique_ptr<Store>> open(std::string_view target, const StoreOptions& o);

  // "sqlite" or "postgresql".
  virtual std::string_view kind() const noexcept = 0;

  // Upserts the records in one transaction (all or nothing): a row of the same identity is
  // replaced, except that a record without an end time does not replace one with (a late
  // start or ongoing record does not reopen an ended flow). An error leaves the store as it
  // was; the caller may retry the same records.
  virtual Result<void> write(std::span<const Record> records) = 0;

  // Deletes the flows whose end time (or, while open, last update) is before `t`; returns
  // how many.
  virtual Result<std::uint64_t> delete_before(Micros t) = 0;

  // One row per group, sorted by the group columns.
  virtual Result<std::vector<ReportRow>> report(const ReportQuery& q) = 0;

  // The `n` flows updated last, the latest first.
  virtual Result<std::vector<Record>> latest(std::size_t n) = 0;

  // The number of flows stored.
  virtual Result<std::uint64_t> count() = 0;
};

// The label of an error of a Store for the counters: "unavailable" (cannot connect, the
// connection broke), "full" (no space), "unwritable" (read-only, permission, cannot open),
// "busy" (locked by another writer), "schema" (not a flowmark store, or a newer one),
// "other".
std::string_view store_error_reason(const Error& e) noexcept;

// A PostgreSQL URL with its password (if any) replaced by "***", for logs and errors.
std::string redact_store_target(std::string_view target);

}  // namespace flowmark::collector
