// The flowlabel backend's view of interface changes (interfaces = "auto"): a NETLINK_ROUTE
// socket subscribed to link and IPv6 address notifications, read without blocking from the
// backend's periodic hook. It only says "something changed": the backend then lists the
// interfaces with a global IPv6 address again and hooks or releases the difference.
#pragma once

#include "flowmark/core/fd.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

class LinkWatch {
 public:
  // Subscribes to RTMGRP_LINK | RTMGRP_IPV6_IFADDR.
  Result<void> open();
  // Reads every pending notification; true when a link or IPv6 address was added, changed
  // or removed (or notifications were lost: the socket's buffer overflowed).
  bool changed() noexcept;

 private:
  UniqueFd fd_;
};

}  // namespace flowmark::daemon
