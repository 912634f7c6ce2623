// flowmark::core — a single-threaded epoll event loop with timers and signals.
//
// File descriptors, timers (timerfd, CLOCK_MONOTONIC) and signals (signalfd; the signal
// is blocked in the calling thread while a handler is registered) each get a callback.
// Callbacks run on the loop's thread; any of them may call stop().
//
//   FM_TRY(auto loop, EventLoop::create());
//   loop.add_fd(sock, EPOLLIN, [&](std::uint32_t) { drain(sock); });
//   loop.add_timer(std::chrono::seconds(5), {}, [&] { loop.stop(); });   // one-shot
//   loop.on_signal(SIGINT, [&](int) { loop.stop(); });
//   loop.run();
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>

#include "flowmark/core/fd.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark {

class EventLoop {
 public:
  using FdHandler = std::function<void(std::uint32_t events)>;
  using TimerHandler = std::function<void()>;
  using SignalHandler = std::function<void(int signo)>;
  using TimerId = int;  // the timerfd

  static Result<EventLoop> create();
  EventLoop(EventLoop&&) noexcept;
  EventLoop& operator=(EventLoop&&) noexcept;
  ~EventLoop();

  Result<void> add_fd(int fd, std::uint32_t events, FdHandler handler);
  void remove_fd(int fd) noexcept;

  // Fires after `first`, then every `period` (zero period: once). Returns an id for
  // cancel_timer. A one-shot timer removes itself after firing.
  Result<TimerId> add_timer(std::chrono::nanoseconds first, std::chrono::nanoseconds period,
                            TimerHandler handler);
  // Re-arms an existing timer (e.g. an idle timeout pushed back on activity).
  Result<void> rearm_timer(TimerId id, std::chrono::nanoseconds first,
                           std::chrono::nanoseconds period = {});
  void cancel_timer(TimerId id) noexcept;

  // Blocks `signo` for this thread and delivers it through the loop. The previous
  // signal mask is restored when the loop is destroyed.
  Result<void> on_signal(int signo, SignalHandler handler);

  // Runs `hook` after the handlers of each wake-up, before the loop waits again: work that
  // is cheaper done once per burst than once per event (waking other threads).
  void after_dispatch(std::function<void()> hook);

  // Runs until stop() is called. Errors only for a failing epoll_wait.
  Result<void> run();
  // Handles whatever is ready within `timeout` (or returns at once with zero), then
  // returns. For callers with their own loop.
  Result<void> run_once(std::chrono::milliseconds timeout);
  void stop() noexcept { stopped_ = true; }
  bool stopped() const noexcept { return stopped_; }

 private:
  struct State;
  explicit EventLoop(std::unique_ptr<State> s);
  std::unique_ptr<State> s_;
  bool stopped_ = false;
};

}  // namespace flowmark
