/* flowmark — the layout shared by the TC flow-label program (bpf/flowlabel.bpf.c) and user
 * space (src/bpf/, include/flowmark/bpf/flowlabel.hpp, which static_asserts the sizes).
 *
 * Plain C with <linux/types.h> only, so that clang -target bpf and g++ read it alike.
 * Every field is naturally aligned and every hole is an explicit zeroed pad: the hash
 * map compares keys byte by byte, so user space must zero the pads too.
 */
#ifndef FLOWMARK_BPF_FLOWLABEL_H
#define FLOWMARK_BPF_FLOWLABEL_H

#ifndef __VMLINUX_H__ /* the kernel-events program includes this header after vmlinux.h */
#include <linux/types.h>
#endif

/* Capacity the user-space side allows by default; the LRU map is created somewhat larger
 * (see src/bpf/flowlabel.cpp) so that the kernel never evicts a live flow on its own. */
#define FLOWMARK_FLOWS_DEFAULT_CAPACITY 100000

/* The handshake map: flows of the passive side's SYN-ACKs, put by the kernel-events program
 * (bpf/kevents.bpf.c) when a SYN arrives, before the SYN-ACK is sent: a separate LRU hash of
 * this many entries, so that a SYN flood evicts only its own entries (and the oldest
 * handshakes'), never a flow of `flows`. Consulted only for TCP packets with SYN set whose
 * flow is not in `flows`. User space sizes it (the flowlabel backend's handshake_capacity);
 * this is the default. */
#define FLOWMARK_HANDSHAKE_ENTRIES 8192

/* The flow: the full 5-tuple of the packet as it leaves the host. Addresses and ports in
 * network byte order (as on the wire, so the program copies without swapping). */
struct flowmark_flow_key {
  __u8 src_addr[16];
  __u8 dst_addr[16];
  __u16 src_port;
  __u16 dst_port;
  __u8 protocol; /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 pad[3];   /* zero */
};

/* flowmark_flow_value.ext_header: also carry the Scitags option (spec §4) in an IPv6
 * extension header inserted after the base header. */
#define FLOWMARK_EXT_NONE 0
#define FLOWMARK_EXT_HOP_BY_HOP 1
#define FLOWMARK_EXT_DEST_OPTIONS 2
/* Both: a hop-by-hop header, then a destination-options header (flowd-go's
 * hopByHopDestination), each with the option: 16 bytes inserted. */
#define FLOWMARK_EXT_BOTH 3
#define FLOWMARK_EXT_MASK 0x03
/* Flag in ext_header: leave the flow label as it is (flowd-go's hopByHop, destination and
 * hopByHopDestination strategies carry the ids in the extension headers only). */
#define FLOWMARK_EXT_KEEP_LABEL 0x80
/* The option: type 0x1E (skip if unknown, not changed en route), 3 data bytes:
 * experiment high, experiment low, activity. */
#define FLOWMARK_EXT_OPTION_TYPE 0x1E
#define FLOWMARK_EXT_OPTION_LEN 3

/* What to write. `label` holds the 20-bit flow label in its low bits (host order); the TC
 * program ignores the bits above. FLOWMARK_LABEL_FROM_KERNEL marks an entry that the
 * kernel-events program (bpf/kevents.bpf.c) put in the map before a connection's first
 * packet: it removes such entries itself when the socket closes. */
#define FLOWMARK_LABEL_FROM_KERNEL 0x80000000u
struct flowmark_flow_value {
  __u32 label;
  __u16 experiment; /* for the extension-header option only */
  __u8 activity;    /* for the extension-header option only */
  __u8 ext_header;  /* FLOWMARK_EXT_* */
};

/* Rules: for an IPv6 TCP/UDP packet whose flow is not in `flows`, a longest-prefix lookup
 * of its destination address in the LPM trie `rules`. The value of a prefix lists the port
 * ranges of every rule that covers it, most specific prefix first (user space folds the
 * shorter prefixes' rules into the longer ones, so one lookup decides): the first slot
 * whose range holds the destination port gives the mark. No slot matches: not marked. */
#define FLOWMARK_RULE_PREFIXES_MAX 1024
#define FLOWMARK_RULE_SLOTS 16

struct flowmark_rule_key {
  __u32 prefixlen; /* 0..128 (the LPM trie's own field) */
  __u8 addr[16];   /* the destination prefix, host bits zero */
};

struct flowmark_rule_slot {
  __u16 port_first; /* destination ports, host order, inclusive */
  __u16 port_last;
  __u32 label;      /* experiment and activity bits; the entropy bits are zero: the
                     * program adds 5 bits from a hash of the 5-tuple, so that a flow keeps
                     * one label and different flows spread */
  __u16 experiment; /* for the extension-header option only */
  __u8 activity;    /* for the extension-header option only */
  __u8 ext_header;  /* FLOWMARK_EXT_* */
};

struct flowmark_rule_value {
  __u32 count; /* slots in use, 1..FLOWMARK_RULE_SLOTS */
  __u32 pad;   /* zero */
  struct flowmark_rule_slot slots[FLOWMARK_RULE_SLOTS];
};

/* Per-CPU counters (one array entry, index 0); user space sums the CPUs. */
struct flowmark_counters {
  __u64 marked;      /* IPv6 TCP/UDP packet of a flow in the map: marked */
  __u64 not_in_map;  /* IPv6 TCP/UDP packet of a flow not in the map, no rule: untouched */
  __u64 not_ipv6;    /* IPv4, ARP, anything else at layer 3: untouched */
  __u64 parse_error; /* truncated or malformed headers, too many extension headers */
  __u64 not_tcp_udp; /* IPv6 but ICMPv6, ESP, ..., or a non-first fragment (no ports) */
  /* The extension-header option (flows with ext_header set, packets marked above): */
  __u64 ext_added;        /* inserted */
  __u64 ext_too_big;      /* not inserted: the packet would exceed the device MTU */
  __u64 ext_skipped;      /* not inserted: extension headers or VLAN tags already in the
                           * frame, or the kernel refused to grow the packet (UDP GSO) */
  __u64 marked_rule;      /* IPv6 TCP/UDP packet of a flow not in the map, marked by a rule */
  __u64 marked_handshake; /* SYN-ACK (TCP, SYN set) of a flow in the handshake map: marked */
};

#endif /* FLOWMARK_BPF_FLOWLABEL_H */
