#include "daemon/backends/store/store_backend.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "flowmark/collector/record.hpp"
#include "flowmark/collector/store.hpp"
#include "flowmark/core/log_limit.hpp"

namespace flowmark::daemon {
namespace {

using collector::Record;
using Clock = std::chrono::steady_clock;

struct StoreSettings {
  std::string target;  // a path or a postgresql:// URL
  std::size_t batch = 5000;
  std::chrono::milliseconds flush_interval{1000};
  std::size_t buffer = 200'000;
  std::int64_t retention_days = 0;
  std::chrono::milliseconds retry_max{30'000};
};

// A flow's identity (protocol, addresses, ports, start time), binary, for the buffer's index.
struct FlowId {
  std::array<std::uint8_t, 16> src{}, dst{};
  Micros start = 0;
  std::uint16_t sport = 0, dport = 0;
  std::uint8_t protocol = 0, families = 0;
  friend bool operator==(const FlowId&, const FlowId&) = default;

  static FlowId of(const Record& r) noexcept {
    FlowId k;
    std::memcpy(k.src.data(), r.src.address.bytes(), r.src.address.size());
    std::memcpy(k.dst.data(), r.dst.address.bytes(), r.dst.address.size());
    k.start = r.start_time;
    k.sport = r.src.port;
    k.dport = r.dst.port;
    k.protocol = static_cast<std::uint8_t>(r.protocol);
    k.families = static_cast<std::uint8_t>((r.src.address.is_v6() ? 1 : 0) |
                                           (r.dst.address.is_v6() ? 2 : 0));
    return k;
  }
};

struct FlowIdHash {
  std::size_t operator()(const FlowId& k) const noexcept {
    std::uint64_t w[4];
    std::memcpy(w, k.src.data(), 16);
    std::memcpy(w + 2, k.dst.data(), 16);
    std::uint64_t h = static_cast<std::uint64_t>(k.start) ^
                      (static_cast<std::uint64_t>(k.sport) << 16 | k.dport) << 24 ^
                      static_cast<std::uint64_t>(k.protocol) << 56 ^
                      static_cast<std::uint64_t>(k.families) << 60;
    for (auto x : w) h = (h ^ x) * 0x9E3779B97F4A7C15ULL, h ^= h >> 31;
    return static_cast<std::size_t>(h);
  }
};

class StoreBackend final : public Backend {
 public:
  StoreBackend(std::string name, StoreSettings s, ServiceContext& ctx)
      : name_(std::move(name)),
        settings_(std::move(s)),
        shown_(collector::redact_store_target(settings_.target)),
        // A copy: ctx.registry belongs to the configuration, and a reload that keeps this
        // backend replaces (and frees) it.
        registry_(ctx.registry != nullptr ? std::make_unique<scitags::Registry>(*ctx.registry)
                                          : nullptr),
        sites_(ctx.sites),
        errors_log_(LogLimiter::Options{.budget = 2,
                                        .interval = std::chrono::seconds(10),
                                        .report_as = LogLimiter::Report::kSuffix,
                                        .report =
                                            [](std::uint64_t n) {
                                              return fmt::format(
                                                  " ({} more store error(s) not shown)", n);
                                            },
                                        .clock = {}}) {
    auto& c = ctx.counters;
    auto records = [&](const char* outcome) {
      return &c.counter("flowmark_store_records_total", {{"backend", name_}, {"outcome", outcome}},
                        "Flow records of a store backend, by outcome (written, coalesced into a "
                        "later record of the flow, or dropped with the reason)");
    };
    written_ = records("written");
    coalesced_ = records("coalesced");
    dropped_full_ = records("dropped_buffer_full");
    dropped_shutdown_ = records("dropped_shutdown");
    for (std::size_t i = 0; i < kReasons.size(); ++i) {
      errors_[i] = &c.counter("flowmark_store_errors_total",
                              {{"backend", name_}, {"reason", std::string(kReasons[i])}},
                              "Failed store operations (opening, writing, retention), by reason");
    }
    deleted_ = &c.counter("flowmark_store_deleted_total", {{"backend", name_}},
                          "Flows deleted from a store by its retention");
    buffered_ = &c.gauge("flowmark_store_buffered", {{"backend", name_}},
                         "Flow records a store backend holds, waiting to be written");
    pending_.reserve(std::min<std::size_t>(settings_.batch * 2, settings_.buffer));
  }

