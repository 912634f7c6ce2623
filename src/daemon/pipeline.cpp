#include "flowmark/daemon/pipeline.hpp"

#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <optional>
#include <thread>

namespace flowmark::daemon {

using scitags::FlowState;

namespace {

// A counter only the calling thread writes (the loop thread: pushed, forwarded, offered, by
// state): a plain add, not a locked one — seven locked adds per event were ~5 % of flowmarkd's
// CPU on the pipe -> firefly bench. Readers (the metrics endpoint, the exit counters) load it
// as before.
inline void bump(std::atomic<std::uint64_t>* c) noexcept {
  c->store(c->load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

// ---- back-pressure: the queues that are full ------------------------------------------------

// Shared by the pipeline and its workers (a worker given up at shutdown may outlive the
// pipeline). `full` counts the queues lossless sources wait for (those holding
// Worker::lossless_mark events or more); a worker that takes its queue's events (or is given
// up as stalled) frees its place, and the last one to do so wakes the waiters: the loop thread
// through an eventfd, other threads through `cv`.
struct Pipeline::Room {
  std::atomic<int> full{0};
  std::atomic<bool> loop_waiting{false};  // when_room call-backs wait on the loop thread
  std::atomic<bool> closed{false};        // shutdown: nobody waits any more
  std::atomic<int> fd{-1};  // the pipeline's eventfd (-1: not attached, or the pipeline gone)
  std::mutex mutex;
  std::condition_variable_any cv;

  bool has_room() const noexcept { return full.load() == 0; }
  void release() {
    if (full.fetch_sub(1) == 1) wake();
  }
  void wake() {
    if (const int f = fd.load(); loop_waiting.load() && f >= 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] auto n = ::write(f, &one, sizeof one);
    }
    { std::lock_guard lock(mutex); }
    cv.notify_all();
  }
};

// ---- one backend behind a bounded queue, on its own thread ---------------------------------

struct Pipeline::Worker {
  enum class Kind : std::uint8_t { kEvent, kReopen };
  struct Item {
    Kind kind;
    FlowEvent event;
  };

  Worker(std::string n, std::unique_ptr<Backend> b, std::size_t cap, Counters& counters,
         std::shared_ptr<Room> r)
      : name(std::move(n)), backend(std::move(b)), capacity(cap), room(std::move(r)) {
    const Labels base{{"backend", name}};
    auto with = [&](std::string_view outcome) {
      Labels l = base;
      l.emplace_back("outcome", outcome);
      return l;
    };
    static constexpr std::string_view kHelp =
        "Events offered to a backend, by outcome (delivered, or dropped with the reason)";
    offered = &counters.counter("flowmark_backend_offered_total", base,
                                "Events the pipeline offered to a backend");
    delivered = &counters.counter("flowmark_backend_events_total", with("delivered"), kHelp);
    dropped_full =
        &counters.counter("flowmark_backend_events_total", with("dropped_queue_full"), kHelp);
    dropped_stalled =
        &counters.counter("flowmark_backend_events_total", with("dropped_stalled"), kHelp);
    depth = &counters.gauge("flowmark_backend_queue_depth", base,
                            "Events waiting in a backend's queue");
  }

  void start() {
    thread = std::thread([this] { run(); });
  }

  // With `defer`, a sleeping worker is woken only once kWakeAt events wait, or by wake()
  // (the service calls it once per event-loop wake-up): one futex wake per burst instead of
  // one per event (a third of the loop thread's time under a firefly flood).
  static constexpr std::size_t kWakeAt = 256;
  // How an event that finds the queue full is treated.
  enum class Overflow : std::uint8_t {
    kDrop,      // dropped and counted (dropped_queue_full)
    kLossless,  // queued past the capacity (the source stops reading), unless given up
    kKeep,      // queued past the capacity (an end for a backend that holds the flow, shutdown)
  };
  // True when queued; false when dropped for a full queue.
  bool offer(const FlowEvent& e, Overflow overflow = Overflow::kDrop, bool defer = false) {
    bump(offered);  // loop thread
    bool wake = false;
    {
      std::lock_guard lock(mutex);
      if (pending.size() >= capacity) {
        if (overflow == Overflow::kDrop || (overflow == Overflow::kLossless && given_up)) {
          dropped_full->fetch_add(1, std::memory_order_relaxed);
          return false;
        }
      }
      make_room();
      pending.emplace_back(Kind::kEvent, e);
      if (!full && !given_up && pending.size() >= lossless_mark) {
        full = true;
        progress_mark = delivered->load(std::memory_order_relaxed);
        progress_at = std::chrono::steady_clock::now();
        room->full.fetch_add(1);
      }
      depth->store(pending.size(), std::memory_order_relaxed);
      if (waiting) {
        wake = !defer || pending.size() >= kWakeAt;
        wake_owed = !wake;
      }
    }
    if (wake) cv.notify_one();
    return true;
  }

  // Past kKeep a queue grows by a quarter rather than doubling: the queue and the batch trade
  // places, so both reach a burst's size, and doubling left them up to twice that (232 bytes an
  // event: 4 MB of a 100,000-flow load's peak).
  void make_room() {
    const std::size_t n = pending.size();
    if (n < pending.capacity()) return;
    pending.reserve(n < kKeep ? std::max<std::size_t>(2 * n, 64) : n + n / 4);
  }

  void wake() {
    bool owed = false;
    {
      std::lock_guard lock(mutex);
      owed = wake_owed && waiting;
      wake_owed = false;
    }
    if (owed) cv.notify_one();
  }

  // Loop thread: a full queue that took nothing for `patience` is given up as stalled
  // (lossless sources stop waiting for it) until its worker takes events again.
  void check_stalled(std::chrono::steady_clock::time_point now,
                     std::chrono::steady_clock::duration patience) {
    {
      std::lock_guard lock(mutex);
      if (!full) return;
      const auto d = delivered->load(std::memory_order_relaxed);
      if (d != progress_mark) {
        progress_mark = d;
        progress_at = now;
        return;
      }
      if (now - progress_at < patience) return;
      full = false;
      given_up = true;
    }
    spdlog::error(
        "backend {}: its queue is full and it took no event for {:.1f} s ([service] "
        "drain_timeout): lossless sources no longer wait for it; its events that do not fit are "
        "dropped (flowmark_backend_events_total{{outcome=\"dropped_queue_full\"}}) until it "
        "takes events again",
        name, std::chrono::duration<double>(patience).count());
    room->release();
  }

  // Its place among the full queues is given back (the backend is being removed).
  void leave_room() {
    bool release = false;
    {
      std::lock_guard lock(mutex);
      release = full;
      full = false;
      given_up = true;
    }
    if (release) room->release();
  }

  void reopen() {
    {
      std::lock_guard lock(mutex);
      pending.emplace_back(Kind::kReopen, FlowEvent{});
    }
    cv.notify_one();
  }

  void wait_idle() {
    std::unique_lock lock(mutex);
    idle_cv.wait(lock, [&] { return pending.empty() && !busy; });
  }

  void request_stop() {
    {
      std::lock_guard lock(mutex);
      stopping = true;
    }
    cv.notify_one();
  }

  // Stops the worker once its queue is drained and joins it. A backend stuck in a call
  // (a write to a FIFO nobody reads, say) must not hold the service forever: if the worker
  // has not finished by `deadline`, what it still holds is counted as dropped_stalled, it is
  // left behind (detached; its Worker is never freed) and false is returned.
  bool stop_and_join(std::chrono::steady_clock::time_point deadline) {
    leave_room();
    request_stop();
    if (!thread.joinable()) return true;
    {
      std::unique_lock lock(mutex);
      if (!idle_cv.wait_until(lock, deadline, [&] { return finished; })) {
        const auto left = pending.size() + in_flight.load(std::memory_order_relaxed);
        dropped_stalled->fetch_add(left, std::memory_order_relaxed);
        pending.clear();
        abandoned.store(true, std::memory_order_relaxed);
        spdlog::error(
            "backend {}: stalled, did not drain in time: {} event(s) dropped "
            "(flowmark_backend_events_total{{outcome=\"dropped_stalled\"}})",
            name, left);
        thread.detach();
        return false;
      }
    }
    thread.join();
    return true;
  }

  void run() {
    using Clock = std::chrono::steady_clock;
    const auto tick = backend->tick_interval();
    auto next_tick = Clock::now() + tick;
    std::vector<Item> batch;
    // A burst grows both vectors (they trade places at every swap) to its size, 232 bytes an
    // event: 100,000 events kept 13 MB after they were delivered. The memory beyond kKeep
    // events goes back once the batches are small again, or after a second without events.
    std::optional<Clock::time_point> trim_at;
    bool release = false, trim_heap = false;
    while (true) {
      {
        std::unique_lock lock(mutex);
        auto ready = [&] { return !pending.empty() || stopping; };
        std::optional<Clock::time_point> wake;
        if (tick.count() > 0) wake = next_tick;
        if (trim_at && (!wake || *trim_at < *wake)) wake = trim_at;
        waiting = true;
        if (wake) {
          cv.wait_until(lock, *wake, ready);
        } else {
          cv.wait(lock, ready);
        }
        waiting = false;
        wake_owed = false;
        if (pending.empty() && stopping) break;
        if (trim_at && pending.empty() && Clock::now() >= *trim_at) {
          std::vector<Item>().swap(pending);
          std::vector<Item>().swap(batch);
          trim_at.reset();
          trim_heap = true;
        }
        batch.swap(pending);
        in_flight.store(batch.size(), std::memory_order_relaxed);
        busy = !batch.empty();
        depth->store(0, std::memory_order_relaxed);
        release = full;
        full = false;
        if (given_up && !batch.empty()) {
          given_up = false;
          spdlog::warn("backend {}: takes events again; lossless sources wait for it again", name);
        }
      }
      if (release) {
        room->release();
        release = false;
      }
      // A burst's vectors were freed: the allocator gives its free pages back to the kernel
      // now. Freed in the middle of its heap they stayed resident: after a 1,000,000-event
      // flood, 100 MB settled in one run and 190 MB in the next (test_collector_flood).
      if (trim_heap) {
        malloc_trim(0);
        trim_heap = false;
      }
      for (const auto& item : batch) {
        if (item.kind == Kind::kReopen) {
          backend->flush();
          backend->reopen();
          continue;
        }
        backend->on_event(item.event);
        in_flight.fetch_sub(1, std::memory_order_relaxed);
        if (abandoned.load(std::memory_order_relaxed)) return;  // counted as dropped_stalled
        delivered->fetch_add(1, std::memory_order_relaxed);
      }
      if (!batch.empty()) backend->flush();
      const bool quiet = batch.size() < kKeep / 4;
      batch.clear();
      if (quiet && batch.capacity() > kKeep) std::vector<Item>().swap(batch);
      {
        std::lock_guard lock(mutex);
        busy = false;
        if (quiet && pending.empty() && pending.capacity() > kKeep) {
          std::vector<Item>().swap(pending);
        }
        if (batch.capacity() > kKeep || pending.capacity() > kKeep) {
          trim_at = Clock::now() + std::chrono::seconds(1);
        } else {
          trim_at.reset();
        }
        if (pending.empty()) idle_cv.notify_all();
      }
      if (tick.count() > 0 && Clock::now() >= next_tick) {
        backend->on_tick();
        next_tick = Clock::now() + tick;
      }
    }
    backend->stop();
    std::lock_guard lock(mutex);
    busy = false;
    finished = true;
    idle_cv.notify_all();
  }

  std::string name;
  std::unique_ptr<Backend> backend;
  std::size_t capacity;
  // Lossless sources wait while this many events are queued: a few milliseconds of work,
  // enough for batches that pay for the worker's wake-ups, and the rest of the capacity is
  // kept for the bursts of sources that cannot wait (UDP fireflies) — and out of memory. The
  // queue and the batch it becomes each hold this many 232-byte events (+ a read's) during a
  // burst: 1,024 keeps that ~0.7 MB of the peak RSS, where 4,096 took ~3.9 MB (doubling).
  static constexpr std::size_t kLosslessMark = 1024;
  // What a queue keeps of its capacity once the burst is over (~120 kB).
  static constexpr std::size_t kKeep = 512;
  std::size_t lossless_mark = std::min(capacity, kLosslessMark);
  std::shared_ptr<Room> room;
  // Its bit in Live::holders (0: none free, more than 32 backends).
  std::uint32_t slot_bit = 0;
  std::mutex mutex;
  std::condition_variable cv, idle_cv;
  std::vector<Item> pending;
  bool stopping = false;
  bool busy = false;
  bool waiting = false;             // the worker sleeps on cv
  bool wake_owed = false;           // events were left for it without a wake-up (deferred)
  bool finished = false;            // run() has returned (the backend is stopped)
  bool full = false;                // counted in room->full: lossless sources wait for this queue
  bool given_up = false;            // stalled while full: lossless sources do not wait for it
  std::uint64_t progress_mark = 0;  // delivered when last seen moving (loop thread)
  std::chrono::steady_clock::time_point progress_at;
  std::atomic<bool> abandoned{false};     // stop_and_join gave up on it
  std::atomic<std::size_t> in_flight{0};  // items of the current batch not yet handed over
  std::thread thread;
  std::atomic<std::uint64_t>*offered, *delivered, *dropped_full, *dropped_stalled, *depth;
};

// ---- the pipeline --------------------------------------------------------------------------

Pipeline::Pipeline(ServiceContext& context, PipelineOptions options)
    : context_(context), options_(std::move(options)), room_(std::make_shared<Room>()) {
  auto& c = context_.counters;
  static constexpr std::string_view kHelp =
      "Events from sources, by what the pipeline did with them";
  live_gauge_ = &c.gauge("flowmark_live_flows", {}, "Flows started and not yet ended");
  pushed_ = &c.counter("flowmark_pipeline_received_total", {},
                       "Events the sources pushed into the pipeline");
  forwarded_ = &c.counter("flowmark_pipeline_events_total", {{"outcome", "forwarded"}}, kHelp);
  duplicate_ =
      &c.counter("flowmark_pipeline_events_total", {{"outcome", "duplicate_start"}}, kHelp);
  unclassified_ =
      &c.counter("flowmark_pipeline_events_total", {{"outcome", "unclassified"}}, kHelp);
  end_unknown_ = &c.counter("flowmark_pipeline_end_without_start_total", {},
                            "End events for flows the pipeline had not seen start "
                            "(forwarded with start-time = end-time)");
  expired_ = &c.counter("flowmark_pipeline_expired_total", {},
                        "Flows ended by the pipeline after flow_timeout without an event");
  evicted_ = &c.counter("flowmark_pipeline_evicted_total", {},
                        "Flows ended by the pipeline to keep [service] max_live_flows");
  duplicate_end_ =
      &c.counter("flowmark_pipeline_events_total", {{"outcome", "duplicate_after_end"}}, kHelp);
  stale_ = &c.counter("flowmark_pipeline_events_total", {{"outcome", "stale"}}, kHelp);
  replaced_ = &c.counter("flowmark_pipeline_replaced_total", {},
                         "Live flows ended (as expired) by a start of the same 5-tuple with a "
                         "later start time");
}

Pipeline::~Pipeline() {
  stop_workers();
  room_->fd.store(-1);  // a worker given up (still running) must not write to a closed fd
  if (loop_) {
    if (stall_timer_) loop_->cancel_timer(*stall_timer_);
    if (room_fd_) loop_->remove_fd(room_fd_.get());
  }
}

Result<void> Pipeline::attach(EventLoop& loop) {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return fail_errno("eventfd for the pipeline's back-pressure");
  UniqueFd efd(fd);
  FM_TRY_VOID(loop.add_fd(fd, EPOLLIN, [this](std::uint32_t) {
    std::uint64_t n = 0;
    [[maybe_unused]] auto r = ::read(room_fd_.get(), &n, sizeof n);
    room_ready();
  }));
  loop_ = &loop;
  room_fd_ = std::move(efd);
  room_->fd = room_fd_.get();
  return {};
}

bool Pipeline::has_room() const noexcept { return room_->has_room(); }

std::uint64_t Pipeline::when_room(std::function<void()> resume) {
  if (!loop_ || room_->closed.load()) {  // no loop to call back on (tests): go on at once
    resume();
    return 0;
  }
  const auto id = next_wait_id_++;
  room_waiters_.emplace(id, std::move(resume));
  room_->loop_waiting.store(true);
  // Room freed between the source's has_room() and now: the worker saw nobody waiting.
  if (room_->has_room()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(room_fd_.get(), &one, sizeof one);
  }
  if (!stall_timer_) arm_stall_timer();
  return id;
}

void Pipeline::arm_stall_timer() {
  auto t = loop_->add_timer(std::chrono::milliseconds(100), std::chrono::milliseconds(100),
                            [this] { check_stalled(); });
  if (t) {
    stall_timer_ = *t;
  } else {
    spdlog::warn("pipeline: no timer to watch for stalled backends: {}", t.error().message());
  }
}

void Pipeline::cancel_room_wait(std::uint64_t id) noexcept { room_waiters_.erase(id); }

bool Pipeline::wait_for_room(std::stop_token stop, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(room_->mutex);
  return room_->cv.wait_until(lock, stop, deadline, [&] {
    return room_->has_room() || room_->closed.load();
  }) && !room_->closed.load();
}

void Pipeline::room_ready() {
  if (!room_->has_room() && !room_->closed.load()) return;
  room_->loop_waiting.store(false);
  auto waiters = std::move(room_waiters_);
  room_waiters_.clear();
  for (auto& [id, resume] : waiters) resume();
}

void Pipeline::check_stalled() {
  if (room_->has_room()) {
    if (room_waiters_.empty() && stall_timer_) {
      loop_->cancel_timer(*stall_timer_);
      stall_timer_.reset();
    }
    if (!room_waiters_.empty()) room_ready();
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  const auto patience = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(options_.drain_timeout));
  for (auto& w : workers_) w->check_stalled(now, patience);
}

void Pipeline::stop_workers() {
  // Every worker drains at the same time; one deadline for them all.
  for (auto& w : workers_) w->request_stop();
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::milliseconds(static_cast<std::int64_t>(options_.drain_timeout * 1000));
  for (auto& w : workers_) {
    if (!w->stop_and_join(deadline)) {
      // Its thread still uses it: leaked on purpose, the process is about to exit.
      [[maybe_unused]] auto* stalled = w.release();
    }
  }
  workers_.clear();
}

void Pipeline::set_options(PipelineOptions options) { options_ = std::move(options); }

Result<void> Pipeline::add_backend(const std::string& name, std::unique_ptr<Backend> backend,
                                   bool adopt_live) {
  if (has_backend(name)) {
    return fail(Errc::kInvalidArgument, "backend '" + name + "' is already running");
  }
  auto r = backend->start();
  if (!r) return std::unexpected(std::move(r).error().with_context("backend " + name));
  auto w = std::make_unique<Worker>(name, std::move(backend), options_.queue_size,
                                    context_.counters, room_);
  for (std::uint32_t bit = 1; bit != 0; bit <<= 1) {
    if ((used_slots_ & bit) == 0) {
      w->slot_bit = bit;
      used_slots_ |= bit;
      break;
    }
  }
  if (adopt_live) {
    for (auto id = flows_.oldest(); id != FlowTable::kNone; id = flows_.newer(id)) {
      flows_.holders(id) |= w->slot_bit;
      const FlowKey key = flows_.key(id);
      FlowEvent e;
      e.state = FlowState::kStart;
      e.protocol = key.protocol;
      e.src = key.src;
      e.dst = key.dst;
      e.experiment = flows_.experiment(id);
      e.activity = flows_.activity(id);
      e.start_time = flows_.start_time(id);
      e.current_time = e.start_time;
      e.usage = flows_.usage(id);
      if (w->backend->wants_public_addresses()) rewrite_public(e);
      w->offer(e, Worker::Overflow::kKeep);
    }
  }
  w->start();
  workers_.push_back(std::move(w));
  return {};
}

void Pipeline::remove_backend(std::string_view name) {
  for (auto it = workers_.begin(); it != workers_.end(); ++it) {
    if ((*it)->name == name) {
      const std::uint32_t bit = (*it)->slot_bit;
      used_slots_ &= ~bit;
      for (auto id = flows_.oldest(); id != FlowTable::kNone; id = flows_.newer(id)) {
        flows_.holders(id) &= ~bit;
      }
      const auto deadline =
          std::chrono::steady_clock::now() +
          std::chrono::milliseconds(static_cast<std::int64_t>(options_.drain_timeout * 1000));
      if (!(*it)->stop_and_join(deadline)) {
        [[maybe_unused]] auto* stalled = it->release();  // its thread still uses it
      }
      workers_.erase(it);
      return;
    }
  }
}

bool Pipeline::has_backend(std::string_view name) const {
  for (const auto& w : workers_) {
    if (w->name == name) return true;
  }
  return false;
}

std::vector<std::string> Pipeline::backend_names() const {
  std::vector<std::string> out;
  out.reserve(workers_.size());
  for (const auto& w : workers_) out.push_back(w->name);
  return out;
}

bool Pipeline::classify(FlowEvent& e) const {
  if (e.experiment != 0) return true;
  for (const auto& r : options_.rules) {
    if (r.matches(e)) {
      e.experiment = r.experiment;
      e.activity = r.activity;
      return true;
    }
  }
  return false;
}

void Pipeline::rewrite_public(FlowEvent& e) const {
  const auto& pa = options_.public_address;
  for (const auto& [from, to] : pa.map) {
    if (e.src.address == from) {
      e.src.address = to;
      return;
    }
  }
  if (e.src.address.is_global()) return;
  if (e.src.address.is_v4() && pa.ipv4) e.src.address = *pa.ipv4;
  if (e.src.address.is_v6() && pa.ipv6) e.src.address = *pa.ipv6;
}

void Pipeline::fan_out(const FlowEvent& e, std::uint32_t* holders) {
  bump(forwarded_);
  // A backend that holds a flow (was given one of its events) gets its end whatever its
  // queue holds: its per-flow state then always ends with the flow, and the excess over
  // queue_size is bounded by the live flows. Other events may be dropped for a full queue.
  const bool end = e.state == FlowState::kEnd;
  using Overflow = Worker::Overflow;
  const Overflow otherwise = lossless_ ? Overflow::kLossless : Overflow::kDrop;
  auto give = [&](Worker& w, const FlowEvent& ev) {
    const bool keep = shutting_down_ || (end && holders && (*holders & w.slot_bit) != 0);
    if (w.offer(ev, keep ? Overflow::kKeep : otherwise, defer_wakeups_) && holders) {
      *holders |= w.slot_bit;
    }
  };
  if (options_.public_address.map.empty() && !options_.public_address.ipv4 &&
      !options_.public_address.ipv6) {
    for (auto& w : workers_) give(*w, e);
  } else {
    FlowEvent out = e;
    rewrite_public(out);
    for (auto& w : workers_) give(*w, w->backend->wants_public_addresses() ? out : e);
  }
  // A full queue: watch it, so that one that stalls does not hold lossless sources for good.
  if (!stall_timer_ && loop_ && !room_->has_room()) arm_stall_timer();
}

namespace {

std::uint64_t volume_of(const std::optional<scitags::Usage>& u) noexcept {
  return u ? std::max(u->sent, u->received) : 0;
}

}  // namespace

Pipeline::FlowId Pipeline::insert_live(const FlowKey& key, const FlowEvent& e, Micros now) {
  const bool bounded = options_.max_live_flows > 0 && flows_.size() >= options_.max_live_flows;
  if ((bounded || flows_.size() >= FlowTable::kMaxFlows) && flows_.oldest() != FlowTable::kNone) {
    const FlowId victim = flows_.oldest();
    evicted_->fetch_add(1, std::memory_order_relaxed);
    bump(pushed_);
    evict_log_.log(spdlog::level::warn, [&] {
      const FlowKey k = flows_.key(victim);
      return fmt::format(
          "{} live flows ([service] max_live_flows): the flow idle longest, {} {} -> {}, is "
          "ended as evicted (counted in flowmark_pipeline_evicted_total)",
          flows_.size(), scitags::to_string(k.protocol), k.src.to_string(), k.dst.to_string());
    });
    end_live(victim, scitags::EndReason::kEvicted, flows_.last_event(victim));
  }
  const FlowId id = flows_.insert(key, now);  // linked in as the newest
  flows_.set_start_time(id, e.start_time);
  flows_.set_class(id, e.experiment, e.activity);
  flows_.set_usage(id, e.usage);
  live_gauge_->store(flows_.size(), std::memory_order_relaxed);
  return id;
}

void Pipeline::touch(FlowId id, Micros now) { flows_.touch(id, now); }

void Pipeline::erase_live(FlowId id) {
  remember_ended(flows_.key(id), flows_.start_time(id));
  flows_.erase(id);
  live_gauge_->store(flows_.size(), std::memory_order_relaxed);
}

void Pipeline::RecentEnds::Free::operator()(Slot* p) const noexcept {
  ::munmap(p, kSlots * sizeof(Slot));
}

// mmap, not calloc: malloc's threshold for mmap grows with the blocks freed, and a zeroed
// block from its heap would be written (resident) at once.
Pipeline::RecentEnds::Generation Pipeline::RecentEnds::fresh() {
  void* p = ::mmap(nullptr, kSlots * sizeof(Slot), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return Generation(static_cast<Slot*>(p));
}

Pipeline::RecentEnds::RecentEnds() : gen_{fresh(), fresh()} {}

void Pipeline::RecentEnds::add(std::uint64_t fingerprint, Micros start_time) {
  fingerprint |= 1;  // never 0 (empty)
  if (count_[0] >= kGeneration) {
    std::swap(gen_[0], gen_[1]);
    gen_[0] = fresh();  // the oldest's pages go back; the new ones are touched as filled
    count_[1] = count_[0];
    count_[0] = 0;
  }
  Slot* g = gen_[0].get();
  for (std::size_t i = fingerprint & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
    if (g[i].fingerprint == fingerprint) {
      g[i].start_time = start_time;
      return;
    }
    if (g[i].fingerprint == 0) {
      g[i] = {fingerprint, start_time};
      ++count_[0];
      return;
    }
  }
}

std::optional<Micros> Pipeline::RecentEnds::find(std::uint64_t fingerprint) const noexcept {
  fingerprint |= 1;
  for (int k = 0; k < 2; ++k) {
    // An empty generation is not read: here, reading untouched pages made them resident.
    if (count_[k] == 0) continue;
    const Slot* g = gen_[k].get();
    for (std::size_t i = fingerprint & (kSlots - 1);; i = (i + 1) & (kSlots - 1)) {
      if (g[i].fingerprint == fingerprint) return g[i].start_time;
      if (g[i].fingerprint == 0) break;
    }
  }
  return std::nullopt;
}

void Pipeline::remember_ended(const FlowKey& key, Micros start_time) {
  ended_.add(FlowKeyHash{}(key), start_time);
}

std::optional<Micros> Pipeline::ended_lately(const FlowKey& key) const {
  return ended_.find(FlowKeyHash{}(key));
}

void Pipeline::end_live(FlowId id, scitags::EndReason reason, Micros end_time) {
  const FlowKey key = flows_.key(id);
  FlowEvent e;
  e.state = FlowState::kEnd;
  e.end_reason = reason;
  e.protocol = key.protocol;
  e.src = key.src;
  e.dst = key.dst;
  e.start_time = flows_.start_time(id);
  e.current_time = end_time;
  e.end_time = end_time;
  e.experiment = flows_.experiment(id);
  e.activity = flows_.activity(id);
  e.usage = flows_.usage(id);
  e.previous_volume = volume_of(e.usage);
  std::uint32_t holders = flows_.holders(id);
  erase_live(id);
  fan_out(e, &holders);
}

void Pipeline::push(const FlowEvent& in) {
  lossless_ = false;
  push_event(in);
}

void Pipeline::push_lossless(const FlowEvent& in) {
  lossless_ = true;
  push_event(in);
  lossless_ = false;
}

void Pipeline::begin_batch() { batch_now_ = options_.clock(); }

void Pipeline::push_event(const FlowEvent& in) {
  bump(pushed_);
  FlowEvent e = in;
  const Micros now = batch_now_ ? *batch_now_ : options_.clock();
  if (e.current_time == 0) e.current_time = now;
  const FlowKey key = key_of(e);
  constexpr FlowId kNone = FlowTable::kNone;
  FlowId id = flows_.find(key);

  // The 5-tuple and start time name a flow: a live flow of this tuple with another start
  // time is another flow — an older one (its end was lost: ended as expired) or a newer one
  // (this event is a stale copy of the older).
  const Micros live_start = id != kNone ? flows_.start_time(id) : 0;
  if (id != kNone && e.start_time != 0 && live_start != 0 && e.start_time != live_start) {
    if (e.start_time < live_start) {
      stale_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    replaced_->fetch_add(1, std::memory_order_relaxed);
    bump(pushed_);
    end_live(id, scitags::EndReason::kExpired, flows_.last_event(id));
    id = kNone;
  }
  // A copy of the end (or a late start or ongoing) of a flow that ended lately.
  if (id == kNone) {
    if (auto started = ended_lately(key)) {
      const bool same = e.start_time != 0 ? e.start_time == *started : e.state != FlowState::kStart;
      if (same) {
        duplicate_end_->fetch_add(1, std::memory_order_relaxed);
        return;
      }
    }
  }

  switch (e.state) {
    case FlowState::kStart: {
      if (id != kNone) {
        duplicate_->fetch_add(1, std::memory_order_relaxed);
        touch(id, now);
        return;
      }
      if (!classify(e)) break;
      if (e.start_time == 0) e.start_time = now;
      e.previous_volume = 0;
      fan_out(e, &flows_.holders(insert_live(key, e, now)));
      return;
    }
    case FlowState::kOngoing: {
      if (id == kNone) {
        if (!classify(e)) break;
        if (e.start_time == 0) e.start_time = now;
        auto start = e;
        start.usage.reset();
        id = insert_live(key, start, now);
      }
      touch(id, now);
      const auto used = flows_.usage(id);
      e.previous_volume = volume_of(used);
      if (e.usage) {
        // Never backwards: an older update delivered late keeps the larger counts.
        if (used) {
          e.usage->sent = std::max(e.usage->sent, used->sent);
          e.usage->received = std::max(e.usage->received, used->received);
        }
        flows_.set_usage(id, e.usage);
      }
      e.start_time = flows_.start_time(id);
      if (e.experiment == 0) {
        e.experiment = flows_.experiment(id);
        e.activity = flows_.activity(id);
      }
      if (!e.usage) e.usage = used;
      fan_out(e, &flows_.holders(id));
      return;
    }
    case FlowState::kEnd: {
      if (e.end_time == 0) e.end_time = now;
      if (id != kNone) {
        const Micros started = flows_.start_time(id);
        if (e.start_time == 0) e.start_time = started;
        if (e.experiment == 0) {
          e.experiment = flows_.experiment(id);
          e.activity = flows_.activity(id);
        }
        const auto used = flows_.usage(id);
        e.previous_volume = volume_of(used);
        if (!e.usage) {
          e.usage = used;
        } else if (used) {
          e.usage->sent = std::max(e.usage->sent, used->sent);
          e.usage->received = std::max(e.usage->received, used->received);
        }
        std::uint32_t holders = flows_.holders(id);
        remember_ended(key, started);
        flows_.erase(id);
        live_gauge_->store(flows_.size(), std::memory_order_relaxed);
        fan_out(e, &holders);
        return;
      }
      if (!classify(e)) break;
      end_unknown_->fetch_add(1, std::memory_order_relaxed);
      if (e.start_time == 0) e.start_time = e.end_time;
      e.previous_volume = 0;
      remember_ended(key, e.start_time);
      fan_out(e, nullptr);
      return;
    }
  }
  // Not classified: no rule matched and the source gave no experiment.
  unclassified_->fetch_add(1, std::memory_order_relaxed);
  unclassified_log_.log(spdlog::level::warn, [&] {
    return fmt::format(
        "{} flow {} -> {} matches no [[rule]] and its source gave no experiment: "
        "not marked (counted in flowmark_pipeline_events_total{{outcome=\"unclassified\"}})",
        scitags::to_string(e.protocol), e.src.to_string(), e.dst.to_string());
  });
}

std::size_t Pipeline::expire() {
  if (options_.flow_timeout <= 0) return 0;
  const Micros now = options_.clock();
  const auto limit = static_cast<Micros>(options_.flow_timeout * 1e6);
  // The oldest flows are first in the activity order: stop at the first one still fresh.
  std::size_t n = 0;
  while (flows_.oldest() != FlowTable::kNone && now - flows_.last_event(flows_.oldest()) >= limit) {
    expired_->fetch_add(1, std::memory_order_relaxed);
    bump(pushed_);
    end_live(flows_.oldest(), scitags::EndReason::kExpired, now);
    ++n;
  }
  return n;
}

void Pipeline::shutdown() {
  // The sources have stopped: the end events of the live flows are the last events, bounded
  // by the number of live flows, and each backend gets every one of them whatever its queue
  // size (a queue smaller than the live flows dropped most of them as queue_full).
  shutting_down_ = true;
  room_->closed.store(true);
  room_->wake();
  const Micros now = options_.clock();
  while (flows_.oldest() != FlowTable::kNone) {
    bump(pushed_);
    end_live(flows_.oldest(), scitags::EndReason::kShutdown, now);
  }
  stop_workers();
}

void Pipeline::wake_backends() {
  for (auto& w : workers_) w->wake();
}

void Pipeline::reopen() {
  for (auto& w : workers_) w->reopen();
}

void Pipeline::wait_idle() {
  for (auto& w : workers_) w->wait_idle();
}

SourceTap::SourceTap(std::string source, Counters& counters, FlowSink& next) : next_(next) {
  static constexpr std::string_view kStates[] = {"start", "ongoing", "end"};
  for (std::size_t i = 0; i < 3; ++i) {
    by_state_[i] = &counters.counter("flowmark_source_events_total",
                                     {{"source", source}, {"state", std::string(kStates[i])}},
                                     "Flow events found by a source, by state");
  }
}

void SourceTap::push(const FlowEvent& event) {
  bump(by_state_[static_cast<std::size_t>(event.state)]);
  next_.push(event);
}

void SourceTap::push_lossless(const FlowEvent& event) {
  bump(by_state_[static_cast<std::size_t>(event.state)]);
  next_.push_lossless(event);
}

}  // namespace flowmark::daemon
