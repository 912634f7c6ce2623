// flowmark::daemon — the seams of the service: sources find flows and push FlowEvents into
// a FlowSink (the pipeline); backends receive every event the pipeline lets through, each on
// its own worker thread behind a bounded queue. Each kind is created by name from its
// config section through a factory (see factory.hpp).
//
//   class MySource : public Source {
//     Result<void> start(EventLoop& loop, FlowSink& sink) override {
//       loop.add_fd(fd_, EPOLLIN, [&](auto) { sink.push(read_event()); });  ...
//   };
#pragma once

#include <fcntl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/collector/site_map.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon {

using scitags::FlowEvent;

// Where sources deliver. Called on the service's event-loop thread only. Times left 0 are
// filled by the pipeline (start → now; end → now, and the start time it remembers);
// experiment/activity left 0 are classified by the rules.
//
// Back-pressure. A source whose sender can be slowed (a FIFO writer, an HTTP client) is
// lossless: it pushes with push_lossless() — never dropped for a full backend queue — and
// reads no more input while has_room() is false, waiting for when_room() to call it back, so
// that its sender waits (in the kernel's pipe buffer, in its HTTP request) instead of losing
// events. A source whose sender cannot be slowed (UDP fireflies) pushes with push(): what does
// not fit a backend's queue is dropped for that backend and counted (dropped_queue_full).
// A backend whose queue stays full without taking an event for [service] drain_timeout is
// given up as stalled: lossless sources stop waiting for it (its events are then dropped and
// counted) until it takes events again, so one stuck backend never holds them back for good.
class FlowSink {
 public:
  virtual ~FlowSink() = default;
  virtual void push(const FlowEvent& event) = 0;
  virtual void push_lossless(const FlowEvent& event) { push(event); }
  // True when every backend's queue has room (any thread).
  virtual bool has_room() const noexcept { return true; }
  // Calls `resume` once, later, on the loop thread, when there is room again (or the
  // pipeline shuts down). Returns an id for cancel_room_wait (0: `resume` was already run).
  virtual std::uint64_t when_room(std::function<void()> resume) {
    resume();
    return 0;
  }
  virtual void cancel_room_wait(std::uint64_t /*id*/) noexcept {}
  // The events pushed between begin_batch() and end_batch() came in at one instant (one read
  // of a source): they are given one time — the clock is read once, at begin_batch() — where
  // the pipeline fills a time or notes a flow's activity. Optional; not nested.
  virtual void begin_batch() {}
  virtual void end_batch() noexcept {}
  // For a source that works on threads of its own (not the loop's): blocks until there is
  // room (true), or until `stop` is requested, `deadline` passes or the pipeline shuts down
  // (false). Never on the loop thread: signals, timers and the other sources would wait.
  virtual bool wait_for_room(std::stop_token /*stop*/,
                             std::chrono::steady_clock::time_point /*deadline*/) {
    return true;
  }
};

// A flowlabel backend's kernel flow map, lent to another part of the same process: the
// kernel-events source has the kernel put connections in it before their first packet
// leaves (bpf/kevents.bpf.c). Plain fds, so that this header needs no BPF library.
struct LentFlowMap {
  std::string backend;  // the lender's name
  UniqueFd flows;       // the LRU hash of flows (bpf/flowlabel.h)
  UniqueFd fill;        // its one-entry fill counter, kept by every writer
  std::size_t capacity = 0;
  std::uint8_t ext_header = 0;  // the backend's bpf::ExtHeader, for the entries it did not put
  UniqueFd handshakes;          // the LRU hash of the passive side's SYN-ACKs (bpf/flowlabel.h)
};

