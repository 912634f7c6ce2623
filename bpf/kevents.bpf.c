/* flowmark — TCP connections entering and leaving ESTABLISHED, reported through a ring
 * buffer to the `kernel-events` source of flowmarkd (src/daemon/sources/kernel_events/).
 *
 * Hook: the BTF-enabled tracepoint sock:inet_sock_set_state (tp_btf), which fires for
 * every TCP state change of every socket, active and passive, whatever the process. Its
 * arguments are typed kernel pointers, so the socket fields are read with CO-RE
 * relocations against a vmlinux.h generated at build time (bpftool btf dump): the object
 * runs unchanged on other kernels with BTF. The tracepoint's stable format struct (the
 * classic `tracepoint/` attach) would have spared the vmlinux.h for the tuple, but not for
 * what this program also wants from the socket itself: the byte counts of the tcp_sock,
 * the socket's cookie and its cgroup.
 *
 * One start per connection: a change INTO ESTABLISHED (from SYN_SENT on the active side,
 * from SYN_RECV on the passive side). One end: a change OUT OF ESTABLISHED (to FIN_WAIT1,
 * CLOSE_WAIT, or CLOSE on a reset); a connection never re-enters ESTABLISHED.
 *
 * Filters here, before a record is reserved: network namespace (the service's own), ports
 * (either end, a bitmap) and cgroup (the socket's cgroup or an ancestor). Networks are
 * filtered in user space.
 *
 * Handshake marking (when the service also runs a flowlabel backend, and the source has a
 * fixed experiment and activity): the backend lends its flow map (bpf_map__reuse_fd before
 * load), and this object puts the flow in it from the kernel, so that the TC program labels
 * the connection's packets from the first one:
 * - a cgroup sock_ops program at BPF_SOCK_OPS_TCP_CONNECT_CB, on the active side: called
 *   at the start of tcp_connect(), which builds and sends the SYN, after tcp_v6_connect()
 *   has chosen the source address and port. (The tracepoint's change to SYN_SENT comes
 *   before inet6_hash_connect() picks an ephemeral port: its source port is still 0 there,
 *   so it cannot key the flow. fentry/tcp_connect would do, but some kernels refuse BPF
 *   trampolines: the test machine's 6.18 answers EPERM to fentry/tcp_connect.)
 * - the same program at BPF_SOCK_OPS_RWND_INIT for a request socket, on the passive side: a
 *   SYN arrived, the SYN-ACK is not built yet. The flow goes to the backend's handshake map
 *   (a small LRU of its own, FLOWMARK_HANDSHAKE_ENTRIES: a SYN flood evicts handshakes,
 *   never flows), which the TC program consults for segments with SYN set only.
 * - the change to ESTABLISHED, on the passive side (and for active connections whose entry
 *   is missing): before the first data segment; the flow moves from the handshake map to
 *   the flow map with the SYN-ACK's label.
 * - the change to CLOSE (a refused or timed-out connect, a reset, the end of TIME_WAIT's
 *   full socket) removes an entry this program put, whether or not user space saw the flow.
 * An entry carries FLOWMARK_LABEL_FROM_KERNEL above its 20 label bits; user space keeps it
 * when the start event comes (it inserts only when absent) and erases it at the end as its
 * own. Both writers count the entries in one shared counter (flows_fill), held to the
 * backend's capacity. Destinations of internal_networks and (skip_private) non-global ones
 * are looked up in an LPM trie and left alone, as user space does for the announcements.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "flowlabel.h"
#include "kevents.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FM_AF_INET 2
#define FM_AF_INET6 10
#define FM_TCP_ESTABLISHED 1
#define FM_TCP_SYN_SENT 2
#define FM_TCP_CLOSE 7
#define FM_IPPROTO_TCP 6

/* Set by user space before load (frozen afterwards: the verifier sees the constants). */
const volatile __u8 filter_ports = 0;
const volatile __u64 port_set[FLOWMARK_KEV_PORT_WORDS] = {};
const volatile __u64 cgroup_id = 0; /* 0: every cgroup */
/* The network namespace of the service (its inode number): the tracepoint fires for the
 * sockets of every namespace of the host, and a service reports its own. 0: all. */
const volatile __u32 netns_ino = 0;
/* The same namespace by its cookie (SO_NETNS_COOKIE), for the request sockets of the passive
 * side's handshake: bpf_get_netns_cookie() is what a sock_ops program can read of them. */
const volatile __u64 netns_cookie = 0;

