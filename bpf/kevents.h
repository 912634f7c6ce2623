/* flowmark — the layout shared by the TCP state-change program (bpf/kevents.bpf.c) and user
 * space (src/bpf/kernel_events.cpp, which static_asserts the sizes).
 *
 * The BPF side includes vmlinux.h (which defines the __u8.. types); user space includes
 * <linux/types.h>. Fixed-width fields only, every hole an explicit pad.
 */
#ifndef FLOWMARK_BPF_KEVENTS_H
#define FLOWMARK_BPF_KEVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define FLOWMARK_KEV_START 1 /* the connection entered ESTABLISHED */
#define FLOWMARK_KEV_END 2   /* the connection left ESTABLISHED (once per connection) */

/* One ring-buffer record. Addresses in network order (IPv4 in the first 4 bytes), ports in
 * host order. */
struct flowmark_kevent {
  __u64 cookie;         /* the socket's cookie: unique per socket while the host runs */
  __u64 ktime_ns;       /* CLOCK_MONOTONIC of the state change */
  __u64 bytes_acked;    /* tcp_sock: bytes sent and acknowledged */
  __u64 bytes_received; /* tcp_sock: bytes received */
  __u8 saddr[16];       /* local */
  __u8 daddr[16];       /* remote */
  __u16 sport;          /* local */
  __u16 dport;          /* remote */
  __u16 family;         /* AF_INET or AF_INET6 */
  __u8 kind;            /* FLOWMARK_KEV_* */
  __u8 oldstate;        /* TCP_* of the kernel (include/net/tcp_states.h) */
  __u8 newstate;
  __u8 pad[7];
};

/* Per-CPU counters (one array entry). */
struct flowmark_kev_counters {
  __u64 starts;         /* start records submitted */
  __u64 ends;           /* end records submitted */
  __u64 ring_full;      /* records lost: the ring buffer was full */
  __u64 skipped_port;   /* changes of connections outside the port filter */
  __u64 skipped_cgroup; /* changes of connections outside the cgroup filter */
  __u64 skipped_family; /* neither IPv4 nor IPv6 */
  __u64 skipped_netns;  /* sockets of another network namespace */
  /* Handshake marking (the flowlabel backend's map filled from the kernel): */
  __u64 premarked;        /* flows put in the map before their first packet */
  __u64 premark_full;     /* not put: the map was at its capacity */
  __u64 premark_skipped;  /* not put: destination internal, private, or not IPv6 */
  __u64 premark_removed;  /* entries of ours removed when their socket closed */
  __u64 handshake_marked; /* passive side: a SYN received, its flow put in the handshake map
                           * before the SYN-ACK left (flowlabel.h) */
};

/* The destinations never marked from the kernel (internal_networks, and with skip_private
 * the non-global ranges): an LPM trie keyed by IPv6 prefix. */
struct flowmark_kev_net_key {
  __u32 prefixlen;
  __u8 addr[16];
};
#define FLOWMARK_KEV_MAX_SKIP_NETS 1024

/* The port filter: a bitmap of 65536 bits, in the program's read-only data. */
#define FLOWMARK_KEV_PORT_WORDS (65536 / 64)
/* How deep a cgroup filter reaches: the socket's cgroup or one of its ancestors up to
 * this level. */
#define FLOWMARK_KEV_MAX_CGROUP_LEVEL 32

#endif
