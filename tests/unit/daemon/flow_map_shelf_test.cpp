// FlowMapShelf: how a flowlabel backend lends its kernel flow map to the kernel-events
// source (ServiceContext::flow_maps). Any fds serve here: the shelf only duplicates them.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "flowmark/daemon/plugin.hpp"

namespace flowmark::daemon {
namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  Pipe() { EXPECT_EQ(::pipe2(fd, O_CLOEXEC), 0); }
  ~Pipe() {
    for (int f : fd)
      if (f >= 0) ::close(f);
  }
};

bool same_file(int a, int b) {
  return ::fcntl(a, F_GETFD) >= 0 && ::fcntl(b, F_GETFD) >= 0 &&
         ::fcntl(a, F_GETFL) == ::fcntl(b, F_GETFL) && a != b;
}

TEST(FlowMapShelf, LendsDuplicatesOfTheFirstBackendsMapUntilWithdrawn) {
  FlowMapShelf shelf;
  EXPECT_FALSE(shelf.take());
  {
    Pipe z, a, hs;
    shelf.offer("z", z.fd[0], z.fd[1], 10, 0, hs.fd[0]);
    shelf.offer("a", a.fd[0], a.fd[1], 20, 1, hs.fd[1]);
  }  // the lenders closed their fds: the shelf's copies stay open
  EXPECT_EQ(shelf.size(), 2u);
  auto m = shelf.take();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->backend, "a");  // the first by name, whatever the order of the offers
  EXPECT_EQ(m->capacity, 20u);
  EXPECT_EQ(m->ext_header, 1);
  ASSERT_TRUE(m->flows && m->fill && m->handshakes);
  EXPECT_GE(::fcntl(m->flows.get(), F_GETFD), 0);
  auto again = shelf.take();  // each taker gets fds of its own
  ASSERT_TRUE(again);
  EXPECT_TRUE(same_file(m->flows.get(), again->flows.get()));

  shelf.withdraw("a");
  m = shelf.take();
  ASSERT_TRUE(m);
  EXPECT_EQ(m->backend, "z");
  shelf.withdraw("z");
  shelf.withdraw("unknown");
  EXPECT_FALSE(shelf.take());
  EXPECT_EQ(shelf.size(), 0u);
  EXPECT_GE(::fcntl(again->flows.get(), F_GETFD), 0);  // a taker's fds outlive the offer
}

}  // namespace
}  // namespace flowmark::daemon
