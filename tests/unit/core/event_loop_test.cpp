#include "flowmark/core/event_loop.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>

#include <gtest/gtest.h>

#include <csignal>

namespace flowmark {
namespace {

using std::chrono::milliseconds;

TEST(EventLoop, OneShotTimerFiresOnceAndStops) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  int fired = 0;
  ASSERT_TRUE(loop->add_timer(milliseconds(1), {}, [&] {
    ++fired;
    loop->stop();
  }));
  ASSERT_TRUE(loop->run());
  EXPECT_EQ(fired, 1);
  // The timer removed itself: another turn of the loop sees nothing.
  ASSERT_TRUE(loop->run_once(milliseconds(5)));
  EXPECT_EQ(fired, 1);
}

TEST(EventLoop, PeriodicTimerAndCancel) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  int ticks = 0;
  auto id = loop->add_timer(milliseconds(1), milliseconds(1), [&] {
    if (++ticks == 3) loop->stop();
  });
  ASSERT_TRUE(id.has_value());
  ASSERT_TRUE(loop->run());
  EXPECT_EQ(ticks, 3);
  loop->cancel_timer(*id);
  ASSERT_TRUE(loop->run_once(milliseconds(5)));
  EXPECT_EQ(ticks, 3);
}

TEST(EventLoop, FdReadiness) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  UniqueFd ev(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_TRUE(ev);
  std::uint64_t seen = 0;
  ASSERT_TRUE(loop->add_fd(ev.get(), EPOLLIN, [&](std::uint32_t events) {
    EXPECT_TRUE(events & EPOLLIN);
    ASSERT_EQ(::read(ev.get(), &seen, sizeof seen), static_cast<ssize_t>(sizeof seen));
    loop->stop();
  }));
  std::uint64_t one = 7;
  ASSERT_EQ(::write(ev.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
  ASSERT_TRUE(loop->run());
  EXPECT_EQ(seen, 7u);
  loop->remove_fd(ev.get());
  ASSERT_EQ(::write(ev.get(), &one, sizeof one), static_cast<ssize_t>(sizeof one));
  ASSERT_TRUE(loop->run_once(milliseconds(0)));  // removed: the handler does not run
  EXPECT_EQ(seen, 7u);
}

TEST(EventLoop, SignalsArriveThroughTheLoop) {
  int got = 0;
  {
    auto loop = EventLoop::create();
    ASSERT_TRUE(loop.has_value());
    ASSERT_TRUE(loop->on_signal(SIGUSR1, [&](int s) {
      got = s;
      loop->stop();
    }));
    ASSERT_EQ(::raise(SIGUSR1), 0);  // blocked: stays pending until the loop reads it
    ASSERT_TRUE(loop->run());
  }
  EXPECT_EQ(got, SIGUSR1);
  sigset_t mask;
  pthread_sigmask(SIG_SETMASK, nullptr, &mask);
  EXPECT_FALSE(sigismember(&mask, SIGUSR1));  // the old mask is back
}

TEST(EventLoop, AddFdErrorIsAValue) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  auto r = loop->add_fd(-1, EPOLLIN, [](std::uint32_t) {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), std::error_code(EBADF, std::system_category()));
}

}  // namespace
}  // namespace flowmark