  Result<void> start() override {
    auto s = collector::Store::open(settings_.target,
                                    {.create = true, .read_only = false, .connect_timeout_s = 2});
    if (!s) {
      // A malformed URL will not get better: refuse to start.
      if (s.error().code() == Errc::kInvalidArgument) return std::unexpected(s.error());
      count_error(s.error());
      spdlog::warn(
          "backend {}: {}; records wait in the buffer (up to {}) and the store is "
          "retried",
          name_, s.error().message(), settings_.buffer);
      schedule_retry();
    } else {
      store_ = std::move(*s);
      spdlog::info("backend {}: flow records to {} ({})", name_, shown_, store_->kind());
    }
    if (settings_.retention_days > 0) next_retention_ = Clock::now();
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    try {
      auto sites = sites_ ? sites_->get() : nullptr;
      add(collector::make_record(e, registry_.get(), sites.get()));
    } catch (const std::exception& ex) {  // allocation failure: count it, keep going
      dropped_full_->fetch_add(1, std::memory_order_relaxed);
      errors_log_.log(spdlog::level::err, "backend {}: cannot keep a record: {}", name_, ex.what());
      return;
    }
    // A full batch is written at once; so is a full buffer (smaller than a batch), rather
    // than dropping while the store is well.
    if (pending_.size() >= std::min(settings_.batch, settings_.buffer) &&
        Clock::now() >= retry_at_) {
      flush();
    }
  }

  std::chrono::milliseconds tick_interval() const noexcept override {
    return settings_.flush_interval;
  }

  void on_tick() noexcept override {
    const auto now = Clock::now();
    if (!pending_.empty() && now >= retry_at_) flush();
    if (next_retention_ && now >= *next_retention_ && now >= retry_at_) retain();
  }

  void stop() noexcept override {
    // One last attempt, whatever the back-off says; what stays is lost and counted.
    if (!pending_.empty()) flush();
    if (!pending_.empty()) {
      dropped_shutdown_->fetch_add(pending_.size(), std::memory_order_relaxed);
      spdlog::error(
          "backend {}: {} flow record(s) not written at exit: the store {} cannot "
          "take them "
          "(flowmark_store_records_total{{outcome=\"dropped_shutdown\"}})",
          name_, pending_.size(), shown_);
      pending_.clear();
      index_.clear();
      buffered_->store(0, std::memory_order_relaxed);
    }
    errors_log_.flush(spdlog::level::err);
    store_.reset();
  }

 private:
  static constexpr std::array<std::string_view, 6> kReasons = {
      "unavailable", "full", "unwritable", "busy", "schema", "other"};

  void add(Record r) {
    const auto id = FlowId::of(r);
    auto it = index_.find(id);
    if (it != index_.end()) {
      auto& held = pending_[it->second];
      // A later record replaces the held one, except that a late start or ongoing record does
      // not reopen a flow that ended (as the store's upsert).
      if (held.end_time == 0 || r.end_time != 0) held = std::move(r);
      coalesced_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (pending_.size() >= settings_.buffer) {
      dropped_full_->fetch_add(1, std::memory_order_relaxed);
      if (!warned_full_) {
        warned_full_ = true;
        spdlog::warn(
            "backend {}: the buffer is full ({} records): new flows are dropped until "
            "the store takes records again "
            "(flowmark_store_records_total{{outcome=\"dropped_buffer_full\"}})",
            name_, settings_.buffer);
      }
      return;
    }
    index_.emplace(id, pending_.size());
    pending_.push_back(std::move(r));
    buffered_->store(pending_.size(), std::memory_order_relaxed);
  }

  void count_error(const Error& e) {
    const auto reason = collector::store_error_reason(e);
    for (std::size_t i = 0; i < kReasons.size(); ++i) {
      if (kReasons[i] == reason) errors_[i]->fetch_add(1, std::memory_order_relaxed);
    }
  }

  void schedule_retry() {
    retry_delay_ = retry_delay_.count() == 0 ? std::chrono::milliseconds(100)
                                             : std::min(settings_.retry_max, retry_delay_ * 2);
    retry_at_ = Clock::now() + retry_delay_;
    failing_ = true;
  }

  void failed(const Error& e, std::string_view what) {
    count_error(e);
    schedule_retry();
    errors_log_.log(spdlog::level::err, [&] {
      return fmt::format("backend {}: {}: {}; {} record(s) wait, next attempt in {} ms", name_,
                         what, e.message(), pending_.size(), retry_delay_.count());
    });
  }

  bool ensure_store() noexcept {
    if (store_) return true;
    auto s = collector::Store::open(settings_.target,
                                    {.create = true, .read_only = false, .connect_timeout_s = 2});
    if (!s) {
      failed(s.error(), "opening the store");
      return false;
    }
    store_ = std::move(*s);
    return true;
  }

  void flush() noexcept {
    try {
      if (!ensure_store()) return;
      std::size_t done = 0;
      while (done < pending_.size()) {
        const std::size_t n = std::min(settings_.batch, pending_.size() - done);
        auto r = store_->write(std::span<const Record>(pending_).subspan(done, n));
        if (!r) {
          // A broken connection or file: reopen at the next attempt.
          const auto reason = collector::store_error_reason(r.error());
          if (reason == "unavailable" || reason == "unwritable" || reason == "schema") {
            store_.reset();
          }
          pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(done));
          reindex();
          failed(r.error(), "writing flow records");
          return;
        }
        written_->fetch_add(n, std::memory_order_relaxed);
        done += n;
      }
      pending_.clear();
      index_.clear();
      buffered_->store(0, std::memory_order_relaxed);
      if (failing_) {
        spdlog::info("backend {}: the store {} takes records again", name_, shown_);
        failing_ = false;
        warned_full_ = false;
      }
      retry_delay_ = {};
      retry_at_ = {};
    } catch (const std::exception& ex) {  // allocation failure in a database library
      errors_[kReasons.size() - 1]->fetch_add(1, std::memory_order_relaxed);
      errors_log_.log(spdlog::level::err, "backend {}: writing flow records: {}", name_, ex.what());
      schedule_retry();
    }
  }

