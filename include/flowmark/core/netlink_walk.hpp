// flowmark core — walking the messages of one netlink datagram.
//
// glibc's NLMSG_OK/NLMSG_NEXT want a signed length (NLMSG_OK compares it with the unsigned
// nlmsg_len: a sign-compare warning) and, given an unsigned one, NLMSG_NEXT wraps it when the
// last message is not padded to the alignment. These take the bytes left as a size_t and
// never step past them:
//
//   std::size_t left = received;
//   for (auto* h = netlink_first<const nlmsghdr>(buf); netlink_ok(h, left);
//        h = netlink_next(h, left)) { ... }
#pragma once

#include <linux/netlink.h>

#include <cstddef>
#include <type_traits>

namespace flowmark {

template <class H>  // nlmsghdr or const nlmsghdr
H* netlink_first(auto* buffer) noexcept {
  return reinterpret_cast<H*>(buffer);
}

// A whole message at h: its header and nlmsg_len bytes within the `left` bytes.
inline bool netlink_ok(const nlmsghdr* h, std::size_t left) noexcept {
  return left >= sizeof(nlmsghdr) && h->nlmsg_len >= sizeof(nlmsghdr) && h->nlmsg_len <= left;
}

// The message after h (which passed netlink_ok); `left` loses h's aligned length (at most
// what is left).
template <class H>
H* netlink_next(H* h, std::size_t& left) noexcept {
  std::size_t step = NLMSG_ALIGN(h->nlmsg_len);
  if (step > left) step = left;
  left -= step;
  using Byte = std::conditional_t<std::is_const_v<H>, const char, char>;
  return reinterpret_cast<H*>(reinterpret_cast<Byte*>(h) + step);
}

}  // namespace flowmark
