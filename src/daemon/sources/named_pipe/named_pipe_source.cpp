#include "daemon/sources/named_pipe/named_pipe_source.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <array>
#include <charconv>
#include <filesystem>

#include "daemon/sources/named_pipe/line_assembler.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/scitags/pipe_line.hpp"

namespace flowmark::daemon {
namespace {

struct PipeOptions {
  std::string path;
  mode_t mode = 0660;
  std::string group;
  std::size_t max_line = 4096;
};

class NamedPipeSource final : public Source {
 public:
  NamedPipeSource(std::string name, PipeOptions o, ServiceContext& ctx)
      : name_(std::move(name)),
        o_(std::move(o)),
        ctx_(ctx),
        reject_log_(10, std::chrono::seconds(1), LogLimiter::Report::kLine,
                    [this](std::uint64_t n) {
                      return fmt::format("source {}: {} more rejected line(s) not shown", name_, n);
                    }) {
    for (std::size_t i = 0; i < scitags::kPipeRejectKinds; ++i) {
      rejected_[i] = &counter(scitags::to_string(static_cast<scitags::PipeReject>(i)));
    }
    too_long_ = &counter("line_too_long");
    incomplete_ = &counter("incomplete_line");
    lines_ = &ctx_.counters.counter("flowmark_pipe_lines_total", {{"source", name_}},
                                    "Non-blank lines read from the named pipe");
    pauses_ = &ctx_.counters.counter(
        "flowmark_source_paused_total", {{"source", name_}},
        "Times a lossless source stopped reading because a backend's queue was full "
        "(back-pressure: its sender waits, nothing is dropped)");
  }
  ~NamedPipeSource() override { stop(); }

  Result<void> start(EventLoop& loop, FlowSink& sink) override {
    loop_ = &loop;
    sink_ = &sink;
    FM_TRY_VOID(make_fifo());
    FM_TRY_VOID(open_reader());
    created_ = true;
    spdlog::info("source {}: reading flow lines from {} (mode {:04o}{})", name_, o_.path, o_.mode,
                 o_.group.empty() ? "" : ", group " + o_.group);
    return {};
  }

  void stop() noexcept override {
    if (wait_id_) {
      sink_->cancel_room_wait(wait_id_);
      wait_id_ = 0;
    }
    paused_ = false;
    if (loop_ && fd_ && watched_) loop_->remove_fd(fd_.get());
    watched_ = false;
    fd_.reset();
    if (created_) {
      ::unlink(o_.path.c_str());
      created_ = false;
    }
    loop_ = nullptr;
  }

 private:
  std::atomic<std::uint64_t>& counter(std::string_view reason) {
    return ctx_.counters.counter("flowmark_source_rejected_total",
                                 {{"source", name_}, {"reason", std::string(reason)}},
                                 "Input rejected by a source, by reason");
  }

  Result<void> make_fifo() {
    std::filesystem::path p(o_.path);
    std::error_code ec;
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path(), ec);
    struct stat st {};
    if (::lstat(o_.path.c_str(), &st) == 0) {
      if (!S_ISFIFO(st.st_mode)) {
        return fail(Errc::kInvalidArgument,
                    o_.path + " exists and is not a named pipe: remove it or choose another path");
      }
    } else if (::mkfifo(o_.path.c_str(), 0600) != 0) {
      return fail_errno("cannot create the named pipe " + o_.path);
    }
    if (!o_.group.empty()) {
      std::array<char, 4096> buf{};
      group g{};
      group* found = nullptr;
      if (::getgrnam_r(o_.group.c_str(), &g, buf.data(), buf.size(), &found) != 0 || !found) {
        return fail(Errc::kNotFound, "group '" + o_.group + "' for " + o_.path +
                                         " does not exist: create it or change [source." + name_ +
                                         "] group");
      }
      if (::chown(o_.path.c_str(), static_cast<uid_t>(-1), found->gr_gid) != 0) {
        return fail_errno("cannot give " + o_.path + " to group " + o_.group);
      }
    }
    // chmod after mkfifo: the umask must not decide who may write flow lines.
    if (::chmod(o_.path.c_str(), o_.mode) != 0) {
      return fail_errno("cannot set the mode of " + o_.path);
    }
    return {};
  }

