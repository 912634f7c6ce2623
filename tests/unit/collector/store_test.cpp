// The SQLite store on a temporary file: upserts replace a flow's row, the report's groups,
// sums and throughput percentiles equal what this test computes from the records itself,
// retention deletes by end (or last update), and what is not a store is refused by name.
// Rows are read back with SQLite's own API too, not only through the Store.
#include "flowmark/collector/store.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <tuple>

#include "../daemon/test_util.hpp"
#include "flowmark/collector/report_command.hpp"

namespace flowmark::collector {
namespace {

using testing::TempDir;

constexpr Micros kT0 = 1'796'616'000'000'000;  // 2026-12-07T04:00:00Z

Record flow(std::uint16_t sport, Micros start = kT0) {
  Record r;
  r.protocol = scitags::Protocol::kTcp;
  r.src = {*IpAddress::parse("192.0.2.1"), sport};
  r.dst = {*IpAddress::parse("2001:db8::2"), 443};
  r.start_time = start;
  r.updated = start;
  r.experiment_id = 2;
  r.activity_id = 1;
  r.experiment = "atlas";
  r.activity = "default";
  return r;
}

Record ended(Record r, Micros seconds, std::uint64_t sent, std::uint64_t received) {
  r.end_time = r.start_time + seconds * 1'000'000;
  r.updated = r.end_time;
  r.has_usage = true;
  r.bytes_sent = sent;
  r.bytes_received = received;
  r.state = RecordState::kComplete;
  return r;
}

// Rows counted with SQLite directly.
std::int64_t sql_int(const std::filesystem::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  EXPECT_EQ(sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(h, sql.c_str(), -1, &s, nullptr), SQLITE_OK) << sqlite3_errmsg(h);
  std::int64_t v = -1;
  if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

std::unique_ptr<Store> open_new(const std::filesystem::path& p) {
  auto s = Store::open(p.string(), {.create = true});
  EXPECT_TRUE(s) << s.error().message();
  return s ? std::move(*s) : nullptr;
}

TEST(SqliteStore, UpsertReplacesTheFlowsRowAndAnEndedFlowIsNotReopened) {
  TempDir dir("fm-store");
  const auto db = dir.path() / "flows.db";
  auto store = open_new(db);
  ASSERT_TRUE(store);
  EXPECT_EQ(store->kind(), "sqlite");
  std::vector<Record> first = {flow(1000), flow(1001)};
  first[1].src_site = "SITE-A";
  ASSERT_TRUE(store->write(first));
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 2);
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows WHERE end_time IS NULL"), 2);

  const Record done = ended(flow(1000), 10, 5'000, 70);
  ASSERT_TRUE(store->write(std::span(&done, 1)));
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 2);
  EXPECT_EQ(sql_int(db, "SELECT volume FROM flows WHERE src_port = 1000"), 5'000);
  EXPECT_EQ(sql_int(db, "SELECT bytes_received FROM flows WHERE src_port = 1000"), 70);
  EXPECT_EQ(sql_int(db, "SELECT end_time FROM flows WHERE src_port = 1000"), kT0 + 10'000'000);
  EXPECT_EQ(sql_int(db, "SELECT throughput = 500.0 FROM flows WHERE src_port = 1000"), 1);
  EXPECT_EQ(sql_int(db, "SELECT experiment_id FROM flows WHERE src_port = 1000"), 2);
  EXPECT_EQ(sql_int(db, "SELECT src_site IS NULL FROM flows WHERE src_port = 1000"), 1);

  // A late ongoing record of the ended flow changes nothing; the same start time on another
  // port or a different start time is another flow.
  Record late = flow(1000);
  late.updated = kT0 + 20'000'000;
  Record other_start = flow(1000, kT0 + 1);
  ASSERT_TRUE(store->write(std::vector<Record>{late, other_start}));
  EXPECT_EQ(sql_int(db,
                    "SELECT state = 'complete' FROM flows WHERE src_port = 1000 AND "
                    "start_time = " +
                        std::to_string(kT0)),
            1);
  EXPECT_EQ(*store->count(), 3u);

  auto latest = store->latest(1);
  ASSERT_TRUE(latest) << latest.error().message();
  ASSERT_EQ(latest->size(), 1u);
  const Record& got = latest->front();
  EXPECT_EQ(got.src, done.src);
  EXPECT_EQ(got.dst, done.dst);
  EXPECT_EQ(got.start_time, done.start_time);
  EXPECT_EQ(got.end_time, done.end_time);
  EXPECT_EQ(got.bytes_sent, 5'000u);
  EXPECT_EQ(got.state, RecordState::kComplete);
  EXPECT_EQ(got.experiment, "atlas");
  EXPECT_EQ(got.direction(), Direction::kSrcToDst);
}

TEST(SqliteStore, OneWriteIsOneTransactionAndASecondOpenSeesTheSchema) {
  TempDir dir("fm-store");
  const auto db = dir.path() / "flows.db";
  {
    auto store = open_new(db);
    std::vector<Record> many;
    for (std::uint16_t p = 1; p <= 2000; ++p) many.push_back(flow(p));
    ASSERT_TRUE(store->write(many));
  }
  EXPECT_EQ(sql_int(db, "SELECT value FROM flowmark_meta WHERE key = 'schema_version'"),
            kStoreSchemaVersion);
  auto again = Store::open(db.string(), {.create = false, .read_only = true});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*(*again)->count(), 2000u);
}

// What the report must say, computed here from the records.
struct Expect {
  std::uint64_t flows = 0, bytes = 0;
  std::vector<double> rates;
};

double nearest_rank_interpolated(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const double h = (static_cast<double>(v.size()) - 1) * p;
  const double below = std::floor(h);
  const auto i = static_cast<std::size_t>(below);
  if (i + 1 == v.size()) return v[i];
  return v[i] + (h - below) * (v[i + 1] - v[i]);
}

TEST(SqliteStore, ReportGroupsSumsAndPercentilesAsComputedFromTheRecords) {
  TempDir dir("fm-store");
  const auto db = dir.path() / "flows.db";
  auto store = open_new(db);
  std::mt19937 rng(15);
  const char* sites[] = {"", "CERN-PROD", "FNAL", "BNL"};
  std::vector<Record> all;
  for (std::uint16_t p = 1; p <= 600; ++p) {
    Record r = flow(p, kT0 + static_cast<Micros>(rng() % 3) * kMicrosPerDay +
                           static_cast<Micros>(rng() % 1000) * 1'000'000);
    r.experiment_id = static_cast<std::uint32_t>(1 + rng() % 3);
    r.experiment = r.experiment_id == 3 ? "" : (r.experiment_id == 1 ? "default" : "atlas");
    r.activity_id = static_cast<std::uint32_t>(rng() % 2);
    r.src_site = sites[rng() % 4];
    r.dst_site = sites[rng() % 4];
    switch (rng() % 4) {
      case 0: break;  // open, no usage
      case 1:
        r = ended(r, 0, rng() % 100'000, rng() % 100'000);  // complete, no duration
        break;
      case 2:
        r = ended(r, 1 + rng() % 100, rng() % 10'000'000, rng() % 10'000'000);
        r.state = RecordState::kTimedOut;
        break;
      default: r = ended(r, 1 + rng() % 100, rng() % 10'000'000, rng() % 10'000'000); break;
    }
    all.push_back(r);
  }
  ASSERT_TRUE(store->write(all));

  const Micros from = kT0 + kMicrosPerDay;  // the second and third day only
  using Key = std::tuple<std::uint32_t, std::string, std::string, Micros>;
  std::map<Key, Expect> want;
  for (const auto& r : all) {
    if (r.start_time < from) continue;
    auto& e = want[{r.experiment_id, r.experiment, r.src_site,
                    r.start_time - r.start_time % kMicrosPerDay}];
    ++e.flows;
    e.bytes += std::max(r.bytes_sent, r.bytes_received);
    if (r.state == RecordState::kComplete && r.end_time > r.start_time) {
      e.rates.push_back(static_cast<double>(std::max(r.bytes_sent, r.bytes_received)) /
                        (static_cast<double>(r.end_time - r.start_time) / 1e6));
    }
  }
  ReportQuery q;
  q.from = from;
  q.by = {GroupBy::kExperiment, GroupBy::kSrcSite, GroupBy::kDay};
  auto rows = store->report(q);
  ASSERT_TRUE(rows) << rows.error().message();
  ASSERT_EQ(rows->size(), want.size());
  std::uint64_t total = 0;
  for (const auto& row : *rows) {
    const Key k{row.experiment_id, row.experiment, row.src_site, row.day};
    ASSERT_TRUE(want.contains(k)) << row.experiment_id << " " << row.src_site;
    const auto& e = want[k];
    EXPECT_EQ(row.flows, e.flows);
    EXPECT_EQ(row.bytes, e.bytes);
    EXPECT_EQ(row.rated, e.rates.size());
    if (!e.rates.empty()) {
      EXPECT_NEAR(row.throughput_median, nearest_rank_interpolated(e.rates, 0.5), 1e-6);
      EXPECT_NEAR(row.throughput_p95, nearest_rank_interpolated(e.rates, 0.95), 1e-6);
    }
    total += row.flows;
  }
  // Sorted: experiment id first.
  EXPECT_TRUE(std::is_sorted(rows->begin(), rows->end(), [](const auto& a, const auto& b) {
    return a.experiment_id < b.experiment_id;
  }));
  EXPECT_EQ(total,
            static_cast<std::uint64_t>(std::count_if(
                all.begin(), all.end(), [&](const Record& r) { return r.start_time >= from; })));

  // Scanned by several threads (each over a range of rowids), the report is the same.
  ::setenv("FLOWMARK_REPORT_THREADS", "3", 1);
  auto threaded = store->report(q);
  ::unsetenv("FLOWMARK_REPORT_THREADS");
  ASSERT_TRUE(threaded) << threaded.error().message();
  ASSERT_EQ(threaded->size(), rows->size());
  for (std::size_t i = 0; i < rows->size(); ++i) {
    const auto& a = (*rows)[i];
    const auto& b = (*threaded)[i];
    EXPECT_EQ(
        std::tie(a.experiment_id, a.experiment, a.src_site, a.day, a.flows, a.bytes, a.rated),
        std::tie(b.experiment_id, b.experiment, b.src_site, b.day, b.flows, b.bytes, b.rated));
    EXPECT_DOUBLE_EQ(a.throughput_median, b.throughput_median);
    EXPECT_DOUBLE_EQ(a.throughput_p95, b.throughput_p95);
  }

  // --to bounds the other side; an empty range has no rows.
  q = ReportQuery{};
  q.to = kT0;
  EXPECT_TRUE(store->report(q)->empty());
}

TEST(Percentile, UnsortedEqualsSortedAndInterpolates) {
  std::mt19937 rng(7);
  for (std::size_t n : {1u, 2u, 3u, 20u, 101u}) {
    std::vector<double> v(n);
    for (auto& x : v) x = static_cast<double>(rng() % 1000);
    for (double p : {0.0, 0.5, 0.95, 1.0}) {
      auto copy = v;
      EXPECT_DOUBLE_EQ(percentile_unsorted(copy, p), nearest_rank_interpolated(v, p))
          << n << " " << p;
    }
  }
  const std::vector<double> four = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(percentile_sorted(four, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(percentile_sorted(four, 0.95), 3.85);
}

TEST(SqliteStore, RetentionDeletesByEndTimeOrLastUpdate) {
  TempDir dir("fm-store");
  auto store = open_new(dir.path() / "flows.db");
  Record old_end = ended(flow(1), 10, 1, 1);  // ended at T0+10 s
  Record old_open = flow(2);                  // updated at T0
  Record recent_open = flow(3);               // started at T0, updated at T0+1h
  recent_open.updated = kT0 + 3600'000'000;
  Record started_old_ended_late = ended(flow(4), 7200, 1, 1);  // ended at T0+2h
  ASSERT_TRUE(
      store->write(std::vector<Record>{old_end, old_open, recent_open, started_old_ended_late}));
  auto n = store->delete_before(kT0 + 60'000'000);
  ASSERT_TRUE(n) << n.error().message();
  EXPECT_EQ(*n, 2u);
  auto left = store->latest(10);
  ASSERT_EQ(left->size(), 2u);
  EXPECT_EQ((*left)[0].src.port, 4);
  EXPECT_EQ((*left)[1].src.port, 3);
}

TEST(SqliteStore, WhatIsNotAStoreIsRefusedByName) {
  TempDir dir("fm-store");
  auto missing = Store::open((dir.path() / "none.db").string(), {});
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("no such store file"), std::string::npos);

  const auto text = dir.path() / "text.db";
  std::ofstream(text) << "not a database, not at all; just text long enough to be read\n";
  auto notdb = Store::open(text.string(), {});
  ASSERT_FALSE(notdb);
  EXPECT_EQ(store_error_reason(notdb.error()), "schema") << notdb.error().message();

  const auto other = dir.path() / "other.db";
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(other.c_str(), &h), SQLITE_OK);
  sqlite3_exec(h, "CREATE TABLE t (x)", nullptr, nullptr, nullptr);
  sqlite3_close(h);
  auto foreign = Store::open(other.string(), {});
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find("not a flowmark store"), std::string::npos);

  {
    auto s = open_new(dir.path() / "newer.db");
  }
  ASSERT_EQ(sqlite3_open((dir.path() / "newer.db").c_str(), &h), SQLITE_OK);
  sqlite3_exec(h, "UPDATE flowmark_meta SET value = '99' WHERE key = 'schema_version'", nullptr,
               nullptr, nullptr);
  sqlite3_close(h);
  auto newer = Store::open((dir.path() / "newer.db").string(), {});
  ASSERT_FALSE(newer);
  EXPECT_NE(newer.error().message().find("newer"), std::string::npos);

  auto url = Store::open("postgresql://[bad", {});
  ASSERT_FALSE(url);
  EXPECT_EQ(url.error().code(), Errc::kInvalidArgument) << url.error().message();
  EXPECT_EQ(redact_store_target("postgresql://u:secret@h/db"), "postgresql://u:***@h/db");
}

TEST(ReportCommand, ColumnsFormatsAndArguments) {
  ReportRow a;
  a.experiment_id = 2;
  a.experiment = "atlas";
  a.day = kT0 - kT0 % kMicrosPerDay;
  a.flows = 3;
  a.bytes = 3000;
  a.rated = 1;
  a.throughput_median = a.throughput_p95 = 1234.25;
  ReportRow b;
  b.experiment_id = 77;  // unknown to the registry: no name, and no rated flow
  b.day = a.day;
  b.flows = 1;
  const std::vector<GroupBy> by = {GroupBy::kExperiment, GroupBy::kDay};
  std::string json, csv, text;
  format_report({a, b}, by, "json", json);
  EXPECT_EQ(
      json,
      "[\n  {\"experiment_id\": 2, \"experiment\": \"atlas\", \"day\": \"2026-12-07\", "
      "\"flows\": 3, \"bytes\": 3000, \"throughput_median\": 1234.25, \"throughput_p95\": "
      "1234.25},\n  {\"experiment_id\": 77, \"experiment\": null, \"day\": \"2026-12-07\", "
      "\"flows\": 1, \"bytes\": 0, \"throughput_median\": null, \"throughput_p95\": null}\n]\n");
  format_report({a, b}, by, "csv", csv);
  EXPECT_EQ(csv,
            "experiment_id,experiment,day,flows,bytes,throughput_median,throughput_p95\r\n"
            "2,atlas,2026-12-07,3,3000,1234.25,1234.25\r\n77,,2026-12-07,1,0,,\r\n");
  format_report({a, b}, by, "text", text);
  EXPECT_EQ(text,
            "experiment_id  experiment  day         flows  bytes  throughput_median  "
            "throughput_p95\n"
            "            2  atlas       2026-12-07      3   3000               1234            "
            "1234\n"
            "           77  -           2026-12-07      1      0                  -               "
            "-\n");
  std::string empty;
  format_report({}, by, "json", empty);
  EXPECT_EQ(empty, "[]\n");

  auto bad = parse_group_by_list("experiment,site");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message(),
            "--by: unknown column 'site' (allowed: experiment, activity, src_site, dst_site, day)");
  EXPECT_FALSE(parse_group_by_list("day,day"));
  EXPECT_EQ(*parse_report_time("2026-12-07"), kT0 - 4 * 3600'000'000LL);
  EXPECT_EQ(*parse_report_time("2026-12-07T04:00:00Z"), kT0);
  EXPECT_FALSE(parse_report_time("yesterday"));
}

}  // namespace
}  // namespace flowmark::collector
