// The `flowlabel` backend (flowd's ebpf): the Scitags label written into the IPv6 flow label
// of every packet of a marked flow, in the kernel, by the TC program of flowmark_bpf.
//
// [backend.label]
// type = "flowlabel"
// interfaces = []          # egress interfaces to mark on; [] = those with a global IPv6
//                          # address (flowd's NETWORK_INTERFACE)
// capacity = 100000        # flows in the kernel map; beyond it new flows are refused, counted
// ext_header = "none"      # also carry the ids in a new IPv6 extension header:
//                          # "hop-by-hop" or "destination-options" (spec §4; MTU checked)
//
// A start (or ongoing) event puts the flow in the map with its label, whose 5 entropy bits
// are drawn once per flow; an end event removes it at once. IPv4 flows cannot carry a flow
// label: they are counted (not_ipv6) and skipped. The kernel's per-packet counters and the
// map's fill are copied into the service counters every second, so the Prometheus backend
// exports them. At exit only the hooks this backend added are removed.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_flowlabel_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
