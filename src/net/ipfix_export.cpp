#include "flowmark/net/ipfix_export.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "flowmark/core/fd.hpp"
#include "flowmark/net/resolve.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::net {
namespace {

constexpr std::size_t kHeaderSize = 16;  // RFC 7011 §3.1

std::uint32_t get32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

// The templates-only message of a new session: the sequence number of the message that
// follows it (RFC 7011 §3.1: data records sent before it) and the export time of now.
void stamp(std::vector<std::uint8_t>& m, std::uint32_t sequence) {
  if (m.size() < kHeaderSize) return;
  put32(m.data() + 4, static_cast<std::uint32_t>(std::time(nullptr)));
  put32(m.data() + 8, sequence);
}

struct Counts {
  std::atomic<std::uint64_t> messages{0}, records{0}, bytes{0}, connections{0}, reconnects{0},
      messages_dropped{0}, records_dropped{0};
  void sent(std::size_t size, std::uint32_t records_in) {
    messages.fetch_add(1, std::memory_order_relaxed);
    records.fetch_add(records_in, std::memory_order_relaxed);
    bytes.fetch_add(size, std::memory_order_relaxed);
  }
  void dropped(std::uint32_t records_in) {
    messages_dropped.fetch_add(1, std::memory_order_relaxed);
    records_dropped.fetch_add(records_in, std::memory_order_relaxed);
  }
  IpfixExportStats snapshot() const {
    IpfixExportStats s;
    s.messages = messages.load(std::memory_order_relaxed);
    s.records = records.load(std::memory_order_relaxed);
    s.bytes = bytes.load(std::memory_order_relaxed);
    s.connections = connections.load(std::memory_order_relaxed);
    s.reconnects = reconnects.load(std::memory_order_relaxed);
    s.messages_dropped = messages_dropped.load(std::memory_order_relaxed);
    s.records_dropped = records_dropped.load(std::memory_order_relaxed);
    return s;
  }
};

// ---- file and standard output ------------------------------------------------------------

class FileExporter final : public IpfixExporter {
 public:
  FileExporter(Kind kind, std::string target, IpfixExportOptions o)
      : IpfixExporter(kind, std::move(target)), o_(std::move(o)) {}
  ~FileExporter() override {
    if (owned_) std::fclose(file_);
  }

  Result<void> open() {
    if (kind() == Kind::kStdout) {
      file_ = o_.standard_output != nullptr ? o_.standard_output : stdout;
      return {};
    }
    file_ = std::fopen(target().c_str(), o_.append ? "ab" : "wb");
    if (file_ == nullptr) return fail_errno("cannot open for writing");
    owned_ = true;
    return {};
  }

  void set_templates(std::vector<std::uint8_t> message) override {
    templates_ = std::move(message);
  }

  void send(std::span<const std::uint8_t> m, std::uint32_t records) noexcept override {
    if (m.size() >= kHeaderSize) next_sequence_ = get32(m.data() + 8) + records;
    write(m, records);
  }

  Result<void> reopen() override {
    if (!owned_) return {};
    if (std::fclose(file_) != 0) note_failure(errno);
    owned_ = false;
    file_ = std::fopen(target().c_str(), "ab");
    if (file_ == nullptr) return fail_errno(fmt::format("cannot open {} for writing", target()));
    owned_ = true;
    if (!templates_.empty()) {
      stamp(templates_, next_sequence_);
      write(templates_, 0);
    }
    return {};
  }

  End finish(std::chrono::milliseconds) override {
    if (file_ != nullptr && std::fflush(file_) != 0) note_failure(errno);
    if (owned_ && std::fclose(file_) != 0) note_failure(errno);
    owned_ = false;
    file_ = nullptr;
    End e;
    e.stats = stats();
    if (failed_errno_ != 0)
      e.error = Error(std::error_code(failed_errno_, std::generic_category()),
                      fmt::format("write failed: {}", std::strerror(failed_errno_)));
    return e;
  }

  IpfixExportStats stats() const override { return counts_.snapshot(); }

 private:
  void write(std::span<const std::uint8_t> m, std::uint32_t records) noexcept {
    // Each message is out of stdio's buffer once written: a reader of a file being written
    // (a service's export) sees whole messages.
    if (file_ != nullptr && std::fwrite(m.data(), 1, m.size(), file_) == m.size() &&
        std::fflush(file_) == 0) {
      counts_.sent(m.size(), records);
      return;
    }
    note_failure(errno);
    counts_.dropped(records);
  }
  void note_failure(int err) {
    if (failed_errno_ == 0) failed_errno_ = err != 0 ? err : EIO;
  }

