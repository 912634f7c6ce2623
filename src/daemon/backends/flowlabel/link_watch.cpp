#include "daemon/backends/flowlabel/link_watch.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>

#include "flowmark/core/netlink_walk.hpp"

namespace flowmark::daemon {

Result<void> LinkWatch::open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return fail_errno("cannot open a NETLINK_ROUTE socket to follow the interfaces");
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV6_IFADDR;
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&sa), sizeof(sa)) != 0)
    return fail_errno("cannot subscribe to link and IPv6 address changes (rtnetlink)");
  fd_ = std::move(fd);
  return {};
}

bool LinkWatch::changed() noexcept {
  if (!fd_) return false;
  bool any = false;
  alignas(nlmsghdr) char buf[16384];
  while (true) {
    const ssize_t n = ::recv(fd_.get(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // overflowed: some notifications were lost
        any = true;
        continue;
      }
      return any;  // EAGAIN: drained
    }
    if (n == 0) return any;
    auto len = static_cast<std::size_t>(n);
    for (auto* h = netlink_first<nlmsghdr>(buf); netlink_ok(h, len); h = netlink_next(h, len)) {
      switch (h->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK:
        case RTM_NEWADDR:
        case RTM_DELADDR: any = true; break;
        default: break;
      }
    }
  }
}

}  // namespace flowmark::daemon