/* Handshake marking, set by user space when a flowlabel backend lends its map. */
const volatile __u8 premark = 0;
const volatile __u64 premark_capacity = 0;
const volatile __u32 premark_labels[32] = {}; /* the 20-bit label for each entropy value */
const volatile __u16 premark_experiment = 0;
const volatile __u8 premark_activity = 0;
const volatile __u8 premark_ext_header = 0;
const volatile __u8 premark_skip_nets = 0; /* skip_nets holds prefixes */

/* The flowlabel backend's map and fill counter (bpf_map__reuse_fd); without a backend,
 * placeholders of one entry that the verifier never sees used (premark is 0). */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 1);
  __type(key, struct flowmark_flow_key);
  __type(value, struct flowmark_flow_value);
} flows SEC(".maps");

/* The backend's handshake map (flowlabel.h): the SYN-ACKs of the passive side. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, 1);
  __type(key, struct flowmark_flow_key);
  __type(value, struct flowmark_flow_value);
} handshakes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(map_flags, BPF_F_MMAPABLE);
  __type(key, __u32);
  __type(value, __u64);
} flows_fill SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FLOWMARK_KEV_MAX_SKIP_NETS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct flowmark_kev_net_key);
  __type(value, __u8);
} skip_nets SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024); /* resized by user space */
} events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct flowmark_kev_counters);
} kev_counters SEC(".maps");

static __always_inline struct flowmark_kev_counters *counters(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&kev_counters, &zero);
}

static __always_inline int port_wanted(__u16 port) {
  return (port_set[port >> 6] >> (port & 63)) & 1;
}

static __always_inline int cgroup_wanted(const struct sock *sk) {
  struct cgroup *cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
  if (!cg) return 0;
  if (BPF_CORE_READ(cg, kn, id) == cgroup_id) return 1;
  int level = BPF_CORE_READ(cg, level);
  for (int i = 0; i < FLOWMARK_KEV_MAX_CGROUP_LEVEL; i++) {
    if (i >= level) break;
    struct cgroup *anc = NULL;
    if (bpf_core_read(&anc, sizeof(anc), &cg->ancestors[i]) || !anc) break;
    if (BPF_CORE_READ(anc, kn, id) == cgroup_id) return 1;
  }
  return 0;
}

/* The socket is one the service reports: its namespace, family, ports, cgroup. Skips are
 * counted when `count` (state changes; not the connect hook, which would count twice). */
static __always_inline int wanted(const struct sock *sk, struct flowmark_kev_counters *c,
                                  int count) {
  if (netns_ino && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != netns_ino) {
    if (count) c->skipped_netns++;
    return 0;
  }
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  if (family != FM_AF_INET && family != FM_AF_INET6) {
    if (count) c->skipped_family++;
    return 0;
  }
  __u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
  __u16 dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (filter_ports && !port_wanted(sport) && !port_wanted(dport)) {
    if (count) c->skipped_port++;
    return 0;
  }
  if (cgroup_id && !cgroup_wanted(sk)) {
    if (count) c->skipped_cgroup++;
    return 0;
  }
  return 1;
}

