#include "flowmark/core/netlink_walk.hpp"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

using namespace flowmark;

namespace {

// Messages of the given lengths one after the other, each at its aligned place, types 1, 2...
std::vector<char> datagram(std::initializer_list<std::uint32_t> lengths, std::size_t size) {
  std::vector<char> d(size + 64, 0);
  std::size_t at = 0;
  std::uint16_t type = 1;
  for (const std::uint32_t len : lengths) {
    nlmsghdr h{};
    h.nlmsg_len = len;
    h.nlmsg_type = type++;
    std::memcpy(d.data() + at, &h, sizeof h);
    at += NLMSG_ALIGN(len);
  }
  d.resize(size);
  return d;
}

std::vector<std::uint16_t> walk(const std::vector<char>& d) {
  alignas(nlmsghdr) std::array<char, 512> buf{};
  std::memcpy(buf.data(), d.data(), d.size());
  std::vector<std::uint16_t> types;
  std::size_t left = d.size();
  for (auto* h = netlink_first<const nlmsghdr>(buf.data()); netlink_ok(h, left);
       h = netlink_next(h, left))
    types.push_back(h->nlmsg_type);
  return types;
}

}  // namespace

TEST(NetlinkWalk, EveryWholeMessageInOrder) {
  EXPECT_EQ(walk(datagram({20, 36, 16}, 72)), (std::vector<std::uint16_t>{1, 2, 3}));
}

// The last message not padded to 4 bytes (17 bytes at the end of the datagram): read, and
// the walk ends there (an unsigned length given to NLMSG_NEXT wraps and reads on).
TEST(NetlinkWalk, UnpaddedLastMessageEndsTheWalk) {
  EXPECT_EQ(walk(datagram({20, 17}, 37)), (std::vector<std::uint16_t>{1, 2}));
}

TEST(NetlinkWalk, MessagesLongerThanTheDatagramOrShorterThanAHeaderAreNotRead) {
  EXPECT_EQ(walk(datagram({20, 100}, 60)), (std::vector<std::uint16_t>{1}));
  EXPECT_EQ(walk(datagram({20, 8}, 40)), (std::vector<std::uint16_t>{1}));
  EXPECT_EQ(walk(datagram({16}, 10)), (std::vector<std::uint16_t>{}));
}
