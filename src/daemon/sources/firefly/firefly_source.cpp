#include "daemon/sources/firefly/firefly_source.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "flowmark/core/fd.hpp"

#include "flowmark/scitags/firefly_listener.hpp"

namespace flowmark::daemon {
namespace {

// One socket set and its decoding: on the service's loop (threads = 1), or on a thread of
// its own (threads > 1: every reader's sockets share the port by SO_REUSEPORT).
class FireflySource;
struct Reader final : scitags::FireflySink {
  FireflySource* owner = nullptr;
  std::unique_ptr<scitags::FireflyListener> listener;
  std::vector<FlowEvent> batch;  // threaded: decoded, not yet handed to the loop
  scitags::RejectLog log;
  std::thread thread;
  void on_firefly(const Endpoint& sender, const scitags::Firefly& f) override;
  void on_reject(const Endpoint& sender, const scitags::Rejection& r) override;
  void on_batch_end() override;
  void on_error(const Error& e) override;
};

class FireflySource final : public Source {
 public:
  // Events decoded by reader threads and not yet pushed on the loop: beyond this the readers
  // wait (their sockets fill, and the kernel counts what it drops) rather than grow it.
  static constexpr std::size_t kHandOverLimit = 65536;

  FireflySource(std::string name, scitags::ListenerConfig config, std::vector<Network> allow,
                unsigned threads, ServiceContext& ctx)
      : name_(std::move(name)),
        config_(std::move(config)),
        allow_(std::move(allow)),
        threads_(threads) {
    for (std::size_t i = 0; i < scitags::kRejectKinds; ++i) {
      rejected_[i] = &reject_counter(ctx, scitags::to_string(static_cast<scitags::Reject>(i)));
    }
    not_allowed_ = &reject_counter(ctx, "sender_not_allowed");
    received_ = &ctx.counters.counter("flowmark_firefly_datagrams_total", {{"source", name_}},
                                      "Datagrams received by a firefly source");
  }
  ~FireflySource() override { stop(); }

  Result<void> start(EventLoop& loop, FlowSink& sink) override {
    sink_ = &sink;
    auto config = config_;
    config.reuse_port = threads_ > 1;
    for (unsigned i = 0; i < threads_; ++i) {
      FM_TRY(auto l, scitags::FireflyListener::open(config));
      // With port 0 every reader takes the port the first one got.
      if (i == 0 && config.port == 0) config.port = l.local_endpoints().front().port;
      auto r = std::make_unique<Reader>();
      r->owner = this;
      r->listener = std::make_unique<scitags::FireflyListener>(std::move(l));
      readers_.push_back(std::move(r));
    }
    loop_ = &loop;
    if (threads_ == 1) {
      FM_TRY_VOID(readers_[0]->listener->add_to(loop, *readers_[0]));
    } else {
      wake_fd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      if (!wake_fd_) return fail_errno("eventfd");
      FM_TRY_VOID(loop.add_fd(wake_fd_.get(), EPOLLIN, [this](std::uint32_t) {
        std::uint64_t n;
        [[maybe_unused]] auto got = ::read(wake_fd_.get(), &n, sizeof n);
        take_handed_over();
      }));
      stopping_.store(false);
      for (auto& r : readers_) r->thread = std::thread([this, raw = r.get()] { read_loop(*raw); });
    }
    std::string where;
    for (const auto& e : readers_[0]->listener->local_endpoints()) where += " " + e.to_string();
    spdlog::info("source {}: listening for fireflies on{}{}", name_, where,
                 threads_ > 1 ? fmt::format(" ({} threads, SO_REUSEPORT)", threads_) : "");
    return {};
  }

  void stop() noexcept override {
    if (loop_ && !readers_.empty()) {
      if (threads_ == 1) {
        for (int fd : readers_[0]->listener->fds()) loop_->remove_fd(fd);
      } else {
        stopping_.store(true);
        room_.notify_all();
        for (auto& r : readers_) {
          if (r->thread.joinable()) r->thread.join();
        }
        loop_->remove_fd(wake_fd_.get());
        take_handed_over();  // what the readers decoded before they stopped is not lost
      }
    }
    for (auto& r : readers_) r->log.flush();
    readers_.clear();
    loop_ = nullptr;
  }

 private:
  friend struct Reader;

  std::atomic<std::uint64_t>& reject_counter(ServiceContext& ctx, std::string_view reason) {
    return ctx.counters.counter("flowmark_source_rejected_total",
                                {{"source", name_}, {"reason", std::string(reason)}},
                                "Input rejected by a source, by reason");
  }