/* The flow map's key of the socket's packets as they leave: 0 unless IPv6 on the wire. */
static __always_inline int flow_key_of(const struct sock *sk, struct flowmark_flow_key *key) {
  if (BPF_CORE_READ(sk, __sk_common.skc_family) != FM_AF_INET6) return 0;
  bpf_core_read(key->src_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
  bpf_core_read(key->dst_addr, 16, &sk->__sk_common.skc_v6_daddr);
  /* ::ffff:a.b.c.d: an IPv4 connection of an IPv6 socket, no flow label. */
  int mapped = key->dst_addr[10] == 0xFF && key->dst_addr[11] == 0xFF;
#pragma unroll
  for (int i = 0; i < 10; i++) mapped = mapped && key->dst_addr[i] == 0;
  if (mapped) return 0;
  /* inet_sport, not skc_num: at the change to CLOSE the tracepoint fires after
   * inet_put_port() has released the local port and zeroed skc_num. Network order both. */
  key->src_port = BPF_CORE_READ((const struct inet_sock *)sk, inet_sport);
  key->dst_port = BPF_CORE_READ(sk, __sk_common.skc_dport);
  key->protocol = FM_IPPROTO_TCP;
  return 1;
}

static __always_inline __u64 *fill_counter(void) {
  __u32 zero = 0;
  return bpf_map_lookup_elem(&flows_fill, &zero);
}

/* Puts the socket's flow in the backend's map, unless it is there (an earlier hook, or user
 * space) or its destination is one never marked (counted when `count_skip`: once per
 * connection, though an active one passes here at connect and at ESTABLISHED). `passive`:
 * the change SYN_RECV → ESTABLISHED, whose SYN-ACK may have an entry in the handshake map. */
static __always_inline void premark_flow(const struct sock *sk, struct flowmark_kev_counters *c,
                                         int count_skip, int passive) {
  struct flowmark_flow_key key = {};
  if (!flow_key_of(sk, &key)) {
    if (count_skip) c->premark_skipped++;
    return;
  }
  if (premark_skip_nets) {
    struct flowmark_kev_net_key net = {.prefixlen = 128};
    __builtin_memcpy(net.addr, key.dst_addr, 16);
    if (bpf_map_lookup_elem(&skip_nets, &net)) {
      if (count_skip) c->premark_skipped++;
      return;
    }
  }
  /* Passive side: the SYN-ACK's entry gives the label (one label for the whole flow) and
   * makes room in the handshake map. */
  struct flowmark_flow_value value = {};
  struct flowmark_flow_value *hs = passive ? bpf_map_lookup_elem(&handshakes, &key) : NULL;
  if (hs) {
    value = *hs;
    bpf_map_delete_elem(&handshakes, &key);
  }
  if (bpf_map_lookup_elem(&flows, &key)) return;
  __u64 *fill = fill_counter();
  if (!fill) return;
  if (*fill >= premark_capacity) {
    c->premark_full++;
    return;
  }
  if (!hs) {
    value.label = premark_labels[bpf_get_prandom_u32() & 31] | FLOWMARK_LABEL_FROM_KERNEL;
    value.experiment = premark_experiment;
    value.activity = premark_activity;
    value.ext_header = premark_ext_header;
  }
  if (bpf_map_update_elem(&flows, &key, &value, BPF_NOEXIST) == 0) {
    __sync_fetch_and_add(fill, 1);
    c->premarked++;
  }
}

/* Removes the socket's entry if this program put it (a flow user space also ended is gone
 * already; one user space put stays theirs). */
static __always_inline void unmark_flow(const struct sock *sk, struct flowmark_kev_counters *c) {
  struct flowmark_flow_key key = {};
  if (!flow_key_of(sk, &key)) return;
  struct flowmark_flow_value *v = bpf_map_lookup_elem(&flows, &key);
  if (!v || !(v->label & FLOWMARK_LABEL_FROM_KERNEL)) return;
  if (bpf_map_delete_elem(&flows, &key) == 0) {
    __u64 *fill = fill_counter();
    if (fill) __sync_fetch_and_add(fill, (__u64)-1);
    c->premark_removed++;
  }
}

/* Passive side: a SYN arrived at a listener; `ops` is the request socket that tcp_conn_request()
 * is filling (not a full socket: ops->sk is NULL, the 4-tuple is read from the context).
 * BPF_SOCK_OPS_RWND_INIT is called from tcp_openreq_init_rwin(), before the SYN-ACK is built
 * and sent — with SYN cookies too, where BPF_SOCK_OPS_TIMEOUT_INIT is not. `reply` stays 0:
 * the kernel's own window. The listener's cgroup is the one the program is attached to (or
 * below it): the cgroup filter holds by construction. The flow goes to the handshake map,
 * a bounded LRU of its own, never to `flows`: a SYN is not a connection yet. */
static __always_inline void handshake_flow(struct bpf_sock_ops *ops) {
  if (ops->family != FM_AF_INET6) return;
  if (netns_cookie && bpf_get_netns_cookie(ops) != netns_cookie) return;
  __u16 lport = (__u16)ops->local_port; /* host order */
  /* Network order; sock_ops gives it in the upper 16 bits (little-endian hosts), a kernel
   * that ever changes that to the lower ones is read right too. */
  __u32 rport = ops->remote_port;
  __u16 rport_be = (rport & 0xFFFF) ? (__u16)rport : (__u16)(rport >> 16);
  if (filter_ports && !port_wanted(lport) && !port_wanted(__builtin_bswap16(rport_be))) return;
  struct flowmark_flow_key key = {};
  __u32 *src = (__u32 *)key.src_addr, *dst = (__u32 *)key.dst_addr;
  src[0] = ops->local_ip6[0];
  src[1] = ops->local_ip6[1];
  src[2] = ops->local_ip6[2];
  src[3] = ops->local_ip6[3];
  dst[0] = ops->remote_ip6[0];
  dst[1] = ops->remote_ip6[1];
  dst[2] = ops->remote_ip6[2];
  dst[3] = ops->remote_ip6[3];
  /* ::ffff:a.b.c.d: IPv4 on the wire, no label. */
  if (dst[0] == 0 && dst[1] == 0 && dst[2] == __builtin_bswap32(0xFFFF)) return;
  if (premark_skip_nets) {
    struct flowmark_kev_net_key net = {.prefixlen = 128};
    __builtin_memcpy(net.addr, key.dst_addr, 16);
    if (bpf_map_lookup_elem(&skip_nets, &net)) return;
  }
  key.src_port = __builtin_bswap16(lport);
  key.dst_port = rport_be;
  key.protocol = FM_IPPROTO_TCP;
  struct flowmark_flow_value value = {};
  value.label = premark_labels[bpf_get_prandom_u32() & 31] | FLOWMARK_LABEL_FROM_KERNEL;
  value.experiment = premark_experiment;
  value.activity = premark_activity;
  value.ext_header = premark_ext_header;
  if (bpf_map_update_elem(&handshakes, &key, &value, BPF_ANY) == 0) {
    struct flowmark_kev_counters *c = counters();
    if (c) c->handshake_marked++;
  }
}

/* Active side: a cgroup sock_ops program (attached to the configured cgroup, or the root of
 * the cgroup v2 hierarchy). BPF_SOCK_OPS_TCP_CONNECT_CB is called at the start of
 * tcp_connect(), before it builds and sends the SYN; the address and port are chosen by then.
 * The socket is reached as a BTF pointer (bpf_skc_to_tcp_sock) so that the same filters
 * (namespace, ports, cgroup) and key apply as on the tracepoint. The passive side's request
 * sockets go to handshake_flow(). Returns 1 (sock_ops: "ok"). */
SEC("sockops")
int flowmark_tcp_connect(struct bpf_sock_ops *ops) {
  if (!premark) return 1;
  if (ops->op == BPF_SOCK_OPS_RWND_INIT && !ops->is_fullsock) {
    handshake_flow(ops);
    return 1;
  }
  if (ops->op != BPF_SOCK_OPS_TCP_CONNECT_CB) return 1;
  struct bpf_sock *bs = ops->sk;
  if (!bs) return 1;
  struct tcp_sock *tp = bpf_skc_to_tcp_sock(bs);
  if (!tp) return 1;
  const struct sock *sk = (const struct sock *)tp;
  struct flowmark_kev_counters *c = counters();
  if (!c || !wanted(sk, c, 0)) return 1;
  premark_flow(sk, c, 1, 0);
  return 1;
}

/* BPF_PROG's hidden `ctx` parameter is not used. */
#pragma clang diagnostic ignored "-Wunused-parameter"

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowmark_tcp_state, struct sock *sk, int oldstate, int newstate) {
  __u8 kind;
  if (newstate == FM_TCP_ESTABLISHED)
    kind = FLOWMARK_KEV_START;
  else if (oldstate == FM_TCP_ESTABLISHED)
    kind = FLOWMARK_KEV_END;
  else if (premark && newstate == FM_TCP_CLOSE)
    kind = 0; /* only to remove an entry of ours (a refused or timed-out connect) */
  else
    return 0;
  if (BPF_CORE_READ(sk, sk_protocol) != FM_IPPROTO_TCP) return 0;

  struct flowmark_kev_counters *c = counters();
  if (!c) return 0;
  if (premark && newstate == FM_TCP_CLOSE &&
      (!netns_ino || BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) == netns_ino))
    unmark_flow(sk, c);
  if (!kind || !wanted(sk, c, 1)) return 0;
  if (premark && kind == FLOWMARK_KEV_START)
    premark_flow(sk, c, oldstate != FM_TCP_SYN_SENT, oldstate != FM_TCP_SYN_SENT);

  struct flowmark_kevent *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    c->ring_full++;
    return 0;
  }
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  __builtin_memset(e, 0, sizeof(*e));
  e->ktime_ns = bpf_ktime_get_ns();
  e->cookie = bpf_get_socket_cookie(sk);
  e->family = family;
  e->kind = kind;
  e->oldstate = (__u8)oldstate;
  e->newstate = (__u8)newstate;
  e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
  e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (family == FM_AF_INET) {
    bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
    bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
  } else {
    bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
    bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
  }
  const struct tcp_sock *tp = (const struct tcp_sock *)sk;
  e->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
  e->bytes_received = BPF_CORE_READ(tp, bytes_received);
  if (kind == FLOWMARK_KEV_START)
    c->starts++;
  else
    c->ends++;
  bpf_ringbuf_submit(e, 0);
  return 0;
}