  Result<void> open_reader() {
    int fd = ::open(o_.path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return fail_errno("cannot open the named pipe " + o_.path);
    UniqueFd next(fd);
    FM_TRY_VOID(watch(next.get()));
    // The new reader is in place before the old one goes: writers always find a reader.
    if (fd_ && watched_) loop_->remove_fd(fd_.get());
    fd_ = std::move(next);
    watched_ = true;
    return {};
  }

  Result<void> watch(int fd) {
    return loop_->add_fd(fd, EPOLLIN, [this](std::uint32_t ev) { on_ready(ev); });
  }

  // Back-pressure: a backend's queue is full. The FIFO is no longer read (nor watched) until
  // there is room: the writer fills the kernel's pipe buffer and then waits in write().
  void pause() {
    if (watched_) loop_->remove_fd(fd_.get());
    watched_ = false;
    paused_ = true;
    pauses_->fetch_add(1, std::memory_order_relaxed);
    wait_id_ = sink_->when_room([this] { resume(); });
  }

  void resume() {
    wait_id_ = 0;
    if (!paused_ || !loop_ || !fd_) return;
    paused_ = false;
    if (auto r = watch(fd_.get()); !r) {
      spdlog::error("source {}: cannot watch {} again: {}", name_, o_.path, r.error().message());
      return;
    }
    watched_ = true;
  }

  void on_ready(std::uint32_t events) {
    // Each read is 16 KiB at most, so the queues exceed their capacity by at most one read's
    // lines (two events each, when a start ends an older flow of its tuple): ~350 lines of the
    // bench, 80–160 kB of a queue (a 64 KiB read's overshoot was four times that, at 232 bytes
    // an event, in both the queue and the batch it becomes). A read costs ~1 µs, its lines ~1 ms.
    std::array<char, 16384> buf;
    // At most kMaxReads reads per wake-up: a writer faster than the parser must not keep the
    // loop here forever (signals, timers and the other sources wait for it). The FIFO stays
    // readable, so the loop (level-triggered) comes back at once.
    constexpr int kMaxReads = 16;
    for (int reads = 0;; ++reads) {
      if (reads == kMaxReads) return;
      if (!sink_->has_room()) {
        pause();
        return;
      }
      ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
      if (n > 0) {
        consume(std::string_view(buf.data(), static_cast<std::size_t>(n)));
        continue;
      }
      if (n == 0) break;  // no writer left
      if (errno == EINTR) continue;
      if (errno != EAGAIN) spdlog::warn("source {}: read {}: {}", name_, o_.path, strerror(errno));
      if (!(events & EPOLLHUP)) return;
      break;
    }
    // Every writer has closed: a partial line can never be completed.
    if (auto rest = lines_in_.finish()) reject_incomplete(*rest);
    if (auto r = open_reader(); !r) {
      spdlog::error("source {}: {}", name_, r.error().message());
    }
  }

  void reject_incomplete(const std::string& partial) {
    incomplete_->fetch_add(1, std::memory_order_relaxed);
    reject_log_.log(spdlog::level::warn,
                    "source {}: rejected (incomplete_line): the writer closed the pipe in the "
                    "middle of a line: '{}'",
                    name_, std::string_view(partial).substr(0, 80));
  }

  // The lines of one read arrived together: one time for all (FlowSink::begin_batch).
  void consume(std::string_view data) {
    struct Batch {
      FlowSink& sink;
      explicit Batch(FlowSink& s) : sink(s) { sink.begin_batch(); }
      ~Batch() { sink.end_batch(); }
    } batch(*sink_);
    lines_in_.feed(
        data, [this](std::string_view text) { line(text); }, [this] { too_long(); });
  }

  void too_long() {
    too_long_->fetch_add(1, std::memory_order_relaxed);
    reject_log_.log(spdlog::level::warn,
                    "source {}: rejected (line_too_long): a line longer than {} bytes", name_,
                    o_.max_line);
  }

  void line(std::string_view text) {
    ++line_no_;
    if (scitags::is_blank_line(text)) return;
    lines_->store(lines_->load(std::memory_order_relaxed) + 1,
                  std::memory_order_relaxed);  // 1 writer
    auto e = scitags::parse_pipe_line(text, *ctx_.registry);
    if (!e) {
      rejected_[static_cast<std::size_t>(e.error().reason)]->fetch_add(1,
                                                                       std::memory_order_relaxed);
      reject_log_.log(spdlog::level::warn, "source {}: rejected ({}): line {}: {}", name_,
                      scitags::to_string(e.error().reason), line_no_, e.error().message);
      return;
    }
    sink_->push_lossless(*e);
  }

  std::string name_;
  PipeOptions o_;
  ServiceContext& ctx_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  UniqueFd fd_;
  bool watched_ = false;  // fd_ is in the loop
  bool paused_ = false;   // back-pressure: waiting for room
  std::uint64_t wait_id_ = 0;
  bool created_ = false;
  LineAssembler lines_in_{o_.max_line};
  std::uint64_t line_no_ = 0;
  std::array<std::atomic<std::uint64_t>*, scitags::kPipeRejectKinds> rejected_{};
  std::atomic<std::uint64_t>*too_long_, *incomplete_, *lines_, *pauses_;
  LogLimiter reject_log_;  // at most 10 rejected lines a second on stderr
};

Result<mode_t> parse_mode(Section& s) {
  FM_TRY(auto text, s.scalar("mode"));
  if (!text) return mode_t{0660};
  unsigned v = 0;
  auto [p, ec] = std::from_chars(text->data(), text->data() + text->size(), v, 8);
  if (text->empty() || ec != std::errc{} || p != text->data() + text->size() || v > 0777) {
    return s.error("mode", "'" + *text + "' is not an octal mode like \"0660\"");
  }
  if (v & 0002) {
    spdlog::warn(
        "{} mode {:04o}: the pipe is world-writable: anyone on this host can mark "
        "flows",
        s.where(), v);
  }
  return static_cast<mode_t>(v);
}

}  // namespace

Result<void> register_named_pipe_source(SourceFactories& factories) {
  return factories.add("named-pipe", "flow lines written to a FIFO (flowd's np_api)",
                       [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Source>> {
                         PipeOptions o;
                         FM_TRY(o.path, s.string("path", "/run/flowmark/flowmark.pipe"));
                         FM_TRY(o.mode, parse_mode(s));
                         FM_TRY(o.group, s.string("group", ""));
                         FM_TRY(auto max_line, s.integer("max_line", 4096, 64, 1 << 20));
                         o.max_line = static_cast<std::size_t>(max_line);
                         return std::make_unique<NamedPipeSource>(s.name(), std::move(o), ctx);
                       });
}

}  // namespace flowmark::daemon
