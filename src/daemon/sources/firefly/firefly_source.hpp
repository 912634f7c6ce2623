// The `firefly` source (flowd's firefly plugin): fireflies received on UDP port 10514
// become flow events — a relay or a site collector that marks what others announce.
//
// [source.fireflies]
// type = "firefly"
// bind = "0.0.0.0"          # "" / absent: every address of both families
// port = 10514
// group = ""                # join this multicast group (IPv4 or IPv6)
// interface = ""            # for the join (needed for link-scoped IPv6 groups)
// allow = ["10.0.0.0/8"]    # sender networks accepted (empty: any); others counted
// lenient_start_time = false  # accept flowd's end events with a null start-time
// threads = 1               # > 1: that many sockets on the port (SO_REUSEPORT), each read and
//                           # decoded on a thread of its own; the kernel spreads senders over
//                           # them by address and port (unicast only)
//
// Every rejected datagram is counted by reason
// (flowmark_source_rejected_total{source, reason}) and logged rate-limited.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_firefly_source(SourceFactories& factories);

}  // namespace flowmark::daemon