  IpfixExportOptions o_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
  int failed_errno_ = 0;
  std::vector<std::uint8_t> templates_;
  std::uint32_t next_sequence_ = 0;
  Counts counts_;
};

// ---- UDP ---------------------------------------------------------------------------------

class UdpExporter final : public IpfixExporter {
 public:
  UdpExporter(std::string target, UniqueFd fd)
      : IpfixExporter(Kind::kUdp, std::move(target)), fd_(std::move(fd)) {}

  void set_templates(std::vector<std::uint8_t>) override {}  // refreshed by the writer

  void send(std::span<const std::uint8_t> m, std::uint32_t records) noexcept override {
    // A collector that is not listening (ICMP port unreachable) or a full socket buffer
    // loses this message only: counted.
    ssize_t n;
    do {
      n = ::send(fd_.get(), m.data(), m.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(m.size())) {
      counts_.sent(m.size(), records);
    } else {
      counts_.dropped(records);
    }
  }

  End finish(std::chrono::milliseconds) override {
    fd_.reset();
    End e;
    e.stats = stats();
    return e;
  }

  IpfixExportStats stats() const override { return counts_.snapshot(); }

 private:
  UniqueFd fd_;
  Counts counts_;
};

// ---- TCP ---------------------------------------------------------------------------------

class TcpExporter final : public IpfixExporter {
 public:
  TcpExporter(std::string target, Endpoint to, IpfixExportOptions o)
      : IpfixExporter(Kind::kTcp, std::move(target)), to_(to), o_(std::move(o)) {}
  ~TcpExporter() override {
    if (thread_.joinable()) (void)finish(std::chrono::milliseconds(0));
  }

  Result<void> start() {
    const int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return fail_errno("eventfd");
    wake_ = UniqueFd(efd);
    return {};
  }

  void set_templates(std::vector<std::uint8_t> message) override {
    {
      std::lock_guard lock(mu_);
      templates_ = std::move(message);
    }
    start_thread();
  }

  void send(std::span<const std::uint8_t> m, std::uint32_t records) noexcept override {
    if (m.size() < kHeaderSize) return;
    start_thread();
    std::unique_lock lock(mu_);
    next_sequence_ = get32(m.data() + 8) + records;
    // One message is always held, however small the bound.
    auto fits = [&] {
      return bytes_buffered_ == 0 || bytes_buffered_ + m.size() <= o_.buffer_bytes;
    };
    if (!fits() && o_.wait_for_room && connected_)
      room_.wait(lock, [&] { return fits() || !connected_ || stopping_; });
    if (!fits() || stopping_) {
      counts_.dropped(records);
      return;
    }
    try {
      queue_.push_back({std::vector<std::uint8_t>(m.begin(), m.end()), records});
    } catch (...) {
      counts_.dropped(records);
      return;
    }
    bytes_buffered_ += m.size();
    records_buffered_ += records;
    lock.unlock();
    wake();
  }

  End finish(std::chrono::milliseconds timeout) override {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
      deadline_ = std::chrono::steady_clock::now() + timeout;
    }
    room_.notify_all();
    wake();
    if (thread_.joinable()) thread_.join();
    End e;
    e.stats = stats();
    e.not_delivered = e.stats.records_buffered;
    return e;
  }

