// Store in PostgreSQL (libpq): a database several collectors share. Upserts go as multi-row
// INSERT ... ON CONFLICT DO UPDATE statements (prepared, up to kRowsPerStatement rows each) in
// one transaction per write(); a broken connection is reopened at the next call.
#include <libpq-fe.h>

#include <charconv>
#include <cstring>
#include <unordered_map>

#include <fmt/format.h>

#include "collector/store_impl.hpp"

namespace flowmark::collector::detail {
namespace {

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
  void operator()(PGresult* r) const noexcept { PQclear(r); }
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
    conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (conn_ == nullptr) return store_fail(std::errc::not_enough_memory, "libpq: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
      auto e =
          store_fail(std::errc::connection_refused,
                     fmt::format("{}: cannot connect: {}", shown_, trimmed(PQerrorMessage(conn_))));
      disconnect();
      return e;
    }
    // Notices ("relation already exists, skipping") are not for the user's terminal.
    PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
    if (auto r = check_schema(); !r) {
      disconnect();
      return r;
    }
    return {};
  }

  void disconnect() noexcept {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = nullptr;
    prepared_ = false;
  }

  Result<void> ensure_connected() {
    if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK) return {};
    return connect();
  }

  std::unexpected<Error> error(std::string_view what, const PGresult* res) {
    std::errc code = std::errc::state_not_recoverable;
    const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    const std::string_view st = state != nullptr ? state : "";
    if (PQstatus(conn_) != CONNECTION_OK || st.starts_with("08") || st.starts_with("57P")) {
      code = std::errc::connection_reset;
    } else if (st == "53100") {
      code = std::errc::no_space_on_device;
    } else if (st == "25006" || st == "42501") {
      code = std::errc::permission_denied;
    } else if (st.starts_with("40") || st == "55P03") {
      code = std::errc::device_or_resource_busy;
    } else if (st == "42P01" || st == "42703") {
      code = std::errc::wrong_protocol_type;
    } else if (st.starts_with("53")) {
      code = std::errc::no_space_on_device;
    }
    std::string msg = res != nullptr ? trimmed(PQresultErrorMessage(res)) : "";
    if (msg.empty()) msg = trimmed(PQerrorMessage(conn_));
    auto e = store_fail(code, fmt::format("{}: {}: {}", shown_, what, msg));
    if (code == std::errc::connection_reset) disconnect();
    return e;
  }

  Result<PgResult> exec(const std::string& sql, std::string_view what) {
    PgResult r(PQexec(conn_, sql.c_str()));
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error(what, r.get());
    return r;
  }

  Result<PgResult> exec_params(const std::string& sql, std::span<const char* const> params,
                               std::string_view what) {
    PgResult r(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()), nullptr,
                            params.data(), nullptr, nullptr, 0));
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return error(what, r.get());
    return r;
  }

  Result<void> check_schema() {
    PgResult r(PQexec(conn_, "SELECT value FROM flowmark_meta WHERE key = 'schema_version'"));
    if (PQresultStatus(r.get()) == PGRES_TUPLES_OK && PQntuples(r.get()) == 1) {
      int version = 0;
      const char* v = PQgetvalue(r.get(), 0, 0);
      std::from_chars(v, v + std::strlen(v), version);
      if (version > kStoreSchemaVersion) {
        return store_fail(std::errc::wrong_protocol_type,
                          fmt::format("{}: schema version {} is newer than this flowmark's ({}): "
                                      "upgrade flowmark",
                                      shown_, version, kStoreSchemaVersion));
      }
      return {};
    }
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    const bool missing = PQresultStatus(r.get()) == PGRES_TUPLES_OK ||
                         (state != nullptr && std::string_view(state) == "42P01");
    if (!missing) return error("reading the schema version", r.get());
    if (!options_.create) {
      return store_fail(std::errc::wrong_protocol_type,
                        fmt::format("{}: not a flowmark store (no flowmark_meta table)", shown_));
    }
    FM_TRY(auto b, exec("BEGIN", "creating the schema"));
    for (auto sql : schema_statements()) {
      if (auto x = exec(std::string(sql), "creating the schema"); !x) {
        (void)exec("ROLLBACK", "rollback");
        return std::unexpected(x.error());
      }
    }
    if (auto x = exec(fmt::format("INSERT INTO flowmark_meta (key, value) VALUES "
                                  "('schema_version', '{}') ON CONFLICT (key) DO NOTHING",
                                  kStoreSchemaVersion),
                      "creating the schema");
        !x) {
      (void)exec("ROLLBACK", "rollback");
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
      PgResult p(PQprepare(conn_, "flowmark_upsert", upsert_sql('$', kRowsPerStatement).c_str(), 0,
                           nullptr));
      if (PQresultStatus(p.get()) != PGRES_COMMAND_OK) {
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
        r.reset(PQexecPrepared(conn_, "flowmark_upsert", static_cast<int>(n * kColumnCount),
                               params.data(), nullptr, nullptr, 0));
      } else {
        r.reset(PQexecParams(conn_, upsert_sql('$', n).c_str(), static_cast<int>(n * kColumnCount),
                             nullptr, params.data(), nullptr, nullptr, 0));
      }
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
        auto e = error("writing flows", r.get());
        if (conn_ != nullptr) (void)exec("ROLLBACK", "rollback");
        return e;
      }
    }
    if (auto c = exec("COMMIT", "committing flows"); !c) {
      if (conn_ != nullptr) (void)exec("ROLLBACK", "rollback");
      return std::unexpected(c.error());
    }
    return {};
  }

  Result<std::uint64_t> delete_before(Micros t) override {
    FM_TRY_VOID(ensure_connected());
    const std::string ts = std::to_string(t);
    const char* p[] = {ts.c_str()};
    FM_TRY(auto r, exec_params("DELETE FROM flows WHERE COALESCE(end_time, updated) < $1", p,
                               "deleting old flows"));
    std::uint64_t n = 0;
    const char* s = PQcmdTuples(r.get());
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
    const int n = PQntuples(r.get());
    auto text = [&](int row, int col) -> const char* {
      return PQgetisnull(r.get(), row, col) ? nullptr : PQgetvalue(r.get(), row, col);
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
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      for (std::size_t c = 0; c < kColumnCount; ++c) {
        const int col = static_cast<int>(c);
        cols[c] = PQgetisnull(r.get(), i, col) ? nullptr : PQgetvalue(r.get(), i, col);
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
    const char* s = PQgetvalue(r.get(), 0, 0);
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
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(std::string(url).c_str(), &err);
  if (opts == nullptr) {
    std::string why = trimmed(err != nullptr ? err : "out of memory");
    PQfreemem(err);
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: not a valid PostgreSQL URL: {}", redact_store_target(url), why));
  }
  PQconninfoFree(opts);
  auto store = std::make_unique<PostgresStore>(std::string(url), o);
  FM_TRY_VOID(store->connect());
  return store;
}

}  // namespace flowmark::collector::detail
