// systemd's service notification protocol (sd_notify(3)), spoken directly: a datagram of
// "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET, and the watchdog period from
// $WATCHDOG_USEC/$WATCHDOG_PID. Not through libsystemd: the service used nothing else of it, and
// linking it mapped libsystemd with libgcrypt, libgpg-error, liblzma, libzstd, liblz4 and libcap
// into every flowmarkd — ~0.9 MB of its resident memory.
//
//   systemd_notify("READY=1");                  // nothing happens outside systemd
//   if (auto us = systemd_watchdog_usec()) ...  // ping with "WATCHDOG=1" every us/2
#pragma once

#include <cstdint>
#include <string_view>

namespace flowmark::daemon {

// Sends `state` to $NOTIFY_SOCKET ("/path" or "@abstract"). Returns false when there is no such
// socket (not run by systemd, or Type= is not notify) or the send failed; a service goes on
// either way, as with sd_notify.
bool systemd_notify(std::string_view state) noexcept;

// The watchdog period systemd expects pings within (WatchdogSec=), in microseconds; 0 when the
// watchdog is off or meant for another process ($WATCHDOG_PID is not ours).
std::uint64_t systemd_watchdog_usec() noexcept;

}  // namespace flowmark::daemon
