// flowmark::daemon — the pipeline between sources and backends.
//
// It keeps the state of each live flow (keyed by protocol and both endpoints), so that an
// end event carries the flow's start time, duplicates are suppressed and flows whose end
// never comes are ended after `flow_timeout`. This is also the collector's join: the start,
// ongoing and end events (fireflies) of one flow — one 5-tuple and start time — meet here,
// each event forwarded with the flow's start time, latest usage (never decreasing) and the
// volume forwarded before it. A start for a live 5-tuple with a later start time is a new
// flow (the old one is ended as expired); events for an older start time are stale copies.
// Flows ended lately are remembered (two generations of up to 65,536 each, 4 MB), so a second
// copy of an end (or a late start/ongoing) is suppressed rather than taken for a new flow.
// `max_live_flows` bounds the table: past it the flow idle longest is ended (reason
// evicted, counted in flowmark_pipeline_evicted_total, a warning every 10 s at most);
// a backend given any event of a flow is always given its end, past its queue's bound if
// need be (at most the live flows), so no backend's per-flow state outlives a flow; classifies
// unclassified events by the rules; rewrites private source addresses to the public ones; and fans
// each event out to every backend through a bounded queue per backend, each drained by its own
// worker thread. Events of a source that cannot be slowed (push) that do not fit a backend's
// queue are dropped for it and counted (flowmark_backend_events_total{backend,
// outcome="dropped_queue_full"}); those of a lossless source (push_lossless) are queued, and
// the source reads no more while a queue holds 1,024 events or more (has_room, when_room:
// back-pressure, see plugin.hpp) — the rest of queue_size is kept for the sources that cannot
// wait. A backend whose full queue makes no progress for drain_timeout is given up as
// stalled (logged): lossless sources no longer wait for it, and what does not fit its queue is
// dropped as above, until it takes events again. The loop thread never blocks on a queue.
//
// Accounting, per backend: every event offered = delivered + dropped (by reason), once the
// queue is drained. For the pipeline: every event pushed = forwarded + suppressed (by
// reason).
//
//   Pipeline p(context, options);
//   FM_TRY_VOID(p.add_backend("fireflies", std::move(backend)));
//   FM_TRY_VOID(p.attach(loop));  // back-pressure call-backs (when_room) on this loop
//   p.push(event);            // from sources, on the loop thread
//   p.shutdown();             // end events for live flows, drain, stop
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flowmark/core/fd.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/daemon/flow_key.hpp"
#include "flowmark/daemon/flow_table.hpp"
#include "flowmark/daemon/plugin.hpp"

namespace flowmark::daemon {

struct PipelineOptions {
  std::vector<Rule> rules;
  PublicAddressConfig public_address;  // ipv4/ipv6 may hold STUN-discovered addresses
  double flow_timeout = 86400;         // seconds; 0: never
  std::size_t queue_size = 65536;
  std::size_t max_live_flows = 0;  // 0: no bound
  // Seconds a backend gets to drain its queue when it is stopped (shutdown, or removed by a
  // reload); a stalled one is then given up, what it held counted as dropped_stalled.
  double drain_timeout = 5;
  std::function<Micros()> clock = now_micros;
};

class Pipeline : public FlowSink {
 public:
  Pipeline(ServiceContext& context, PipelineOptions options);
  ~Pipeline() override;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Rules, public addresses, timeout (a reload). Live flows are kept.
  void set_options(PipelineOptions options);

  // Starts the backend (Backend::start) and its worker. With `adopt_live`, the flows live
  // now are offered to it first as start events (a backend added by a reload).
  Result<void> add_backend(const std::string& name, std::unique_ptr<Backend> backend,
                           bool adopt_live = false);
  // Drains its queue, stops it and joins its worker.
  void remove_backend(std::string_view name);
  bool has_backend(std::string_view name) const;
  std::vector<std::string> backend_names() const;

  // Wakes when_room's call-backs on this loop's thread and checks for stalled backends.
  Result<void> attach(EventLoop& loop);

  void push(const FlowEvent& event) override;
  void push_lossless(const FlowEvent& event) override;
  bool has_room() const noexcept override;
  std::uint64_t when_room(std::function<void()> resume) override;
  void cancel_room_wait(std::uint64_t id) noexcept override;
  bool wait_for_room(std::stop_token stop, std::chrono::steady_clock::time_point deadline) override;
  // One clock reading for the events of a batch (a source's read): 2 % of flowmarkd's CPU on
  // the pipe -> firefly bench went to reading the clock per event.
  void begin_batch() override;
  void end_batch() noexcept override { batch_now_.reset(); }

  // Ends the flows idle for longer than the timeout (end events, counted as expired).
  // The service calls it from a timer; returns how many were ended.
  std::size_t expire();
  // End events for every live flow (never dropped for a full queue), then drains and stops
  // every backend.
  void shutdown();
  // Deferred wake-ups: a backend's worker asleep is woken once per burst — by wake_backends(),
  // which the service runs after each event-loop wake-up — rather than for every event.
  void set_deferred_wakeups(bool on) noexcept { defer_wakeups_ = on; }
  void wake_backends();
  // Asks every backend to reopen its files (SIGHUP).
  void reopen();
  // Blocks until every queue is empty (tests, benchmarks).
  void wait_idle();

  std::size_t live_flows() const noexcept { return flows_.size(); }

