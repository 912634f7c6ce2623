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

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "flowmark/collector/site_map.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon {

using scitags::FlowEvent;

// Where sources deliver. Called on the service's event-loop thread only. Times left 0 are
// filled by the pipeline (start → now; end → now, and the start time it remembers);
// experiment/activity left 0 are classified by the rules.
class FlowSink {
 public:
  virtual ~FlowSink() = default;
  virtual void push(const FlowEvent& event) = 0;
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
