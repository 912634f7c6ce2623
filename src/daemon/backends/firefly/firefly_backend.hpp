// The `firefly` backend (flowd's udp_firefly): one UDP datagram per event to the flow's
// destination at port 10514, and copies to any number of collectors — IPv4 or IPv6
// unicast, or a multicast group (one datagram reaches every collector of a site).
//
// [backend.fireflies]
// type = "firefly"
// to_destination = true          # send to the flow's destination (flowd's behaviour)
// port = 10514                   # destination port at the flow's destination
// collectors = ["192.0.2.10", "[2001:db8::10]:10514", "239.1.2.3"]
// ttl = 1                        # for multicast collectors
// interface = ""                 # outgoing interface for multicast collectors
// application = "flowmark"       # context.application in the JSON
// hostname = ""                  # syslog host name ("" = the service's)
// syslog_header = true           # false: the JSON document alone
// ongoing_interval = 0           # seconds; > 0: an `ongoing` firefly per live flow this often
//                                # (1 when ongoing_shape is given and this is not)
// ongoing_shape = "flowmark"     # the TCP statistics of ongoing fireflies ("netlink" object):
//                                # "flowmark" (ours), or flowd-go's enrichmentMode forms "lean"
//                                # and "compatible" (scitags/enrichment.hpp)
// tcp_info = false               # add the flow's TCP state ("netlink" object, from sock_diag)
//                                # to start/end fireflies (flowd's UDP_FIREFLY_NETLINK)
//
// Sends that fail (ICMP port unreachable reported as ECONNREFUSED, no route, a firewall)
// are counted by destination kind and reason (flowmark_firefly_sends_total) and never stop
// the backend.
#pragma once

#include <functional>
#include <optional>

#include "flowmark/daemon/factory.hpp"
#include "flowmark/scitags/enrichment.hpp"

namespace flowmark::daemon {

// Reads the current TCP state and usage of a live flow (netlink sock_diag in the service);
// used for the `ongoing` fireflies. Called on the backend's thread.
using FlowInfoReader = std::function<std::optional<scitags::TcpInfo>(const FlowEvent&)>;
// The same, every field of struct tcp_info (ongoing_shape "lean" / "compatible").
using FlowDetailReader = std::function<std::optional<scitags::TcpDetail>(const FlowEvent&)>;

Result<void> register_firefly_backend(BackendFactories& factories,
                                      const FlowInfoReader& reader = {},
                                      const FlowDetailReader& detail_reader = {});

}  // namespace flowmark::daemon