  IpfixExportStats stats() const override {
    IpfixExportStats s = counts_.snapshot();
    std::lock_guard lock(mu_);
    s.records_buffered = records_buffered_;
    s.bytes_buffered = bytes_buffered_;
    return s;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Message {
    std::vector<std::uint8_t> bytes;
    std::uint32_t records;
  };
  enum class State : std::uint8_t { kIdle, kConnecting, kConnected };

  // The thread starts with the templates given (or the first message): a connection made
  // before would begin without the templates-only message.
  void start_thread() noexcept {
    std::call_once(started_, [this] {
      try {
        thread_ = std::thread([this] { run(); });
      } catch (...) {
        tell("cannot start the exporter's thread");
      }
    });
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  void tell(std::string_view what) {
    if (o_.log) o_.log(fmt::format("{}: {}", target(), what));
  }

  // The exporter's thread: connects, writes the templates then the buffer, notices a
  // collector that goes away, and tries again after the back-off.
  void run() {
    auto backoff = o_.retry_initial;
    auto next_attempt = Clock::now();
    auto connect_deadline = Clock::now();
    State state = State::kIdle;
    UniqueFd fd;
    std::vector<std::uint8_t> tmpl;  // this connection's templates message, while unsent
    std::size_t off = 0;             // bytes written of the message at the head
    std::string told;                // the last failure told (not repeated while it lasts)
    bool lost_before = false;

    auto set_connected = [&](bool on) {
      std::lock_guard lock(mu_);
      connected_ = on;
      if (!on) room_.notify_all();
    };
    auto retry_later = [&](std::string why) {
      fd.reset();
      state = State::kIdle;
      off = 0;  // a message written in part goes again whole, after the templates
      tmpl.clear();
      set_connected(false);
      next_attempt = Clock::now() + backoff;
      if (why != told) {
        tell(fmt::format("{}; trying again with back-off (up to {} s)", why,
                         static_cast<double>(o_.retry_max.count()) / 1000));
        told = std::move(why);
      }
      lost_before = true;
      backoff = std::min(backoff * 2, o_.retry_max);
    };

    while (true) {
      const auto now = Clock::now();
      bool stopping, empty;
      Clock::time_point deadline;
      {
        std::lock_guard lock(mu_);
        stopping = stopping_;
        deadline = deadline_;
        empty = queue_.empty();
      }
      if (stopping && ((empty && tmpl.empty()) || now >= deadline)) break;

      if (state == State::kIdle && now >= next_attempt) {
        auto c = connect_tcp(to_, SOCK_NONBLOCK);
        if (!c) {
          retry_later(c.error().message());
          continue;
        }
        fd = std::move(*c);
        state = State::kConnecting;
        connect_deadline = now + o_.connect_timeout;
      }

      bool want_out = false;
      if (state == State::kConnected) {
        // Write until the kernel's buffer is full or nothing is left.
        std::string failure;
        while (true) {
          const std::uint8_t* data;
          std::size_t size;
          bool is_tmpl = !tmpl.empty();
          if (is_tmpl) {
            data = tmpl.data();
            size = tmpl.size();
          } else {
            std::lock_guard lock(mu_);
            if (queue_.empty()) break;
            // Only this thread pops: the front's bytes stay put while the producer pushes.
            data = queue_.front().bytes.data();
            size = queue_.front().bytes.size();
          }
          const ssize_t n = ::send(fd.get(), data + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
          if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
              want_out = true;
              break;
            }
            failure =
                fmt::format("connection to {} lost: {}", to_.to_string(), std::strerror(errno));
            break;
          }
          off += static_cast<std::size_t>(n);
          if (off < size) continue;
          off = 0;
          if (is_tmpl) {
            counts_.sent(size, 0);
            tmpl.clear();
            continue;
          }
          std::lock_guard lock(mu_);
          const Message& m = queue_.front();
          counts_.sent(m.bytes.size(), m.records);
          bytes_buffered_ -= m.bytes.size();
          records_buffered_ -= m.records;
          queue_.pop_front();
          room_.notify_all();
        }
        if (!failure.empty()) {
          retry_later(std::move(failure));
          continue;
        }
        if (stopping) {
          std::lock_guard lock(mu_);
          if (queue_.empty() && tmpl.empty()) break;
        }
      }

      // Wait for the next thing to do.
      pollfd p[2] = {{wake_.get(), POLLIN, 0}, {fd.get(), 0, 0}};
      Clock::time_point until = Clock::time_point::max();
      if (state == State::kIdle) until = next_attempt;
      if (state == State::kConnecting) {
        p[1].events = POLLOUT;
        until = connect_deadline;
      }
      if (state == State::kConnected) p[1].events = POLLIN | POLLRDHUP | (want_out ? POLLOUT : 0);
      if (stopping) until = std::min(until, deadline);
      int timeout_ms = -1;
      if (until != Clock::time_point::max()) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
        timeout_ms = static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, 1 << 30));
      }
      const int rc = ::poll(p, state == State::kIdle ? 1 : 2, timeout_ms);
      if (rc < 0 && errno != EINTR) {
        tell(fmt::format("poll: {}", std::strerror(errno)));
        break;
      }
      if (p[0].revents & POLLIN) {
        std::uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      }
      if (state == State::kConnecting) {
        if (p[1].revents != 0) {
          int err = 0;
          socklen_t len = sizeof err;
          if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
          if (err != 0) {
            retry_later(
                fmt::format("cannot connect to {}: {}", to_.to_string(), std::strerror(err)));
            continue;
          }
          state = State::kConnected;
          backoff = o_.retry_initial;
          told.clear();
          if (counts_.connections.fetch_add(1, std::memory_order_relaxed) != 0)
            counts_.reconnects.fetch_add(1, std::memory_order_relaxed);
          {
            std::lock_guard lock(mu_);
            connected_ = true;
            tmpl = templates_;
            stamp(tmpl, queue_.empty() ? next_sequence_ : get32(queue_.front().bytes.data() + 8));
          }
          if (lost_before) tell(fmt::format("connected to {}", to_.to_string()));
        } else if (Clock::now() >= connect_deadline) {
          retry_later(fmt::format("cannot connect to {}: no answer in {} s", to_.to_string(),
                                  static_cast<double>(o_.connect_timeout.count()) / 1000));
        }
        continue;
      }
      if (state == State::kConnected && (p[1].revents & (POLLIN | POLLRDHUP | POLLERR | POLLHUP))) {
        // A collector sends nothing: readable is the end of the connection (or an error).
        char sink[512];
        const ssize_t n = ::recv(fd.get(), sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0) {
          retry_later(fmt::format("connection to {} closed by the collector", to_.to_string()));
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          retry_later(
              fmt::format("connection to {} lost: {}", to_.to_string(), std::strerror(errno)));
        }
      }
    }
    set_connected(false);
  }

  Endpoint to_;
  IpfixExportOptions o_;
  UniqueFd wake_;
  std::once_flag started_;
  std::thread thread_;
  Counts counts_;

  mutable std::mutex mu_;
  std::condition_variable room_;  // the buffer shrank, or the connection was lost
  std::deque<Message> queue_;
  std::size_t bytes_buffered_ = 0;
  std::uint64_t records_buffered_ = 0;
  std::vector<std::uint8_t> templates_;
  std::uint32_t next_sequence_ = 0;  // the sequence number of the message after the last sent
  bool connected_ = false;
  bool stopping_ = false;
  Clock::time_point deadline_{};
};

