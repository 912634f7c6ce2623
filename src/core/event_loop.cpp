#include "flowmark/core/event_loop.hpp"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#include <array>
#include <csignal>
#include <vector>

#include <fmt/format.h>

namespace flowmark {

struct EventLoop::State {
  UniqueFd epoll;
  UniqueFd signal_fd;
  sigset_t signals{};
  sigset_t old_mask{};
  bool mask_saved = false;
  std::unordered_map<int, SignalHandler> signal_handlers;
  std::unordered_map<int, std::shared_ptr<FdHandler>> fds;
  std::unordered_map<int, bool> one_shot;  // timer fd -> fires once
  std::vector<std::function<void()>> after_dispatch;
  ~State() {
    if (mask_saved) pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    for (auto& [fd, shot] : one_shot) ::close(fd);
  }
};

EventLoop::EventLoop(std::unique_ptr<State> s) : s_(std::move(s)) {}
EventLoop::EventLoop(EventLoop&&) noexcept = default;
EventLoop& EventLoop::operator=(EventLoop&&) noexcept = default;
EventLoop::~EventLoop() = default;

Result<EventLoop> EventLoop::create() {
  auto s = std::make_unique<State>();
  s->epoll.reset(epoll_create1(EPOLL_CLOEXEC));
  if (!s->epoll) return fail_errno("epoll_create1");
  sigemptyset(&s->signals);
  return EventLoop(std::move(s));
}

Result<void> EventLoop::add_fd(int fd, std::uint32_t events, FdHandler handler) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(s_->epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return fail_errno(fmt::format("epoll_ctl(ADD, fd {})", fd));
  s_->fds[fd] = std::make_shared<FdHandler>(std::move(handler));
  return {};
}

void EventLoop::remove_fd(int fd) noexcept {
  epoll_ctl(s_->epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
  s_->fds.erase(fd);
}

namespace {
itimerspec to_itimerspec(std::chrono::nanoseconds first, std::chrono::nanoseconds period) {
  using std::chrono::duration_cast;
  using std::chrono::seconds;
  if (first <= std::chrono::nanoseconds::zero()) first = std::chrono::nanoseconds(1);
  itimerspec its{};
  its.it_value.tv_sec = duration_cast<seconds>(first).count();
  its.it_value.tv_nsec = (first % seconds(1)).count();
  its.it_interval.tv_sec = duration_cast<seconds>(period).count();
  its.it_interval.tv_nsec = (period % seconds(1)).count();
  return its;
}
}  // namespace

Result<EventLoop::TimerId> EventLoop::add_timer(std::chrono::nanoseconds first,
                                                std::chrono::nanoseconds period,
                                                TimerHandler handler) {
  UniqueFd tfd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!tfd) return fail_errno("timerfd_create");
  const int id = tfd.get();
  FM_TRY_VOID(rearm_timer(id, first, period));
  const bool once = period <= std::chrono::nanoseconds::zero();
  FM_TRY_VOID(add_fd(id, EPOLLIN, [this, id, h = std::move(handler)](std::uint32_t) {
    std::uint64_t expirations = 0;
    if (::read(id, &expirations, sizeof expirations) != sizeof expirations) return;
    auto it = s_->one_shot.find(id);
    const bool fire_once = it != s_->one_shot.end() && it->second;
    auto keep = h;  // cancel_timer below destroys the closure holding h
    if (fire_once) cancel_timer(id);
    keep();
  }));
  s_->one_shot[id] = once;
  tfd.release();
  return id;
}

Result<void> EventLoop::rearm_timer(TimerId id, std::chrono::nanoseconds first,
                                    std::chrono::nanoseconds period) {
  auto its = to_itimerspec(first, period);
  if (timerfd_settime(id, 0, &its, nullptr) != 0) return fail_errno("timerfd_settime");
  return {};
}

void EventLoop::cancel_timer(TimerId id) noexcept {
  if (!s_) return;  // a moved-from loop has no timers
  auto it = s_->one_shot.find(id);
  if (it == s_->one_shot.end()) return;
  s_->one_shot.erase(it);
  remove_fd(id);
  ::close(id);
}

Result<void> EventLoop::on_signal(int signo, SignalHandler handler) {
  sigaddset(&s_->signals, signo);
  sigset_t old;
  if (pthread_sigmask(SIG_BLOCK, &s_->signals, &old) != 0) return fail_errno("pthread_sigmask");
  if (!s_->mask_saved) {
    s_->old_mask = old;
    s_->mask_saved = true;
  }
  const bool first = !s_->signal_fd;
  int fd = signalfd(first ? -1 : s_->signal_fd.get(), &s_->signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) return fail_errno("signalfd");
  s_->signal_handlers[signo] = std::move(handler);
  if (first) {
    s_->signal_fd.reset(fd);
    FM_TRY_VOID(add_fd(fd, EPOLLIN, [this](std::uint32_t) {
      signalfd_siginfo info{};
      while (::read(s_->signal_fd.get(), &info, sizeof info) == sizeof info) {
        auto it = s_->signal_handlers.find(static_cast<int>(info.ssi_signo));
        if (it != s_->signal_handlers.end()) it->second(static_cast<int>(info.ssi_signo));
      }
    }));
  }
  return {};
}

Result<void> EventLoop::run_once(std::chrono::milliseconds timeout) {
  std::array<epoll_event, 64> events{};
  int n = epoll_wait(s_->epoll.get(), events.data(), static_cast<int>(events.size()),
                     static_cast<int>(timeout.count()));
  if (n < 0) {
    if (errno == EINTR) return {};
    return fail_errno("epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    auto it = s_->fds.find(events[i].data.fd);
    if (it == s_->fds.end()) continue;  // removed by an earlier callback in this batch
    auto handler = it->second;          // keeps the handler alive while it runs
    (*handler)(events[i].events);
  }
  for (const auto& hook : s_->after_dispatch) hook();
  return {};
}

void EventLoop::after_dispatch(std::function<void()> hook) {
  s_->after_dispatch.push_back(std::move(hook));
}

Result<void> EventLoop::run() {
  stopped_ = false;
  while (!stopped_) FM_TRY_VOID(run_once(std::chrono::milliseconds(-1)));
  return {};
}

}  // namespace flowmark
