// Store in an embedded SQLite file: WAL journal, synchronous=NORMAL (a crash loses at most
// the last transactions, never the file), prepared statements, one transaction per write().
//
// libsqlite3 is loaded with dlopen() when a SQLite store is first opened, not linked: every
// flowmarkd mapped it (~0.25 MB resident) though only a store backend uses it. Only the
// declarations of <sqlite3.h> are used at build time.
#include <dlfcn.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "collector/store_impl.hpp"
#include "flowmark/core/dynamic_library.hpp"

namespace flowmark::collector::detail {
namespace {

constexpr const char* kLibsqlite = "libsqlite3.so.0";  // the soname of every SQLite 3

// The SQLite functions the store uses (sqlite3_<name>), resolved from the library loaded at run
// time; their types are those of <sqlite3.h>.
#define FM_SQLITE_FUNCTIONS(X) \
  X(bind_double)               \
  X(bind_int64)                \
  X(bind_null)                 \
  X(bind_text)                 \
  X(busy_timeout)              \
  X(changes64)                 \
  X(clear_bindings)            \
  X(close_v2)                  \
  X(column_bytes)              \
  X(column_double)             \
  X(column_int)                \
  X(column_int64)              \
  X(column_text)               \
  X(errmsg)                    \
  X(errstr)                    \
  X(exec)                      \
  X(extended_result_codes)     \
  X(finalize)                  \
  X(open_v2)                   \
  X(prepare_v2)                \
  X(prepare_v3)                \
  X(reset)                     \
  X(step)

struct LibSqlite {
#define FM_SQLITE_MEMBER(name) decltype(&::sqlite3_##name) name = nullptr;
  FM_SQLITE_FUNCTIONS(FM_SQLITE_MEMBER)
#undef FM_SQLITE_MEMBER
  std::string error;  // why it is unusable; empty when ready
};

// Loads libsqlite3 once per process (thread-safe); the library stays loaded.
const LibSqlite& sq() noexcept {
  static LibSqlite api;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = open_library(
        kLibsqlite, "install libsqlite3-0 (apt-get install libsqlite3-0) to use a SQLite store",
        api.error);
    if (lib == nullptr) return;
    const char* missing = nullptr;
    bool ok = true;
#define FM_SQLITE_RESOLVE(name) ok = resolve_symbol(lib, "sqlite3_" #name, api.name, missing) && ok;
    FM_SQLITE_FUNCTIONS(FM_SQLITE_RESOLVE)
#undef FM_SQLITE_RESOLVE
    if (!ok)
      api.error = fmt::format("{} has no symbol {}: reinstall libsqlite3-0", kLibsqlite, missing);
  });
  return api;
}

// The std::errc of an SQLite result code (for store_error_reason()).
std::errc errc_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL: return std::errc::no_space_on_device;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_CANTOPEN:
    case SQLITE_AUTH: return std::errc::permission_denied;
    case SQLITE_IOERR: return std::errc::io_error;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return std::errc::device_or_resource_busy;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
    case SQLITE_SCHEMA: return std::errc::wrong_protocol_type;
    default: return std::errc::state_not_recoverable;
  }
}