 private:
  using FlowId = FlowTable::Id;
  struct Worker;
  struct Room;
  void push_event(const FlowEvent& event);
  void room_ready();
  void check_stalled();
  void arm_stall_timer();
  // `holders`: the flow's FlowTable::holders (updated), or null for an event of no live flow.
  void fan_out(const FlowEvent& e, std::uint32_t* holders);
  FlowId insert_live(const FlowKey& key, const FlowEvent& e, Micros now);
  void erase_live(FlowId id);
  void touch(FlowId id, Micros now);
  // Ends a live flow on the pipeline's own account (expired, evicted, replaced, shutdown).
  void end_live(FlowId id, scitags::EndReason reason, Micros end_time);
  void remember_ended(const FlowKey& key, Micros start_time);
  // The start time of a flow of this key ended lately, if any.
  std::optional<Micros> ended_lately(const FlowKey& key) const;
  void stop_workers();
  void rewrite_public(FlowEvent& e) const;
  bool classify(FlowEvent& e) const;
  std::atomic<std::uint64_t>& outcome(std::string_view name);

  ServiceContext& context_;
  PipelineOptions options_;
  // The live flows, by the key their sources gave (before public addresses): the one table of
  // what is live. Backends get what it knows of a flow with each event (start time,
  // classification, usage); those that keep per-flow state of their own key it by FlowKey.
  // Flat (flow_table.hpp): a 64-byte entry, ~70 bytes a flow, one cache miss a lookup.
  FlowTable flows_;
  std::uint32_t used_slots_ = 0;  // Worker::slot_bit of the running backends
  // Flows ended lately: their key's 64-bit hash → start time, in two flat generations of
  // 65,536 (open addressing, 4 MB in all), the older dropped when the newer fills up —
  // bounded whatever arrives, and one probe in a compact array per lookup (node-based maps
  // here were a sixth of the loop thread's time under a flood of new flows). Each generation
  // is fresh zeroed pages (mmap), resident only as far as entries are written: no
  // memory while no flow ends.
  class RecentEnds {
   public:
    RecentEnds();
    void add(std::uint64_t fingerprint, Micros start_time);
    std::optional<Micros> find(std::uint64_t fingerprint) const noexcept;

   private:
    struct Slot {
      std::uint64_t fingerprint;  // 0: empty
      Micros start_time;
    };
    struct Free {
      void operator()(Slot* p) const noexcept;
    };
    using Generation = std::unique_ptr<Slot[], Free>;
    static Generation fresh();
    static constexpr std::size_t kGeneration = 65536;
    static constexpr std::size_t kSlots = 2 * kGeneration;  // a power of two: load ≤ 1/2
    Generation gen_[2];
    std::size_t count_[2] = {0, 0};  // entries in each generation
  };
  RecentEnds ended_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<std::uint64_t>* live_gauge_;
  std::atomic<std::uint64_t>* pushed_;
  std::atomic<std::uint64_t>* forwarded_;
  std::atomic<std::uint64_t>* duplicate_;
  std::atomic<std::uint64_t>* unclassified_;
  std::atomic<std::uint64_t>* end_unknown_;
  std::atomic<std::uint64_t>* expired_;
  std::atomic<std::uint64_t>* evicted_;
  std::atomic<std::uint64_t>* duplicate_end_;
  std::atomic<std::uint64_t>* stale_;
  std::atomic<std::uint64_t>* replaced_;
  LogLimiter evict_log_{1, std::chrono::seconds(10), LogLimiter::Report::kLine,
                        [](std::uint64_t n) { return fmt::format("{} more flow(s) evicted", n); }};
  // One unclassified flow every 10 s on stderr; the count of the others before the next.
  LogLimiter unclassified_log_{
      1, std::chrono::seconds(10), LogLimiter::Report::kLine,
      [](std::uint64_t n) { return fmt::format("{} more unclassified flow(s) not shown", n); }};
  // Back-pressure: how many queues are full, shared with the workers (which free it).
  std::shared_ptr<Room> room_;
  EventLoop* loop_ = nullptr;
  UniqueFd room_fd_;  // eventfd: a worker freed room while a source waits
  std::optional<EventLoop::TimerId> stall_timer_;
  std::unordered_map<std::uint64_t, std::function<void()>> room_waiters_;
  std::uint64_t next_wait_id_ = 1;
  std::optional<Micros> batch_now_;  // between begin_batch() and end_batch(): their time
  bool lossless_ = false;            // the event being pushed is from a lossless source
  bool shutting_down_ = false;
  bool defer_wakeups_ = false;  // shutdown(): the end events bypass the queue capacity
};

// A FlowSink in front of the pipeline for one source: counts its events by state
// (flowmark_source_events_total{source, state}).
class SourceTap : public FlowSink {
 public:
  SourceTap(std::string source, Counters& counters, FlowSink& next);
  void push(const FlowEvent& event) override;
  void push_lossless(const FlowEvent& event) override;
  bool has_room() const noexcept override { return next_.has_room(); }
  std::uint64_t when_room(std::function<void()> resume) override {
    return next_.when_room(std::move(resume));
  }
  void cancel_room_wait(std::uint64_t id) noexcept override { next_.cancel_room_wait(id); }
  bool wait_for_room(std::stop_token stop,
                     std::chrono::steady_clock::time_point deadline) override {
    return next_.wait_for_room(std::move(stop), deadline);
  }
  void begin_batch() override { next_.begin_batch(); }
  void end_batch() noexcept override { next_.end_batch(); }

 private:
  FlowSink& next_;
  std::atomic<std::uint64_t>* by_state_[3];
};

}  // namespace flowmark::daemon
