// Store in PostgreSQL (libpq): a database several collectors share. Upserts go as multi-row
// INSERT ... ON CONFLICT DO UPDATE statements (prepared, up to kRowsPerStatement rows each) in
// one transaction per write(); a broken connection is reopened at the next call.
//
// libpq is loaded with dlopen() when a PostgreSQL store is first opened, not linked: with its
// TLS, Kerberos and LDAP dependencies it would map some twenty shared libraries into every
// `flowmark` command and every flowmarkd, which a SQLite store never needs. Only the
// declarations of <libpq-fe.h> are used at build time.
#include <dlfcn.h>
#include <libpq-fe.h>

#include <charconv>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <fmt/format.h>

#include "collector/store_impl.hpp"
#include "flowmark/core/dynamic_library.hpp"

namespace flowmark::collector::detail {
namespace {

constexpr const char* kLibpq = "libpq.so.5";  // the soname of every libpq since 8.0

// The libpq functions the store uses, resolved from the library loaded at run time.
struct LibPq {
  void (*clear)(PGresult*) = nullptr;
  char* (*cmd_tuples)(PGresult*) = nullptr;
  PGconn* (*connectdb_params)(const char* const*, const char* const*, int) = nullptr;
  void (*conninfo_free)(PQconninfoOption*) = nullptr;
  PQconninfoOption* (*conninfo_parse)(const char*, char**) = nullptr;
  char* (*error_message)(const PGconn*) = nullptr;
  PGresult* (*exec)(PGconn*, const char*) = nullptr;
  PGresult* (*exec_params)(PGconn*, const char*, int, const Oid*, const char* const*, const int*,
                           const int*, int) = nullptr;
  PGresult* (*exec_prepared)(PGconn*, const char*, int, const char* const*, const int*, const int*,
                             int) = nullptr;
  void (*finish)(PGconn*) = nullptr;
  void (*freemem)(void*) = nullptr;
  int (*getisnull)(const PGresult*, int, int) = nullptr;
  char* (*getvalue)(const PGresult*, int, int) = nullptr;
  int (*ntuples)(const PGresult*) = nullptr;
  PGresult* (*prepare)(PGconn*, const char*, const char*, int, const Oid*) = nullptr;
  char* (*result_error_field)(const PGresult*, int) = nullptr;
  char* (*result_error_message)(const PGresult*) = nullptr;
  ExecStatusType (*result_status)(const PGresult*) = nullptr;
  PQnoticeProcessor (*set_notice_processor)(PGconn*, PQnoticeProcessor, void*) = nullptr;
  ConnStatusType (*status)(const PGconn*) = nullptr;
  std::string error;  // why it is unusable; empty when ready
};

// Loads libpq once per process (thread-safe); the library stays loaded.
const LibPq& pq() noexcept {
  static LibPq api;
  static std::once_flag once;
  std::call_once(once, [] {
    void* lib = open_library(
        kLibpq, "install libpq5 (apt-get install libpq5) to use a PostgreSQL store", api.error);
    if (lib == nullptr) return;
    const char* missing = nullptr;
    bool ok = true;
    ok = resolve_symbol(lib, "PQclear", api.clear, missing) && ok;
    ok = resolve_symbol(lib, "PQcmdTuples", api.cmd_tuples, missing) && ok;
    ok = resolve_symbol(lib, "PQconnectdbParams", api.connectdb_params, missing) && ok;
    ok = resolve_symbol(lib, "PQconninfoFree", api.conninfo_free, missing) && ok;
    ok = resolve_symbol(lib, "PQconninfoParse", api.conninfo_parse, missing) && ok;
    ok = resolve_symbol(lib, "PQerrorMessage", api.error_message, missing) && ok;
    ok = resolve_symbol(lib, "PQexec", api.exec, missing) && ok;
    ok = resolve_symbol(lib, "PQexecParams", api.exec_params, missing) && ok;
    ok = resolve_symbol(lib, "PQexecPrepared", api.exec_prepared, missing) && ok;
    ok = resolve_symbol(lib, "PQfinish", api.finish, missing) && ok;
    ok = resolve_symbol(lib, "PQfreemem", api.freemem, missing) && ok;
    ok = resolve_symbol(lib, "PQgetisnull", api.getisnull, missing) && ok;
    ok = resolve_symbol(lib, "PQgetvalue", api.getvalue, missing) && ok;
    ok = resolve_symbol(lib, "PQntuples", api.ntuples, missing) && ok;
    ok = resolve_symbol(lib, "PQprepare", api.prepare, missing) && ok;
    ok = resolve_symbol(lib, "PQresultErrorField", api.result_error_field, missing) && ok;
    ok = resolve_symbol(lib, "PQresultErrorMessage", api.result_error_message, missing) && ok;
    ok = resolve_symbol(lib, "PQresultStatus", api.result_status, missing) && ok;
    ok = resolve_symbol(lib, "PQsetNoticeProcessor", api.set_notice_processor, missing) && ok;
    ok = resolve_symbol(lib, "PQstatus", api.status, missing) && ok;
    if (!ok) api.error = fmt::format("{} has no symbol {}: reinstall libpq5", kLibpq, missing);
  });
  return api;
}

constexpr std::size_t kRowsPerStatement = 500;  // 10,500 parameters (the limit is 65,535)

// libpq's message on one line (it spreads hints over several).
std::string trimmed(const char* s) {
  std::string out;
  for (const char* p = s != nullptr ? s : ""; *p != '\0'; ++p) {
    if (*p == '\n' || *p == '\t') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += *p;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { pq().clear(r); }
};
using PgResult = std::unique_ptr<PGresult, ResultDeleter>;

class PostgresStore final : public Store {
 public:
  PostgresStore(std::string url, StoreOptions o)
      : url_(std::move(url)), shown_(redact_store_target(url_)), options_(o) {}
  ~PostgresStore() override { disconnect(); }

  std::string_view kind() const noexcept override { return "postgresql"; }

  Result<void> connect() {
    disconnect();
    const std::string timeout = std::to_string(options_.connect_timeout_s);
    // The URL comes last: what it says wins over these defaults.
    const char* keys[] = {"connect_timeout", "application_name", "dbname", nullptr};
    const char* values[] = {timeout.c_str(), "flowmark", url_.c_str(), nullptr};
    conn_ = pq().connectdb_params(keys, values, /*expand_dbname=*/1);
    if (conn_ == nullptr) return store_fail(std::errc::not_enough_memory, "libpq: out of memory");
    if (pq().status(conn_) != CONNECTION_OK) {
      auto e = store_fail(
          std::errc::connection_refused,
          fmt::format("{}: cannot connect: {}", shown_, trimmed(pq().error_message(conn_))));
      disconnect();
      return e;
    }
    // Notices ("relation already exists, skipping") are not for the user's terminal.
    pq().set_notice_processor(conn_, [](void*, const char*) {}, nullptr);
    if (auto r = check_schema(); !r) {
      disconnect();
      return r;
    }
    return {};
  }

  void disconnect() noexcept {
    if (conn_ != nullptr) pq().finish(conn_);
    conn_ = nullptr;
    prepared_ = false;
  }

  Result<void> ensure_connected() {
    if (conn_ != nullptr && pq().status(conn_) == CONNECTION_OK) return {};
    return connect();
  }

  std::unexpected<Error> error(std::string_view what, const PGresult* res) {
    std::errc code = std::errc::state_not_recoverable;
    const char* state = res != nullptr ? pq().result_error_field(res, PG_DIAG_SQLSTATE) : nullptr;
    const std::string_view st = state != nullptr ? state : "";
    if (pq().status(conn_) != CONNECTION_OK || st.starts_with("08") || st.starts_with("57P")) {
      code = std::errc::connection_reset;
    } else if (st == "25006" || st == "42501") {
      code = std::errc::permission_denied;
    } else if (st.starts_with("40") || st == "55P03") {
      code = std::errc::device_or_resource_busy;
    } else if (st == "42P01" || st == "42703") {
      code = std::errc::wrong_protocol_type;
    } else if (st.starts_with("53")) {  // insufficient resources: disk full (53100), memory
      code = std::errc::no_space_on_device;
    }
    std::string msg = res != nullptr ? trimmed(pq().result_error_message(res)) : "";
    if (msg.empty()) msg = trimmed(pq().error_message(conn_));
    auto e = store_fail(code, fmt::format("{}: {}: {}", shown_, what, msg));
    if (code == std::errc::connection_reset) disconnect();
    return e;
  }

  // After a failure: the error reported is the first one, not the rollback's.
  void rollback() noexcept {
    if (conn_ != nullptr) PgResult discard(pq().exec(conn_, "ROLLBACK"));
  }

  Result<PgResult> exec(const std::string& sql, std::string_view what) {
    PgResult r(pq().exec(conn_, sql.c_str()));
    const auto st = pq().result_status(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error(what, r.get());
    return r;
  }

  Result<PgResult> exec_params(const std::string& sql, std::span<const char* const> params,
                               std::string_view what) {
    PgResult r(pq().exec_params(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                                params.data(), nullptr, nullptr, 0));
    const auto st = pq().result_status(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error(what, r.get());
    return r;
  }

  Result<void> check_schema() {
    PgResult r(pq().exec(conn_, "SELECT value FROM flowmark_meta WHERE key = 'schema_version'"));
    if (pq().result_status(r.get()) == PGRES_TUPLES_OK && pq().ntuples(r.get()) == 1) {
      int version = 0;
      const char* v = pq().getvalue(r.get(), 0, 0);
      std::from_chars(v, v + std::strlen(v), version);
      if (version > kStoreSchemaVersion) {
        return store_fail(std::errc::wrong_protocol_type,
                          fmt::format("{}: schema version {} is newer than this flowmark's ({}): "
                                      "upgrade flowmark",
                                      shown_, version, kStoreSchemaVersion));
      }
      return {};
    }
    const char* state = pq().result_error_field(r.get(), PG_DIAG_SQLSTATE);
    const bool missing = pq().result_status(r.get()) == PGRES_TUPLES_OK ||
                         (state != nullptr && std::string_view(state) == "42P01");
    if (!missing) return error("reading the schema version", r.get());
    if (!options_.create) {
      return store_fail(std::errc::wrong_protocol_type,
                        fmt::format("{}: not a flowmark store (no flowmark_meta table)", shown_));
    }
    FM_TRY(auto b, exec("BEGIN", "creating the schema"));
    for (auto sql : schema_statements()) {
      if (auto x = exec(std::string(sql), "creating the schema"); !x) {
        rollback();
        return std::unexpected(x.error());
      }
    }
    if (auto x = exec(fmt::format("INSERT INTO flowmark_meta (key, value) VALUES "
                                  "('schema_version', '{}') ON CONFLICT (key) DO NOTHING",
                                  kStoreSchemaVersion),
                      "creating the schema");
        !x) {
      rollback();
      return std::unexpected(x.error());
    }
    FM_TRY(auto c, exec("COMMIT", "creating the schema"));
    return {};
  }

  Result<void> write(std::span<const Record> records) override {
    if (records.empty()) return {};
    FM_TRY_VOID(ensure_connected());
    // A statement may not update one row twice: the last record of an identity wins.
    std::vector<const Record*> rows;
    rows.reserve(records.size());
    {
      std::unordered_map<std::string, std::size_t> seen;
      for (const auto& r : records) {
        auto [it, fresh] = seen.try_emplace(identity_key(r), rows.size());
        if (fresh) {
          rows.push_back(&r);
        } else {
          rows[it->second] = &r;
        }
      }
    }
    if (!prepared_) {
      PgResult p(pq().prepare(conn_, "flowmark_upsert", upsert_sql('$', kRowsPerStatement).c_str(),
                              0, nullptr));
      if (pq().result_status(p.get()) != PGRES_COMMAND_OK) {
        return error("preparing the upsert", p.get());
      }
      prepared_ = true;
    }
    FM_TRY(auto b, exec("BEGIN", "beginning a transaction"));
    std::vector<std::string> text(kRowsPerStatement * kColumnCount);
    std::vector<const char*> params(kRowsPerStatement * kColumnCount);
    std::array<Value, kColumnCount> v;
    std::string src, dst;
    for (std::size_t at = 0; at < rows.size(); at += kRowsPerStatement) {
      const std::size_t n = std::min(kRowsPerStatement, rows.size() - at);
      for (std::size_t i = 0; i < n; ++i) {
        record_values(*rows[at + i], src, dst, v);
        for (std::size_t c = 0; c < kColumnCount; ++c) {
          const std::size_t k = i * kColumnCount + c;
          auto& t = text[k];
          switch (v[c].kind) {
            case Value::Kind::kNull: params[k] = nullptr; continue;
            case Value::Kind::kInt: t = std::to_string(v[c].i); break;
            case Value::Kind::kReal: t = fmt::format("{}", v[c].d); break;
            case Value::Kind::kText: t.assign(v[c].s); break;
          }
          params[k] = t.c_str();
        }
      }
      PgResult r;
      if (n == kRowsPerStatement) {
        r.reset(pq().exec_prepared(conn_, "flowmark_upsert", static_cast<int>(n * kColumnCount),
                                   params.data(), nullptr, nullptr, 0));
      } else {
        r.reset(pq().exec_params(conn_, upsert_sql('$', n).c_str(),
                                 static_cast<int>(n * kColumnCount), nullptr, params.data(),
                                 nullptr, nullptr, 0));
      }
      if (pq().result_status(r.get()) != PGRES_COMMAND_OK) {
        auto e = error("writing flows", r.get());
        rollback();
        return e;
      }
    }
    if (auto c = exec("COMMIT", "committing flows"); !c) {
      rollback();
      return std::unexpected(c.error());
    }
    return {};
  }

  Result<std::uint64_t> delete_before(Micros t) override {
    FM_TRY_VOID(ensure_connected());
    const std::string ts = std::to_string(t);
    const char* p[] = {ts.c_str()};
    FM_TRY(
        auto r,
        exec_params("DELETE FROM flows WHERE start_time < $1 AND COALESCE(end_time, updated) < $1",
                    p, "deleting old flows"));
    std::uint64_t n = 0;
    const char* s = pq().cmd_tuples(r.get());
    std::from_chars(s, s + std::strlen(s), n);
    return n;
  }

  Result<std::vector<ReportRow>> report(const ReportQuery& q) override {
    FM_TRY_VOID(ensure_connected());
    std::string cols;
    for (auto g : q.by) {
      switch (g) {
        case GroupBy::kExperiment: cols += "experiment_id, experiment, "; break;
        case GroupBy::kActivity: cols += "activity_id, activity, "; break;
        case GroupBy::kSrcSite: cols += "src_site, "; break;
        case GroupBy::kDstSite: cols += "dst_site, "; break;
        case GroupBy::kDay:
          cols += fmt::format("start_time - ((start_time % {0}) + {0}) % {0}, ", kMicrosPerDay);
          break;
      }
    }
    const std::string rated = "FILTER (WHERE state = 'complete' AND duration > 0)";
    std::string sql = fmt::format(
        "SELECT {0}count(*), sum(volume), count(*) {1}, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY throughput) {1}, "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY throughput) {1} "
        "FROM flows WHERE start_time >= $1 AND start_time < $2",
        cols, rated);
    if (!cols.empty()) {
      cols.resize(cols.size() - 2);
      sql += " GROUP BY " + cols;
    }
    const std::string from = std::to_string(q.from.value_or(INT64_MIN));
    const std::string to = std::to_string(q.to.value_or(INT64_MAX));
    const char* p[] = {from.c_str(), to.c_str()};
    FM_TRY(auto r, exec_params(sql, p, "reading flows"));
    std::vector<ReportRow> rows;
    const int n = pq().ntuples(r.get());
    auto text = [&](int row, int col) -> const char* {
      return pq().getisnull(r.get(), row, col) ? nullptr : pq().getvalue(r.get(), row, col);
    };
    auto number = [&](int row, int col, auto& out) {
      const char* s = text(row, col);
      if (s != nullptr) std::from_chars(s, s + std::strlen(s), out);
    };
    for (int i = 0; i < n; ++i) {
      ReportRow row;
      int c = 0;
      for (auto g : q.by) {
        switch (g) {
          case GroupBy::kExperiment:
            number(i, c++, row.experiment_id);
            if (const char* s = text(i, c++)) row.experiment = s;
            break;
          case GroupBy::kActivity:
            number(i, c++, row.activity_id);
            if (const char* s = text(i, c++)) row.activity = s;
            break;
          case GroupBy::kSrcSite:
            if (const char* s = text(i, c++)) row.src_site = s;
            break;
          case GroupBy::kDstSite:
            if (const char* s = text(i, c++)) row.dst_site = s;
            break;
          case GroupBy::kDay: number(i, c++, row.day); break;
        }
      }
      number(i, c++, row.flows);
      number(i, c++, row.bytes);
      number(i, c++, row.rated);
      number(i, c++, row.throughput_median);
      number(i, c++, row.throughput_p95);
      if (row.flows != 0) rows.push_back(std::move(row));
    }
    sort_rows(rows, q.by);
    return rows;
  }

  Result<std::vector<Record>> latest(std::size_t n) override {
    FM_TRY_VOID(ensure_connected());
    const std::string limit = std::to_string(n);
    const char* p[] = {limit.c_str()};
    FM_TRY(auto r,
           exec_params("SELECT " + column_list() + " FROM flows ORDER BY updated DESC LIMIT $1", p,
                       "reading flows"));
    std::vector<Record> out;
    std::array<const char*, kColumnCount> cols;
    for (int i = 0; i < pq().ntuples(r.get()); ++i) {
      for (std::size_t c = 0; c < kColumnCount; ++c) {
        const int col = static_cast<int>(c);
        cols[c] = pq().getisnull(r.get(), i, col) ? nullptr : pq().getvalue(r.get(), i, col);
      }
      FM_TRY(auto rec, record_from_text(cols));
      out.push_back(std::move(rec));
    }
    return out;
  }

  Result<std::uint64_t> count() override {
    FM_TRY_VOID(ensure_connected());
    FM_TRY(auto r, exec("SELECT count(*) FROM flows", "counting flows"));
    std::uint64_t n = 0;
    const char* s = pq().getvalue(r.get(), 0, 0);
    std::from_chars(s, s + std::strlen(s), n);
    return n;
  }

 private:
  std::string url_, shown_;
  StoreOptions options_;
  PGconn* conn_ = nullptr;
  bool prepared_ = false;
};

}  // namespace

Result<std::unique_ptr<Store>> open_postgres(std::string_view url, const StoreOptions& o) {
  // libpq checks the URL's syntax itself; catch it here so that a bad URL is a usage error,
  // not "cannot connect".
  if (!pq().error.empty()) return store_fail(std::errc::function_not_supported, pq().error);
  char* err = nullptr;
  PQconninfoOption* opts = pq().conninfo_parse(std::string(url).c_str(), &err);
  if (opts == nullptr) {
    std::string why = trimmed(err != nullptr ? err : "out of memory");
    pq().freemem(err);
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: not a valid PostgreSQL URL: {}", redact_store_target(url), why));
  }
  pq().conninfo_free(opts);
  auto store = std::make_unique<PostgresStore>(std::string(url), o);
  FM_TRY_VOID(store->connect());
  return store;
}

}  // namespace flowmark::collector::detail
