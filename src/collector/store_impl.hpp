// The parts of the Store implementations that SQLite and PostgreSQL share: the schema, the
// column list, the upsert statement and a record's column values.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <vector>

#include "flowmark/collector/store.hpp"

namespace flowmark::collector::detail {

// The schema, one statement each (the same text for both databases: BIGINT and DOUBLE
// PRECISION have INTEGER and REAL affinity in SQLite).
std::span<const std::string_view> schema_statements() noexcept;

// The columns of `flows` a record fills, in the order of record_values().
inline constexpr std::size_t kColumnCount = 21;
std::span<const std::string_view, kColumnCount> column_names() noexcept;
// "protocol, src_ip, ..." (every column above), for SELECT and INSERT.
const std::string& column_list();

// INSERT ... VALUES (...), ... ON CONFLICT (identity) DO UPDATE SET ... WHERE the new
// record is not older. Placeholders "?NNN" (SQLite) or "$NNN" (PostgreSQL) numbered from 1.
std::string upsert_sql(char placeholder, std::size_t rows);

struct Value {
  enum class Kind : std::uint8_t { kNull, kInt, kReal, kText };
  Kind kind = Kind::kNull;
  std::int64_t i = 0;
  double d = 0;
  std::string_view s;
};
// Addresses are written as text into `src_ip` / `dst_ip`, which the values point into (and
// into the record's strings): keep all three alive while the values are used.
void record_values(const Record& r, std::string& src_ip, std::string& dst_ip,
                   std::array<Value, kColumnCount>& out);

// A record from its columns as text (nullptr: SQL null), in column_names() order; errors
// name the bad column.
Result<Record> record_from_text(const std::array<const char*, kColumnCount>& cols);

// The identity of a record as one string (protocol, addresses, ports, start time), for
// de-duplicating a batch.
std::string identity_key(const Record& r);

// Errors of a store: "<what>: <detail>" with a std::errc the counters' reason follows.
std::unexpected<Error> store_fail(std::errc code, std::string message);

Result<std::unique_ptr<Store>> open_sqlite(std::string_view path, const StoreOptions& o);
Result<std::unique_ptr<Store>> open_postgres(std::string_view url, const StoreOptions& o);

// Aggregation of scanned rows into report groups (SQLite scans, PostgreSQL groups in SQL).
class ReportAggregator {
 public:
  explicit ReportAggregator(std::vector<GroupBy> by) : by_(std::move(by)) {}
  // One flow: its group columns (names empty = null), volume, and its throughput when it is
  // complete with a duration > 0 (negative: not rated).
  void add(const ReportRow& key, std::uint64_t volume, double throughput);
  // Adds the groups of another aggregator of the same columns.
  void merge(ReportAggregator&& other);
  std::vector<ReportRow> finish();

 private:
  struct Group {
    ReportRow row;
    std::vector<double> rates;
  };
  void key_of(const ReportRow& r, std::string& out) const;
  std::vector<GroupBy> by_;
  std::vector<Group> groups_;
  std::unordered_map<std::string, std::size_t> index_;
  std::string scratch_;
};

// Sorts report rows by the group columns, in `by` order (null names last).
void sort_rows(std::vector<ReportRow>& rows, const std::vector<GroupBy>& by);

}  // namespace flowmark::collector::detail
