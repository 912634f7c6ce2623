#include "daemon/sources/observer/observer_source.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <mutex>
#include <thread>

#include "daemon/sources/observer/flow_announcer.hpp"
#include "flowmark/capture/pcap_source.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/daemon/config.hpp"

namespace flowmark::daemon {
namespace {

struct ObserverOptions {
  std::string interface;
  std::string filter;
  AnnouncerOptions announce;
};

class ObserverSource final : public Source {
 public:
  ObserverSource(std::string name, ObserverOptions o, ServiceContext& ctx)
      : name_(std::move(name)), o_(std::move(o)) {
    capture_errors_ =
        &ctx.counters.counter("flowmark_observer_capture_errors_total", {{"source", name_}},
                              "Capture errors of an observer source");
    packets_ = &ctx.counters.counter("flowmark_observer_packets_total", {{"source", name_}},
                                     "Packets seen by an observer source");
    if (o_.announce.classify == Classify::kScitags) {
      constexpr std::string_view kHelp = "Marks seen by an observer source with classify = scitags";
      o_.announce.tagged = &ctx.counters.counter(
          "flowmark_observer_marks_total", {{"source", name_}, {"outcome", "announced"}}, kHelp);
      o_.announce.unknown_tags = &ctx.counters.counter(
          "flowmark_observer_marks_total", {{"source", name_}, {"outcome", "unknown"}}, kHelp);
    }
  }
  ~ObserverSource() override { stop(); }

  Result<void> start(EventLoop& loop, FlowSink& sink) override {
    FM_TRY(auto cap, capture::PcapSource::open_live(o_.interface, o_.filter));
    capture_ = std::make_unique<capture::PcapSource>(std::move(cap));
    int efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) return fail_errno("eventfd");
    wake_ = UniqueFd(efd);
    sink_ = &sink;
    loop_ = &loop;
    FM_TRY_VOID(loop.add_fd(wake_.get(), EPOLLIN, [this](std::uint32_t) { deliver(); }));
    thread_ = std::thread([this] { run(); });
    spdlog::info("source {}: observing {}{}", name_, o_.interface,
                 o_.filter.empty() ? "" : " (filter: " + o_.filter + ")");
    return {};
  }

  void stop() noexcept override {
    if (capture_) capture_->break_loop();
    if (thread_.joinable()) thread_.join();
    if (loop_ && wake_) {
      deliver();
      loop_->remove_fd(wake_.get());
    }
    loop_ = nullptr;
    capture_.reset();
  }

 private:
  // Capture thread.
  void run() {
    FlowAnnouncer announcer(o_.announce, [this](const FlowEvent& e) { post(e); });
    capture::Frame f;
    while (true) {
      auto more = capture_->next(f);
      if (!more) {
        capture_errors_->fetch_add(1, std::memory_order_relaxed);
        spdlog::error("source {}: {}", name_, more.error().message());
        break;
      }
      if (!*more) break;
      packets_->fetch_add(1, std::memory_order_relaxed);
      announcer.on_packet(f.ts_ns, capture_->link_type(), f.data);
      flush();
    }
    announcer.finish();
    flush();
  }

  void post(const FlowEvent& e) { batch_.push_back(e); }

  void flush() {
    if (batch_.empty()) return;
    {
      std::lock_guard lock(mutex_);
      pending_.insert(pending_.end(), batch_.begin(), batch_.end());
    }
    batch_.clear();
    std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_.get(), &one, sizeof one);
  }

  // Loop thread.
  void deliver() {
    std::uint64_t count;
    [[maybe_unused]] auto n = ::read(wake_.get(), &count, sizeof count);
    std::vector<FlowEvent> ready;
    {
      std::lock_guard lock(mutex_);
      ready.swap(pending_);
    }
    for (const auto& e : ready) sink_->push(e);
  }

  std::string name_;
  ObserverOptions o_;
  std::unique_ptr<capture::PcapSource> capture_;
  UniqueFd wake_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<FlowEvent> pending_;  // guarded by mutex_
  std::vector<FlowEvent> batch_;    // capture thread only
  std::atomic<std::uint64_t>*capture_errors_, *packets_;
};

}  // namespace

Result<void> register_observer_source(SourceFactories& factories) {
  return factories.add("observer", "flows seen on a live interface by the passive observer",
                       [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Source>> {
                         ObserverOptions o;
                         FM_TRY(o.interface, s.string("interface", ""));
                         if (o.interface.empty())
                           return s.error("interface", "missing: the interface to observe");
                         FM_TRY(o.filter, s.string("filter", ""));
                         FM_TRY(auto idle, s.number("idle_timeout", 30, 0.1, 86400));
                         FM_TRY(auto expiry, s.number("expiry_delay", 1, 0, 3600));
                         FM_TRY(auto max_flows, s.integer("max_flows", 1 << 20, 1, 1 << 30));
                         FM_TRY(auto classify, s.choice("classify", "rules", {"rules", "scitags"}));
                         FM_TRY(auto icmp_flows, s.boolean("icmp_flows", false));
                         auto& a = o.announce;
                         a.observer.idle_timeout_ns = static_cast<observe::Nanos>(idle * 1e9);
                         a.observer.expiry_delay_ns = static_cast<observe::Nanos>(expiry * 1e9);
                         a.observer.max_flows = static_cast<std::size_t>(max_flows);
                         a.observer.icmp_flows = icmp_flows;
                         FM_TRY(auto ea, read_classification(s, *ctx.registry));
                         a.experiment = ea.first;
                         a.activity = ea.second;
                         if (classify == "scitags") {
                           a.classify = Classify::kScitags;
                           a.known_tags = known_tags(*ctx.registry);
                         }
                         return std::make_unique<ObserverSource>(s.name(), std::move(o), ctx);
                       });
}

}  // namespace flowmark::daemon