// "udp://HOST:PORT" → HOST:PORT resolved (PORT defaults to 4739).
Result<Endpoint> collector(std::string_view target, std::string_view scheme) {
  const std::string_view rest = target.substr(scheme.size() + 3);
  auto to = resolve_endpoint(rest, kIpfixPort);
  if (!to)
    return fail(Errc::kInvalidArgument,
                fmt::format("expected {}://HOST[:PORT] (HOST a name, an IPv4 address or an IPv6 "
                            "address in brackets): {}",
                            scheme, to.error().message()));
  return *to;
}

}  // namespace

Result<std::unique_ptr<IpfixExporter>> IpfixExporter::open(std::string_view target,
                                                           IpfixExportOptions options) {
  if (target.starts_with("udp://")) {
    FM_TRY(Endpoint to, collector(target, "udp"));
    FM_TRY(UniqueFd fd, open_udp_socket(to.address.family()));
    if (auto c = connect_to(fd.get(), to); !c)
      return fail(Errc::kInvalidArgument,
                  fmt::format("cannot connect a UDP socket: {}", c.error().message()));
    return std::make_unique<UdpExporter>(std::string(target), std::move(fd));
  }
  if (target.starts_with("tcp://")) {
    FM_TRY(Endpoint to, collector(target, "tcp"));
    if (options.retry_initial.count() <= 0) options.retry_initial = std::chrono::milliseconds(1);
    if (options.retry_max < options.retry_initial) options.retry_max = options.retry_initial;
    auto e = std::make_unique<TcpExporter>(std::string(target), to, std::move(options));
    FM_TRY_VOID(e->start());
    return e;
  }
  if (target.empty()) return fail(Errc::kInvalidArgument, "expected a file, - or a URL");
  if (target.find("://") != std::string_view::npos)
    return fail(Errc::kInvalidArgument,
                "expected udp://HOST:PORT, tcp://HOST:PORT, a file or - (standard output)");
  auto e = std::make_unique<FileExporter>(target == "-" ? Kind::kStdout : Kind::kFile,
                                          std::string(target), std::move(options));
  FM_TRY_VOID(e->open());
  return e;
}

}  // namespace flowmark::net
