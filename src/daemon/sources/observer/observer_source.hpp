// The `observer` source: the passive observer on a live interface; what is seen on the wire
// is announced. A new TCP or UDP flow gives a start event, its record (completed by FIN/RST,
// idle, or evicted) an end event with the bytes seen each way as usage. By default events
// carry no experiment: the service's [[rule]]s classify them (or experiment/activity set
// here). With classify = "scitags", a flow's own marks (IPv6 flow label, Scitags option)
// classify it, announced at its first marked packet (flow_announcer.hpp).
//
// [source.wire]
// type = "observer"
// interface = "eth0"
// filter = ""                # BPF filter expression, e.g. "tcp port 443 or udp"
// idle_timeout = 30          # seconds without a packet → the flow ends
// expiry_delay = 1           # seconds a completed flow waits for trailing packets
// max_flows = 1048576
// classify = "rules"         # or "scitags": the flows' marks
// icmp_flows = false         # ICMP errors quoting a flow: also their own flow
// experiment = 0             # fixed classification (absent: rules)
// activity = 0
//
// The capture runs on its own thread; events reach the service's loop through an eventfd.
// Timers run on the packet clock: on a silent link, a flow's end waits for the next packet.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_observer_source(SourceFactories& factories);

}  // namespace flowmark::daemon