  void reindex() {
    index_.clear();
    for (std::size_t i = 0; i < pending_.size(); ++i) index_.emplace(FlowId::of(pending_[i]), i);
    buffered_->store(pending_.size(), std::memory_order_relaxed);
  }

  void retain() noexcept {
    next_retention_ = Clock::now() + std::chrono::hours(1);
    if (!ensure_store()) return;
    const Micros cutoff = now_micros() - settings_.retention_days * collector::kMicrosPerDay;
    auto n = store_->delete_before(cutoff);
    if (!n) {
      failed(n.error(), "deleting old flows");
      return;
    }
    deleted_->fetch_add(*n, std::memory_order_relaxed);
    if (*n > 0) spdlog::info("backend {}: retention deleted {} flow(s)", name_, *n);
  }

  std::string name_;
  StoreSettings settings_;
  std::string shown_;
  std::unique_ptr<const scitags::Registry> registry_;
  std::shared_ptr<collector::SiteMapHandle> sites_;
  std::unique_ptr<collector::Store> store_;

  std::vector<Record> pending_;
  std::unordered_map<FlowId, std::size_t, FlowIdHash> index_;

  Clock::time_point retry_at_{};
  std::chrono::milliseconds retry_delay_{0};
  std::optional<Clock::time_point> next_retention_;
  bool failing_ = false;
  bool warned_full_ = false;
  LogLimiter errors_log_;

  std::atomic<std::uint64_t>*written_, *coalesced_, *dropped_full_, *dropped_shutdown_;
  std::array<std::atomic<std::uint64_t>*, kReasons.size()> errors_{};
  std::atomic<std::uint64_t>*deleted_, *buffered_;
};

}  // namespace

Result<void> register_store_backend(BackendFactories& factories) {
  return factories.add(
      "store", "flow records (joined, with names and sites) upserted into SQLite or PostgreSQL",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        StoreSettings st;
        FM_TRY(auto path, s.optional_string("path"));
        FM_TRY(auto url, s.optional_string("url"));
        if (path && url) return s.error("url", "give path (SQLite) or url (PostgreSQL), not both");
        if (url) {
          if (!url->starts_with("postgresql://") && !url->starts_with("postgres://")) {
            return s.error("url", fmt::format("'{}' is not a postgresql:// URL (for a SQLite file "
                                              "use path)",
                                              collector::redact_store_target(*url)));
          }
          st.target = *url;
        } else {
          st.target = path.value_or("/var/lib/flowmark/flows.db");
          if (st.target.empty() || st.target.find("://") != std::string::npos) {
            return s.error(
                "path", fmt::format("'{}' is not a file path (for PostgreSQL use url)", st.target));
          }
        }
        FM_TRY(auto batch, s.integer("batch", 5000, 1, 1'000'000));
        FM_TRY(auto interval, s.integer("flush_interval", 1000, 10, 600'000));
        FM_TRY(auto buffer, s.integer("buffer", 200'000, 1, 100'000'000));
        FM_TRY(auto retention, s.integer("retention", 0, 0, 36'500));
        FM_TRY(auto retry_max, s.integer("retry_max", 30'000, 100, 3'600'000));
        st.batch = static_cast<std::size_t>(batch);
        st.flush_interval = std::chrono::milliseconds(interval);
        st.buffer = static_cast<std::size_t>(buffer);
        st.retention_days = retention;
        st.retry_max = std::chrono::milliseconds(retry_max);
        return std::make_unique<StoreBackend>(s.name(), std::move(st), ctx);
      });
}

}  // namespace flowmark::daemon