class Stmt {
 public:
  Stmt() = default;
  explicit Stmt(sqlite3_stmt* s) : s_(s) {}
  Stmt(Stmt&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  Stmt& operator=(Stmt&& o) noexcept {
    std::swap(s_, o.s_);
    return *this;
  }
  ~Stmt() { sq().finalize(s_); }
  sqlite3_stmt* get() const noexcept { return s_; }

 private:
  sqlite3_stmt* s_ = nullptr;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStore() override {
    upsert_ = Stmt();
    sq().close_v2(db_);
  }

  std::string_view kind() const noexcept override { return "sqlite"; }

  std::unexpected<Error> error(std::string_view what, int rc) const {
    return store_fail(errc_of(rc), fmt::format("{}: {}: {}", path_, what, sq().errmsg(db_)));
  }

  Result<void> exec(std::string_view sql, std::string_view what) {
    const std::string s(sql);
    const int rc = sq().exec(db_, s.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return error(what, rc);
    return {};
  }

  // After a failure: the error reported is the first one, not the rollback's.
  void rollback() noexcept { sq().exec(db_, "ROLLBACK", nullptr, nullptr, nullptr); }

  Result<Stmt> prepare(std::string_view sql, std::string_view what) {
    sqlite3_stmt* s = nullptr;
    const int rc = sq().prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                   SQLITE_PREPARE_PERSISTENT, &s, nullptr);
    if (rc != SQLITE_OK) return error(what, rc);
    return Stmt(s);
  }

  Result<void> init(const StoreOptions& o) {
    sq().extended_result_codes(db_, 1);
    // A writer waiting on another writer waits briefly: the backend retries with back-off
    // rather than stalling its thread.
    sq().busy_timeout(db_, o.read_only ? 5000 : 100);
    // 64 MiB of page cache (the default 2 MiB makes every insert into the indexes of a large
    // store a read). Readers (reports) read through a memory map; the service's writer does
    // not: mapped pages of a store that grows for months would count in its resident size.
    FM_TRY_VOID(exec("PRAGMA cache_size=-65536", "opening the store"));
    if (o.read_only) FM_TRY_VOID(exec("PRAGMA mmap_size=1073741824", "opening the store"));
    FM_TRY_VOID(exec("PRAGMA temp_store=MEMORY", "opening the store"));
    if (!o.read_only) {
      FM_TRY_VOID(exec("PRAGMA journal_mode=WAL", "opening the store (WAL journal)"));
      FM_TRY_VOID(exec("PRAGMA synchronous=NORMAL", "opening the store"));
    }
    FM_TRY_VOID(check_schema(o.create));
    return {};
  }

  Result<void> check_schema(bool create) {
    auto has = prepare("SELECT value FROM flowmark_meta WHERE key = 'schema_version'",
                       "reading the schema version");
    if (!has) {
      // "no such table" is SQLITE_ERROR; anything else (not a database, locked) is itself.
      if (has.error().code() != std::errc::state_not_recoverable)
        return std::unexpected(has.error());
      if (!create) {
        return store_fail(std::errc::wrong_protocol_type,
                          fmt::format("{}: not a flowmark store (no flowmark_meta table)", path_));
      }
      FM_TRY_VOID(exec("BEGIN IMMEDIATE", "creating the schema"));
      for (auto sql : schema_statements()) {
        if (auto r = exec(sql, "creating the schema"); !r) {
          rollback();
          return r;
        }
      }
      FM_TRY_VOID(exec(fmt::format("INSERT INTO flowmark_meta (key, value) VALUES "
                                   "('schema_version', '{}') ON CONFLICT (key) DO NOTHING",
                                   kStoreSchemaVersion),
                       "creating the schema"));
      FM_TRY_VOID(exec("COMMIT", "creating the schema"));
      return {};
    }
    const int rc = sq().step(has->get());
    if (rc != SQLITE_ROW) {
      return store_fail(std::errc::wrong_protocol_type,
                        fmt::format("{}: not a flowmark store (no schema_version)", path_));
    }
    const int version = sq().column_int(has->get(), 0);
    if (version > kStoreSchemaVersion) {
      return store_fail(std::errc::wrong_protocol_type,
                        fmt::format("{}: schema version {} is newer than this flowmark's ({}): "
                                    "upgrade flowmark",
                                    path_, version, kStoreSchemaVersion));
    }
    return {};
  }

  Result<void> write(std::span<const Record> records) override {
    if (records.empty()) return {};
    if (upsert_.get() == nullptr) {
      FM_TRY(upsert_, prepare(upsert_sql('?', 1), "preparing the upsert"));
    }
    FM_TRY_VOID(exec("BEGIN IMMEDIATE", "beginning a transaction"));
    std::array<Value, kColumnCount> v;
    std::string src, dst;
    auto* s = upsert_.get();
    for (const auto& r : records) {
      record_values(r, src, dst, v);
      for (std::size_t i = 0; i < kColumnCount; ++i) {
        const int col = static_cast<int>(i) + 1;
        switch (v[i].kind) {
          case Value::Kind::kNull: sq().bind_null(s, col); break;
          case Value::Kind::kInt: sq().bind_int64(s, col, v[i].i); break;
          case Value::Kind::kReal: sq().bind_double(s, col, v[i].d); break;
          case Value::Kind::kText:
            sq().bind_text(s, col, v[i].s.data(), static_cast<int>(v[i].s.size()), SQLITE_STATIC);
            break;
        }
      }
      const int rc = sq().step(s);
      sq().reset(s);
      if (rc != SQLITE_DONE) {
        auto e = error("writing flows", rc);
        rollback();
        return e;
      }
    }
    sq().clear_bindings(s);
    if (auto r = exec("COMMIT", "committing flows"); !r) {
      rollback();
      return r;
    }
    return {};
  }

  Result<std::uint64_t> delete_before(Micros t) override {
    FM_TRY(auto s,
           prepare("DELETE FROM flows WHERE start_time < ?1 AND COALESCE(end_time, updated) < ?1",
                   "preparing the retention delete"));
    sq().bind_int64(s.get(), 1, t);
    const int rc = sq().step(s.get());
    if (rc != SQLITE_DONE) return error("deleting old flows", rc);
    return static_cast<std::uint64_t>(sq().changes64(db_));
  }

  // The rows of rowid in [lo, hi] into `agg`: SQLITE_DONE, or the error's code (and
  // `why`).
  static int scan(sqlite3* db, const ReportQuery& q, std::int64_t lo, std::int64_t hi,
                  ReportAggregator& agg, std::string& why) {
    // Grouping and percentiles in C++ (SQLite has no percentile aggregate). Only the columns
    // the groups need are read (each costs a step of SQLite's VM a row). Without time bounds,
    // a scan of the table (the start_time index would cost a lookup a row).
    std::string sql =
        "SELECT volume, CASE WHEN state = 'complete' AND duration > 0 THEN "
        "throughput ELSE -1 END";
    int col[5] = {};  // the first result column of each GroupBy
    int next = 2;
    for (auto g : q.by) {
      col[static_cast<int>(g)] = next;
      switch (g) {
        // With the experiment among the groups, ids only: the names are looked up once a
        // group (name_groups), not read and copied on every row (a third of a report's
        // time). An activity without its experiment is grouped by its name too.
        case GroupBy::kExperiment:
          sql += ", experiment_id";
          ++next;
          break;
        case GroupBy::kActivity:
          sql += names_later(q) ? ", activity_id" : ", activity_id, activity";
          next += names_later(q) ? 1 : 2;
          break;
        case GroupBy::kSrcSite:
          sql += ", src_site";
          ++next;
          break;
        case GroupBy::kDstSite:
          sql += ", dst_site";
          ++next;
          break;
        case GroupBy::kDay:
          sql += ", start_time";
          ++next;
          break;
      }
    }
    sql += " FROM flows WHERE rowid BETWEEN ?3 AND ?4";
    if (q.from || q.to) sql += " AND start_time >= ?1 AND start_time < ?2";
    sqlite3_stmt* raw = nullptr;
    int rc = sq().prepare_v2(db, sql.c_str(), -1, &raw, nullptr);
    Stmt s(raw);
    if (rc != SQLITE_OK) {
      why = sq().errmsg(db);
      return rc;
    }
    sq().bind_int64(s.get(), 1, q.from.value_or(INT64_MIN));
    sq().bind_int64(s.get(), 2, q.to.value_or(INT64_MAX));
    sq().bind_int64(s.get(), 3, lo);
    sq().bind_int64(s.get(), 4, hi);
    ReportRow key;
    auto text = [&](int c, std::string& out) {
      const auto* p = reinterpret_cast<const char*>(sq().column_text(s.get(), c));
      if (p == nullptr) {
        out.clear();
      } else {
        out.assign(p, static_cast<std::size_t>(sq().column_bytes(s.get(), c)));
      }
    };
    while ((rc = sq().step(s.get())) == SQLITE_ROW) {
      for (auto g : q.by) {
        const int c = col[static_cast<int>(g)];
        switch (g) {
          case GroupBy::kExperiment:
            key.experiment_id = static_cast<std::uint32_t>(sq().column_int64(s.get(), c));
            break;
          case GroupBy::kActivity:
            key.activity_id = static_cast<std::uint32_t>(sq().column_int64(s.get(), c));
            if (!names_later(q)) text(c + 1, key.activity);
            break;
          case GroupBy::kSrcSite: text(c, key.src_site); break;
          case GroupBy::kDstSite: text(c, key.dst_site); break;
          case GroupBy::kDay: {
            const Micros t = sq().column_int64(s.get(), c);
            key.day = t - ((t % kMicrosPerDay) + kMicrosPerDay) % kMicrosPerDay;
            break;
          }
        }
      }
      agg.add(key, static_cast<std::uint64_t>(sq().column_int64(s.get(), 0)),
              sq().column_double(s.get(), 1));
    }
    if (rc != SQLITE_DONE) why = sq().errmsg(db);
    return rc;
  }

  Result<std::vector<ReportRow>> report(const ReportQuery& q) override {
    // A large store is scanned by several threads, each over a range of rowids with a
    // connection of its own (WAL: readers do not block each other, nor the writer; a row is
    // in one range whatever is written meanwhile).
    FM_TRY(auto m, prepare("SELECT coalesce(max(rowid), 0) FROM flows", "reading flows"));
    if (const int rc = sq().step(m.get()); rc != SQLITE_ROW) return error("reading flows", rc);
    const std::int64_t max_rowid = sq().column_int64(m.get(), 0);
    constexpr std::int64_t kRowsPerThread = 500'000;
    std::int64_t threads = std::clamp<std::int64_t>(
        std::min<std::int64_t>(std::thread::hardware_concurrency(), max_rowid / kRowsPerThread), 1,
        8);
    // For measurements (bench/store_bench.cpp): FLOWMARK_REPORT_THREADS=N.
    if (const char* t = std::getenv("FLOWMARK_REPORT_THREADS"); t != nullptr && std::atoi(t) > 0) {
      threads = std::min(std::atoi(t), 64);
    }
    std::vector<ReportAggregator> parts(static_cast<std::size_t>(threads), ReportAggregator(q.by));
    std::vector<int> rcs(parts.size(), SQLITE_DONE);
    std::vector<std::string> whys(parts.size());
    if (threads == 1) {
      rcs[0] = scan(db_, q, INT64_MIN, INT64_MAX, parts[0], whys[0]);
    } else {
      std::vector<std::thread> workers;
      const std::int64_t step = max_rowid / threads + 1;
      for (std::int64_t i = 0; i < threads; ++i) {
        const std::int64_t lo = i == 0 ? INT64_MIN : i * step + 1;
        const std::int64_t hi = i + 1 == threads ? INT64_MAX : (i + 1) * step;
        const auto k = static_cast<std::size_t>(i);
        workers.emplace_back([&, lo, hi, k] {
          sqlite3* db = nullptr;
          rcs[k] =
              sq().open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
          if (rcs[k] == SQLITE_OK) {
            sq().busy_timeout(db, 5000);
            sq().exec(db, "PRAGMA mmap_size=1073741824", nullptr, nullptr, nullptr);
            rcs[k] = scan(db, q, lo, hi, parts[k], whys[k]);
          } else {
            whys[k] = db != nullptr ? sq().errmsg(db) : sq().errstr(rcs[k]);
          }
          sq().close_v2(db);
        });
      }
      for (auto& w : workers) w.join();
    }
    for (std::size_t k = 0; k < parts.size(); ++k) {
      if (rcs[k] != SQLITE_DONE) {
        return store_fail(errc_of(rcs[k]), fmt::format("{}: reading flows: {}", path_, whys[k]));
      }
      if (k != 0) parts[0].merge(std::move(parts[k]));
    }
    auto rows = parts[0].finish();
    FM_TRY_VOID(name_groups(q, rows));
    return rows;
  }

  // The registry names of each group's experiment and activity: one lookup a group through
  // the experiment index (the first row of the experiment; the latest of the activity).
  // Names follow the ids (the registry's), so one row tells the group's.
  static bool names_later(const ReportQuery& q) {
    return std::find(q.by.begin(), q.by.end(), GroupBy::kExperiment) != q.by.end();
  }

  Result<void> name_groups(const ReportQuery& q, std::vector<ReportRow>& rows) {
    if (!names_later(q)) return {};
    const bool by_act = std::find(q.by.begin(), q.by.end(), GroupBy::kActivity) != q.by.end();
    FM_TRY(auto exp, prepare("SELECT experiment FROM flows WHERE experiment_id = ?1 LIMIT 1",
                             "naming experiments"));
    FM_TRY(auto act, prepare("SELECT activity FROM flows WHERE experiment_id = ?1 AND "
                             "activity_id = ?2 ORDER BY start_time DESC LIMIT 1",
                             "naming activities"));
    auto first_text = [](sqlite3_stmt* st, int col, std::string& out) {
      out.clear();
      if (sq().step(st) == SQLITE_ROW) {
        if (const auto* p = reinterpret_cast<const char*>(sq().column_text(st, col))) {
          out.assign(p, static_cast<std::size_t>(sq().column_bytes(st, col)));
        }
      }
      sq().reset(st);
    };
    for (auto& r : rows) {
      sq().bind_int64(exp.get(), 1, r.experiment_id);
      first_text(exp.get(), 0, r.experiment);
      if (by_act) {
        sq().bind_int64(act.get(), 1, r.experiment_id);
        sq().bind_int64(act.get(), 2, r.activity_id);
        first_text(act.get(), 0, r.activity);
      }
    }
    return {};
  }

  Result<std::vector<Record>> latest(std::size_t n) override {
    FM_TRY(auto s, prepare("SELECT " + column_list() + " FROM flows ORDER BY updated DESC LIMIT ?1",
                           "preparing the latest flows"));
    sq().bind_int64(s.get(), 1, static_cast<std::int64_t>(n));
    std::vector<Record> out;
    std::array<const char*, kColumnCount> cols;
    int rc;
    while ((rc = sq().step(s.get())) == SQLITE_ROW) {
      for (std::size_t i = 0; i < kColumnCount; ++i) {
        cols[i] = reinterpret_cast<const char*>(sq().column_text(s.get(), static_cast<int>(i)));
      }
      FM_TRY(auto r, record_from_text(cols));
      out.push_back(std::move(r));
    }
    if (rc != SQLITE_DONE) return error("reading flows", rc);
    return out;
  }

  Result<std::uint64_t> count() override {
    FM_TRY(auto s, prepare("SELECT COUNT(*) FROM flows", "counting flows"));
    const int rc = sq().step(s.get());
    if (rc != SQLITE_ROW) return error("counting flows", rc);
    return static_cast<std::uint64_t>(sq().column_int64(s.get(), 0));
  }

 private:
  sqlite3* db_;
  std::string path_;
  Stmt upsert_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_sqlite(std::string_view path_view, const StoreOptions& o) {
  const std::string path(path_view);
  std::error_code ec;
  if (!o.create && !std::filesystem::exists(path, ec)) {
    return store_fail(
        std::errc::no_such_file_or_directory,
        fmt::format("{}: no such store file (flowmarkd's store backend creates it)", path));
  }
  if (std::filesystem::is_directory(path, ec)) {
    return store_fail(std::errc::is_a_directory,
                      fmt::format("{}: is a directory, not a store file", path));
  }
  if (const auto& api = sq(); !api.error.empty()) {
    return store_fail(std::errc::function_not_supported, fmt::format("{}: {}", path, api.error));
  }
  int flags = SQLITE_OPEN_NOMUTEX;
  if (o.read_only) {
    flags |= SQLITE_OPEN_READONLY;
  } else {
    flags |= SQLITE_OPEN_READWRITE | (o.create ? SQLITE_OPEN_CREATE : 0);
  }
  sqlite3* db = nullptr;
  const int rc = sq().open_v2(path.c_str(), &db, flags, nullptr);
  if (rc != SQLITE_OK) {
    auto e =
        store_fail(errc_of(rc), fmt::format("{}: cannot open the store: {}", path,
                                            db != nullptr ? sq().errmsg(db) : sq().errstr(rc)));
    sq().close_v2(db);
    return e;
  }
  auto store = std::make_unique<SqliteStore>(db, path);
  FM_TRY_VOID(store->init(o));
  return store;
}

}  // namespace flowmark::collector::detail
