#include "daemon/backends/records/records_backend.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "flowmark/core/fd.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon {
namespace {

class RecordsBackend final : public Backend {
 public:
  RecordsBackend(std::string name, std::string path, bool flush_each, ServiceContext& ctx)
      : name_(std::move(name)),
        path_(std::move(path)),
        flush_each_(flush_each),
        encoder_({.hostname = ctx.hostname, .syslog_header = false}) {
    written_ = &ctx.counters.counter("flowmark_records_written_total", {{"backend", name_}},
                                     "Event lines written by a records backend");
    failed_ = &ctx.counters.counter("flowmark_records_failed_total", {{"backend", name_}},
                                    "Event lines a records backend could not write");
  }

  Result<void> start() override {
    FM_TRY_VOID(open());
    spdlog::info("backend {}: event records to {}", name_, path_);
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    auto json = encoder_.encode(e, now_micros());
    if (!json) {
      failed_->fetch_add(1, std::memory_order_relaxed);
      spdlog::warn("backend {}: cannot encode event: {}", name_, json.error().message());
      return;
    }
    buf_.append(*json);
    buf_.push_back('\n');
    ++pending_;
    if (flush_each_ || buf_.size() > (1 << 16)) flush();
  }

  std::chrono::milliseconds tick_interval() const noexcept override {
    return std::chrono::milliseconds(200);
  }
  void on_tick() noexcept override { flush(); }

  void reopen() noexcept override {
    flush();
    if (path_ == "-") return;
    if (auto r = open(); !r) spdlog::error("backend {}: {}", name_, r.error().message());
  }

  void stop() noexcept override {
    flush();
    fd_.reset();
  }

 private:
  Result<void> open() {
    if (path_ == "-") {
      fd_ = UniqueFd(::dup(STDOUT_FILENO));
      return {};
    }
    std::error_code ec;
    auto parent = std::filesystem::path(path_).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) return fail_errno("cannot open the records file " + path_);
    fd_ = UniqueFd(fd);
    return {};
  }

  void flush() noexcept {
    std::size_t off = 0;
    while (off < buf_.size() && fd_) {
      ssize_t n = ::write(fd_.get(), buf_.data() + off, buf_.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        failed_->fetch_add(pending_, std::memory_order_relaxed);
        spdlog::warn("backend {}: write {}: {}", name_, path_, std::strerror(errno));
        buf_.clear();
        pending_ = 0;
        return;
      }
      off += static_cast<std::size_t>(n);
    }
    written_->fetch_add(pending_, std::memory_order_relaxed);
    buf_.clear();
    pending_ = 0;
  }

  std::string name_;
  std::string path_;
  bool flush_each_;
  scitags::FireflyEncoder encoder_;
  UniqueFd fd_;
  std::string buf_;
  std::uint64_t pending_ = 0;
  std::atomic<std::uint64_t>*written_, *failed_;
};

}  // namespace

Result<void> register_records_backend(BackendFactories& factories) {
  return factories.add("records", "one JSON line per event appended to a file (reopened on SIGHUP)",
                       [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
                         FM_TRY(auto path, s.string("path", "/var/log/flowmark/events.jsonl"));
                         FM_TRY(auto flush, s.choice("flush", "batch", {"batch", "event"}));
                         return std::make_unique<RecordsBackend>(s.name(), std::move(path),
                                                                 flush == "event", ctx);
                       });
}

}  // namespace flowmark::daemon
