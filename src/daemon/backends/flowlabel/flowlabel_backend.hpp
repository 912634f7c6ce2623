// The `flowlabel` backend (flowd's ebpf): the Scitags label written into the IPv6 flow label
// of every packet of a marked flow, in the kernel, by the TC program of flowmark_bpf.
//
// [backend.label]
// type = "flowlabel"
// interfaces = []          # egress interfaces to mark on; [] = those with a global IPv6
//                          # address at start (flowd's NETWORK_INTERFACE); "auto" = those,
//                          # followed through rtnetlink (hooked / released as they come and go)
// capacity = 100000        # flows in the kernel map; beyond it new flows are refused, counted
// ext_header = "none"      # also carry the ids in a new IPv6 extension header:
//                          # "hop-by-hop" or "destination-options" (spec §4; MTU checked)
// strategy = "label"       # or flowd-go's "hopByHop", "destination", "hopByHopDestination":
//                          # the header(s) only, label untouched (not with ext_header)
// [[backend.label.rule]]   # marks flows without an entry, in the kernel (LPM trie)
// destination = "::/0"     # IPv6 prefix; "::/0" without ports = perfSONAR / matchAll mode
// ports = "1000-2000"      # destination ports (default all)
// experiment = 2
// activity = 9
//
// A start (or ongoing) event puts the flow in the map with its label, whose 5 entropy bits
// are drawn once per flow; an end event removes it at once. A flow's entry wins over the
// rules; a rule's label takes its entropy from a hash of the 5-tuple. IPv4 flows cannot
// carry a flow label: they are counted (not_ipv6) and skipped. The kernel's per-packet
// counters (marked by entry / by rule) and the map's fill are copied into the service
// counters every second (every 200 ms with "auto", whose tick also reads rtnetlink), so the
// Prometheus backend exports them. At exit only the hooks this backend added are removed.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_flowlabel_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
