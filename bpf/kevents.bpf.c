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
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "kevents.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FM_AF_INET 2
#define FM_AF_INET6 10
#define FM_TCP_ESTABLISHED 1
#define FM_IPPROTO_TCP 6

/* Set by user space before load (frozen afterwards: the verifier sees the constants). */
const volatile __u8 filter_ports = 0;
const volatile __u64 port_set[FLOWMARK_KEV_PORT_WORDS] = {};
const volatile __u64 cgroup_id = 0; /* 0: every cgroup */
/* The network namespace of the service (its inode number): the tracepoint fires for the
 * sockets of every namespace of the host, and a service reports its own. 0: all. */
const volatile __u32 netns_ino = 0;

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

/* BPF_PROG's hidden `ctx` parameter is not used. */
#pragma clang diagnostic ignored "-Wunused-parameter"

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(flowmark_tcp_state, struct sock *sk, int oldstate, int newstate) {
  __u8 kind;
  if (newstate == FM_TCP_ESTABLISHED)
    kind = FLOWMARK_KEV_START;
  else if (oldstate == FM_TCP_ESTABLISHED)
    kind = FLOWMARK_KEV_END;
  else
    return 0;
  if (BPF_CORE_READ(sk, sk_protocol) != FM_IPPROTO_TCP) return 0;

  struct flowmark_kev_counters *c = counters();
  if (!c) return 0;
  if (netns_ino && BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) != netns_ino) {
    c->skipped_netns++;
    return 0;
  }
  __u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
  if (family != FM_AF_INET && family != FM_AF_INET6) {
    c->skipped_family++;
    return 0;
  }
  __u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
  __u16 dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
  if (filter_ports && !port_wanted(sport) && !port_wanted(dport)) {
    c->skipped_port++;
    return 0;
  }
  if (cgroup_id && !cgroup_wanted(sk)) {
    c->skipped_cgroup++;
    return 0;
  }

  struct flowmark_kevent *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
  if (!e) {
    c->ring_full++;
    return 0;
  }
  __builtin_memset(e, 0, sizeof(*e));
  e->ktime_ns = bpf_ktime_get_ns();
  e->cookie = bpf_get_socket_cookie(sk);
  e->family = family;
  e->kind = kind;
  e->oldstate = (__u8)oldstate;
  e->newstate = (__u8)newstate;
  e->sport = sport;
  e->dport = dport;
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