// Where backends offer their flow map and sources take it, whatever order they start in
// (today backends start first). Any thread.
class FlowMapShelf {
 public:
  // Keeps duplicates of the fds until withdraw(): the lender may close its own.
  void offer(std::string backend, int flows_fd, int fill_fd, std::size_t capacity,
             std::uint8_t ext_header, int handshakes_fd) {
    LentFlowMap m{std::move(backend),
                  UniqueFd(::fcntl(flows_fd, F_DUPFD_CLOEXEC, 0)),
                  UniqueFd(::fcntl(fill_fd, F_DUPFD_CLOEXEC, 0)),
                  capacity,
                  ext_header,
                  UniqueFd(::fcntl(handshakes_fd, F_DUPFD_CLOEXEC, 0))};
    if (!m.flows || !m.fill || !m.handshakes)
      return;  // out of fds: nothing lent, the handshake stays unmarked
    std::lock_guard lock(mu_);
    maps_.push_back(std::move(m));
    std::sort(maps_.begin(), maps_.end(),
              [](const LentFlowMap& a, const LentFlowMap& b) { return a.backend < b.backend; });
  }
  void withdraw(std::string_view backend) noexcept {
    std::lock_guard lock(mu_);
    std::erase_if(maps_, [&](const LentFlowMap& m) { return m.backend == backend; });
  }
  // The map of the first backend by name (with duplicated fds, the caller's to close).
  std::optional<LentFlowMap> take() const {
    std::lock_guard lock(mu_);
    if (maps_.empty()) return std::nullopt;
    const auto& m = maps_.front();
    LentFlowMap out{m.backend,
                    UniqueFd(::fcntl(m.flows.get(), F_DUPFD_CLOEXEC, 0)),
                    UniqueFd(::fcntl(m.fill.get(), F_DUPFD_CLOEXEC, 0)),
                    m.capacity,
                    m.ext_header,
                    UniqueFd(::fcntl(m.handshakes.get(), F_DUPFD_CLOEXEC, 0))};
    if (!out.flows || !out.fill || !out.handshakes) return std::nullopt;
    return out;
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return maps_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<LentFlowMap> maps_;
};

// What every part may use. Lives as long as the service (the registry is replaced on a
// reload: parts read it through the reference at the time of use, on the loop thread).
struct ServiceContext {
  Counters& counters;
  const scitags::Registry* registry = nullptr;
  std::string hostname;  // the host name fireflies carry
  // The site map ([[site]] tables and [service] sites_file): kept by the parts that read it
  // (collector backends), swapped in place by a reload. Never null in the service.
  std::shared_ptr<collector::SiteMapHandle> sites = std::make_shared<collector::SiteMapHandle>();
  // Kernel flow maps lent between parts (flowlabel backend → kernel-events source).
  std::shared_ptr<FlowMapShelf> flow_maps = std::make_shared<FlowMapShelf>();
};

class Source {
 public:
  virtual ~Source() = default;
  // Set-up errors are values (the service refuses to start and names the source).
  virtual Result<void> start(EventLoop& loop, FlowSink& sink) = 0;
  // Idempotent; after it returns the source pushes nothing more.
  virtual void stop() noexcept = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // On the service thread, before any event (open sockets, bind the HTTP port...).
  virtual Result<void> start() = 0;
  // On the backend's worker thread, one event at a time. Never throws: a failure is
  // counted (and logged rate-limited) by the backend itself.
  virtual void on_event(const FlowEvent& event) noexcept = 0;
  // After each batch of on_event calls the worker took from its queue (worker thread): a
  // backend that gathers its output (datagrams for one sendmmsg) sends it now.
  virtual void flush() noexcept {}
  // Periodic work on the worker thread (e.g. `ongoing` fireflies); 0 = never.
  virtual std::chrono::milliseconds tick_interval() const noexcept { return {}; }
  virtual void on_tick() noexcept {}
  // SIGHUP: reopen files for log rotation (worker thread).
  virtual void reopen() noexcept {}
  // After the queue is drained (worker thread); flush and close.
  virtual void stop() noexcept = 0;
  // True: events reach this backend with private source addresses rewritten to the public
  // ones ([public_address]) — what fireflies announce. A backend that acts on this host's
  // packets (the flow label) needs the real tuple and says false.
  virtual bool wants_public_addresses() const noexcept { return true; }
};

}  // namespace flowmark::daemon