  bool allowed(Reader& r, const Endpoint& sender) {
    received_->fetch_add(1, std::memory_order_relaxed);
    if (allow_.empty() || any_contains(allow_, sender.address)) return true;
    not_allowed_->fetch_add(1, std::memory_order_relaxed);
    r.log.log(sender, {scitags::Reject::kBadHeader, "sender not in the allow list"});
    return false;
  }

  void read_loop(Reader& r) {
    std::vector<pollfd> fds;
    for (int fd : r.listener->fds()) fds.push_back({fd, POLLIN, 0});
    while (!stopping_.load(std::memory_order_relaxed)) {
      const int n = ::poll(fds.data(), fds.size(), 100);
      if (n <= 0) continue;
      if (auto got = r.listener->drain(r); !got) r.on_error(got.error());
    }
  }

  // From a reader thread: its batch joins the queue for the loop (waiting while it is full).
  void hand_over(std::vector<FlowEvent>& batch) {
    if (batch.empty()) return;
    bool wake = false;
    {
      std::unique_lock lock(mutex_);
      room_.wait(lock, [&] {
        return handed_.size() < kHandOverLimit || stopping_.load(std::memory_order_relaxed);
      });
      wake = handed_.empty();
      handed_.insert(handed_.end(), batch.begin(), batch.end());
    }
    batch.clear();
    if (wake) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto put = ::write(wake_fd_.get(), &one, sizeof one);
    }
  }

  // On the loop: pushes what the readers handed over.
  void take_handed_over() {
    {
      std::lock_guard lock(mutex_);
      taking_.swap(handed_);
    }
    room_.notify_all();
    for (const auto& e : taking_) sink_->push(e);
    taking_.clear();
  }

  std::string name_;
  scitags::ListenerConfig config_;
  std::vector<Network> allow_;
  unsigned threads_ = 1;
  std::vector<std::unique_ptr<Reader>> readers_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  UniqueFd wake_fd_;
  std::mutex mutex_;
  std::condition_variable room_;
  std::vector<FlowEvent> handed_, taking_;
  std::atomic<bool> stopping_{false};
  std::array<std::atomic<std::uint64_t>*, scitags::kRejectKinds> rejected_{};
  std::atomic<std::uint64_t>*not_allowed_, *received_;
};

void Reader::on_firefly(const Endpoint& sender, const scitags::Firefly& f) {
  if (!owner->allowed(*this, sender)) return;
  if (owner->threads_ == 1) {
    owner->sink_->push(f.event);
  } else {
    batch.push_back(f.event);
  }
}

void Reader::on_reject(const Endpoint& sender, const scitags::Rejection& r) {
  owner->received_->fetch_add(1, std::memory_order_relaxed);
  owner->rejected_[static_cast<std::size_t>(r.reason)]->fetch_add(1, std::memory_order_relaxed);
  log.log(sender, r);
}

void Reader::on_batch_end() {
  if (owner->threads_ > 1) owner->hand_over(batch);
}

void Reader::on_error(const Error& e) { spdlog::warn("source {}: {}", owner->name_, e.message()); }

Result<std::optional<IpAddress>> opt_address(Section& s, std::string_view key) {
  FM_TRY(auto text, s.string(key, ""));
  if (text.empty()) return std::optional<IpAddress>{};
  auto a = IpAddress::parse(text);
  if (!a) return s.error(key, a.error().message());
  return std::optional<IpAddress>{*a};
}

}  // namespace

Result<void> register_firefly_source(SourceFactories& factories) {
  return factories.add(
      "firefly", "fireflies received over UDP (flowd's firefly plugin)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Source>> {
        scitags::ListenerConfig c;
        FM_TRY(c.bind, opt_address(s, "bind"));
        FM_TRY(auto port, s.integer("port", scitags::kFireflyPort, 1, 65535));
        c.port = static_cast<std::uint16_t>(port);
        FM_TRY(c.group, opt_address(s, "group"));
        if (c.group && !c.group->is_multicast()) {
          return s.error("group", c.group->to_string() + " is not a multicast group");
        }
        if (c.bind && c.bind->is_unspecified() && !c.group) c.bind.reset();
        FM_TRY(auto iface, s.string("interface", ""));
        if (!iface.empty()) {
          auto i = resolve_interface(iface);
          if (!i) return s.error("interface", i.error().message());
          c.iface = *i;
        }
        FM_TRY(c.decoder.lenient_start_time, s.boolean("lenient_start_time", false));
        FM_TRY(auto allow, s.networks("allow"));
        FM_TRY(auto threads, s.integer("threads", 1, 1, 64));
        if (threads > 1 && c.group) {
          return s.error("threads", "more than one thread needs a unicast source (no group)");
        }
        return std::make_unique<FireflySource>(s.name(), std::move(c), std::move(allow),
                                               static_cast<unsigned>(threads), ctx);
      });
}

}  // namespace flowmark::daemon
