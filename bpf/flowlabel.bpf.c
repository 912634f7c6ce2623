/* flowmark — the Scitags flow-label marker: a TC program for the clsact egress hook.
 *
 * For every outgoing IPv6 TCP or UDP packet whose flow is in the `flows` map, it writes
 * the 20-bit label of the map entry into the IPv6 header. Everything else passes
 * untouched. User space (src/bpf/flowlabel.cpp) fills the map: it encodes the label
 * (experiment, activity and the per-flow entropy) with flowmark::scitags, so this program
 * only copies 20 bits.
 *
 * Choices, and why:
 * - Key: the full 5-tuple (source and destination address, both ports, protocol), not
 *   flowd-go's destination address + ports. A host with several source addresses (or
 *   several containers behind one) can have two flows to the same destination with the
 *   same ports, and TCP and UDP may share port numbers; a shorter key merges them under
 *   one label. The cost is a 40-byte key instead of 20 bytes: one hash over 40 bytes,
 *   measured in bench/bpf_flowlabel_bench.cpp to be far inside the time budget.
 * - The map is an LRU hash (as flowd-go's), but user space never lets it evict: it is
 *   created with headroom above the capacity user space admits, and a set() beyond the
 *   capacity fails and is counted (flowd-go's LRU dropped live flows silently). The LRU
 *   remains a safety net only.
 * - The traffic class, ECN included, is preserved: only the low 4 bits of byte 1 and
 *   bytes 2-3 of the IPv6 header change. flowd-go writes whole bytes and clears the low
 *   half of the traffic class (both ECN bits and two DSCP bits).
 * - Extension headers are walked (hop-by-hop, routing, fragment, destination options,
 *   AH; at most 8): flowd-go marks only TCP directly after the base header. A non-first
 *   fragment carries no ports and cannot be matched: counted as not_tcp_udp.
 * - Ethernet with up to two 802.1Q / 802.1ad tags in the frame. (Tags offloaded to the
 *   NIC live in skb metadata, not in the frame, and need no parsing.)
 * - Return value TC_ACT_UNSPEC ("no verdict"): the packet passes, and any filter after
 *   ours on the same hook still runs. TC_ACT_OK would end the filter chain and silently
 *   disable the site's own egress filters of a later priority.
 * - Headers: the Linux UAPI headers and libbpf's bpf_helpers.h, no vmlinux.h. A TC program
 *   reads packet bytes and the stable __sk_buff context only, so it needs no CO-RE
 *   relocation, and the build does not depend on the build machine's kernel BTF.
 * - Optionally (per flow) the Scitags option also goes into a new hop-by-hop or
 *   destination-options header (spec §4), if the grown packet fits the device MTU; see
 *   fm_add_ext_header for when it is not inserted. Off by default: middleboxes often drop
 *   packets with extension headers.
 * - Headers not in the linear part of the skb are pulled in once (bpf_skb_pull_data) and
 *   the parse is retried; then a packet too short for its headers is a parse error.
 * - Rules (flowd-go's matchAll / perfSONAR mode, and more): a packet whose flow is not in
 *   `flows` is looked up by destination address in the LPM trie `rules`; the prefix found
 *   lists port ranges (its own rules' and those of every shorter prefix covering it,
 *   folded in by user space), the first range holding the destination port gives the
 *   experiment and activity bits. No map entry per flow. The 5 entropy bits come from a
 *   hash of the 5-tuple, not from a random number: every packet of a flow gets the same
 *   label (a label that changes mid-flow would break ECMP hashing and reordering-free
 *   delivery), different flows spread. A per-flow entry always wins over a rule.
 * - Handshakes of the passive side: a TCP segment with SYN set (a SYN-ACK) whose flow is not
 *   in `flows` is looked up in `handshakes`, a small LRU hash that the kernel-events program
 *   fills when a SYN arrives (before the SYN-ACK is built); after a miss there, the rules.
 *   Other packets pay a flag test only. A separate map: a SYN flood evicts its own entries,
 *   never a live flow of `flows`.
 * - flowd-go's strategies: the label (default), or only extension headers (hop-by-hop,
 *   destination options, or both) with the label left alone (FLOWMARK_EXT_KEEP_LABEL).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "flowlabel.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  /* User space sets the real size before loading (capacity + headroom). */
  __uint(max_entries, FLOWMARK_FLOWS_DEFAULT_CAPACITY);
  __type(key, struct flowmark_flow_key);
  __type(value, struct flowmark_flow_value);
} flows SEC(".maps");

/* SYN-ACKs of the passive side, put by the kernel-events program before they leave
 * (flowlabel.h); its own bounded LRU, so that a SYN flood never evicts a flow of `flows`. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, FLOWMARK_HANDSHAKE_ENTRIES);
  __type(key, struct flowmark_flow_key);
  __type(value, struct flowmark_flow_value);
} handshakes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, FLOWMARK_RULE_PREFIXES_MAX);
  __uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
  __type(key, struct flowmark_rule_key);
  __type(value, struct flowmark_rule_value);
} rules SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct flowmark_counters);
} counters SEC(".maps");

#define FM_MAX_VLAN_TAGS 2
#define FM_MAX_EXT_HEADERS 8
/* No header we read starts beyond this offset; it bounds the offsets for the verifier. */
#define FM_MAX_HEADER_OFFSET 1024
#define FM_PULL_BYTES 512

#define FM_IS_EXT_HEADER(n)                                                       \
  ((n) == IPPROTO_HOPOPTS || (n) == IPPROTO_ROUTING || (n) == IPPROTO_FRAGMENT || \
   (n) == IPPROTO_DSTOPTS || (n) == IPPROTO_AH)

#define FM_ETH_P_8021Q 0x8100
#define FM_ETH_P_8021AD 0x88A8

enum fm_outcome {
  FM_MARKED,
  FM_MARKED_RULE,
  FM_MARKED_HANDSHAKE,
  FM_NOT_IN_MAP,
  FM_NOT_IPV6,
  FM_PARSE_ERROR,
  FM_NOT_TCP_UDP,
  FM_SHORT, /* headers beyond the linear data: pull and retry */
};

/* Are `n` bytes at `off` inside the linear data? If not, SHORT when the packet has them
 * (a pull helps), PARSE_ERROR when it does not. */
#define FM_NEED(ptr, n, off, end, skb)                                     \
  do {                                                                     \
    if ((void*)(ptr) + (n) > (end))                                        \
      return (__u64)(off) + (n) <= (skb)->len ? FM_SHORT : FM_PARSE_ERROR; \
  } while (0)

/* What fm_mark found for the optional extension header: filled when the flow asks for one. */
struct fm_ext_request {
  __u32 ip_off; /* offset of the IPv6 header */
  __u16 experiment;
  __u8 activity;
  __u8 wanted;     /* the flow asks for the option */
  __u8 kind;       /* FLOWMARK_EXT_HOP_BY_HOP, _DEST_OPTIONS or _BOTH */
  __u8 first_next; /* the base header's next header before we insert */
};

/* 5 entropy bits from a hash of the 5-tuple, in their places in the label (bits 19-18, 8,
 * 1-0; flowmark/core/flow_label_bits.hpp). */
static __always_inline __u32 fm_flow_entropy(const struct flowmark_flow_key* key) {
  const __u32* w = (const __u32*)key;
  __u32 h = 0x811C9DC5u;
#pragma unroll
  for (int i = 0; i < (int)(sizeof(*key) / 4); i++) {
    h ^= w[i];
    h *= 0x01000193u;
    h ^= h >> 15;
  }
  __u32 e = h >> 27;
  return ((e >> 3) & 0x3) << 18 | ((e >> 2) & 0x1) << 8 | (e & 0x3);
}

static __noinline int fm_mark(struct __sk_buff* skb, struct fm_ext_request* ext_req) {
  void* data = (void*)(long)skb->data;
  void* end = (void*)(long)skb->data_end;
  /* Aligned: the entropy hash reads it as 32-bit words (stack accesses must be aligned). */
  struct flowmark_flow_key key __attribute__((aligned(8))) = {};
  __u32 off = 0;

  struct ethhdr* eth = data;
  FM_NEED(eth, sizeof(*eth), 0, end, skb);
  __be16 proto = eth->h_proto;
  off = sizeof(*eth);

#pragma unroll
  for (int i = 0; i < FM_MAX_VLAN_TAGS; i++) {
    if (proto != bpf_htons(FM_ETH_P_8021Q) && proto != bpf_htons(FM_ETH_P_8021AD)) break;
    __u8* tag = data + off; /* TCI (2 bytes), then the inner EtherType */
    FM_NEED(tag, 4, off, end, skb);
    proto = *(__be16*)(tag + 2);
    off += 4;
  }
  if (proto != bpf_htons(ETH_P_IPV6)) return FM_NOT_IPV6;

  struct ipv6hdr* ip6 = data + off;
  FM_NEED(ip6, sizeof(*ip6), off, end, skb);
  if (ip6->version != 6) return FM_PARSE_ERROR;
  __builtin_memcpy(key.src_addr, &ip6->saddr, 16);
  __builtin_memcpy(key.dst_addr, &ip6->daddr, 16);
  __u8 next = ip6->nexthdr;
  off += sizeof(*ip6);

#pragma unroll
  for (int i = 0; i < FM_MAX_EXT_HEADERS; i++) {
    if (!FM_IS_EXT_HEADER(next)) break;
    if (off > FM_MAX_HEADER_OFFSET) return FM_PARSE_ERROR;
    __u8* ext = data + off;
    FM_NEED(ext, 8, off, end, skb); /* every extension header is at least 8 bytes */
    __u32 len;
    if (next == IPPROTO_FRAGMENT) {
      /* Offset in 8-byte units in the top 13 bits: only the first fragment has ports. */
      if (bpf_ntohs(*(__be16*)(ext + 2)) & 0xFFF8) return FM_NOT_TCP_UDP;
      len = 8;
    } else if (next == IPPROTO_AH) {
      len = ((__u32)ext[1] + 2) * 4;
    } else {
      len = ((__u32)ext[1] + 1) * 8;
    }
    next = ext[0];
    off += len;
  }
  if (FM_IS_EXT_HEADER(next)) return FM_PARSE_ERROR; /* more than we walk */
  if (next != IPPROTO_TCP && next != IPPROTO_UDP) return FM_NOT_TCP_UDP;
  if (off > FM_MAX_HEADER_OFFSET) return FM_PARSE_ERROR;

  __u8* l4 = data + off; /* TCP and UDP both start with source port, destination port */
  FM_NEED(l4, 4, off, end, skb);
  __builtin_memcpy(&key.src_port, l4, 2);
  __builtin_memcpy(&key.dst_port, l4 + 2, 2);
  key.protocol = next;

  int outcome = FM_MARKED;
  __u32 label;
  __u16 experiment;
  __u8 activity, ext_header;
  struct flowmark_flow_value* value = bpf_map_lookup_elem(&flows, &key);
  if (!value && next == IPPROTO_TCP) {
    /* A SYN-ACK of the passive side (the only segment with SYN set that leaves before the
     * accepted connection is in `flows`): one flag test for every other miss. */
    FM_NEED(l4, 14, off, end, skb);
    if (l4[13] & 0x02) {
      value = bpf_map_lookup_elem(&handshakes, &key);
      if (value) outcome = FM_MARKED_HANDSHAKE;
    }
  }
  if (value) {
    label = value->label;
    experiment = value->experiment;
    activity = value->activity;
    ext_header = value->ext_header;
  } else {
    struct flowmark_rule_key rk __attribute__((aligned(8))) = {.prefixlen = 128};
    __builtin_memcpy(rk.addr, key.dst_addr, 16);
    struct flowmark_rule_value* rv = bpf_map_lookup_elem(&rules, &rk);
    if (!rv) return FM_NOT_IN_MAP;
    const __u16 port = bpf_ntohs(key.dst_port);
    const __u32 count = rv->count;
    int found = -1;
    /* A bounded loop (the verifier walks it; kernels >= 5.3). */
    for (int i = 0; i < FLOWMARK_RULE_SLOTS; i++) {
      if ((__u32)i >= count) break;
      if (port >= rv->slots[i].port_first && port <= rv->slots[i].port_last) {
        found = i;
        break;
      }
    }
    if (found < 0 || found >= FLOWMARK_RULE_SLOTS) return FM_NOT_IN_MAP;
    const struct flowmark_rule_slot* slot = &rv->slots[found];
    label = slot->label | fm_flow_entropy(&key);
    experiment = slot->experiment;
    activity = slot->activity;
    ext_header = slot->ext_header;
    outcome = FM_MARKED_RULE;
  }
  const __u8 ext_kind = ext_header & FLOWMARK_EXT_MASK;
  if (ext_kind != FLOWMARK_EXT_NONE) {
    ext_req->wanted = 1;
    ext_req->kind = ext_kind;
    ext_req->experiment = experiment;
    ext_req->activity = activity;
    ext_req->ip_off = (__u32)((void*)ip6 - data);
    ext_req->first_next = ip6->nexthdr;
  }
  if (ext_header & FLOWMARK_EXT_KEEP_LABEL) return outcome;
  /* Version (4 bits), traffic class (8 bits), label (20 bits): keep the first 12 bits.
   * A map lookup does not move packet data, so ip6 is still valid. */
  __u8* h = (__u8*)ip6;
  h[1] = (h[1] & 0xF0) | ((label >> 16) & 0x0F);
  h[2] = (label >> 8) & 0xFF;
  h[3] = label & 0xFF;
  return outcome;
}

enum fm_ext_outcome { FM_EXT_ADDED, FM_EXT_TOO_BIG, FM_EXT_SKIPPED };

static __always_inline void fm_write_option(__u8* opt, __u8 next,
                                            const struct fm_ext_request* req) {
  opt[0] = next;
  opt[1] = 0; /* length in 8-byte units, not counting the first 8 */
  opt[2] = FLOWMARK_EXT_OPTION_TYPE;
  opt[3] = FLOWMARK_EXT_OPTION_LEN;
  opt[4] = req->experiment >> 8;
  opt[5] = req->experiment & 0xFF;
  opt[6] = req->activity;
  opt[7] = 0; /* Pad1 */
}

/* Inserts an 8-byte hop-by-hop or destination-options header (or both, 16 bytes: hop-by-hop
 * first, as RFC 8200 orders them) right after the IPv6 base header, holding the Scitags
 * option. Only where that is simple and safe: no extension header yet (hop-by-hop must come
 * first; we never reorder), no VLAN tag in the frame (the kernel inserts room after skb's
 * network header), and the grown packet within the device MTU (bpf_check_mtu; GSO packets
 * are re-segmented with a smaller MSS). */
static __always_inline int fm_add_ext_header(struct __sk_buff* skb,
                                             const struct fm_ext_request* req) {
  if (req->first_next != IPPROTO_TCP && req->first_next != IPPROTO_UDP) return FM_EXT_SKIPPED;
  if (req->ip_off != sizeof(struct ethhdr) || skb->protocol != bpf_htons(ETH_P_IPV6))
    return FM_EXT_SKIPPED;
  const int both = req->kind == FLOWMARK_EXT_BOTH;
  const __u32 grow = both ? 16 : 8;
  __u32 mtu_len = 0;
  if (bpf_check_mtu(skb, 0, &mtu_len, grow, 0) != 0) return FM_EXT_TOO_BIG;
  if (bpf_skb_adjust_room(skb, grow, BPF_ADJ_ROOM_NET, 0) != 0) return FM_EXT_SKIPPED;

  void* data = (void*)(long)skb->data;
  void* end = (void*)(long)skb->data_end;
  struct ipv6hdr* ip6 = data + sizeof(struct ethhdr);
  __u8* opt = (__u8*)(ip6 + 1);
  /* The bounds checks below cannot fail (the room was added): they are for the verifier. */
  if (both) {
    if ((void*)(opt + 16) > end) return FM_EXT_SKIPPED;
    fm_write_option(opt, IPPROTO_DSTOPTS, req);
    fm_write_option(opt + 8, req->first_next, req);
    ip6->nexthdr = IPPROTO_HOPOPTS;
  } else {
    if ((void*)(opt + 8) > end) return FM_EXT_SKIPPED;
    fm_write_option(opt, req->first_next, req);
    ip6->nexthdr = req->kind == FLOWMARK_EXT_HOP_BY_HOP ? IPPROTO_HOPOPTS : IPPROTO_DSTOPTS;
  }
  ip6->payload_len = bpf_htons(bpf_ntohs(ip6->payload_len) + grow);
  return FM_EXT_ADDED;
}

static __always_inline void fm_count(int outcome, int ext) {
  __u32 zero = 0;
  struct flowmark_counters* c = bpf_map_lookup_elem(&counters, &zero);
  if (!c) return;
  switch (outcome) {
    case FM_MARKED: c->marked++; break;
    case FM_MARKED_RULE: c->marked_rule++; break;
    case FM_MARKED_HANDSHAKE: c->marked_handshake++; break;
    case FM_NOT_IN_MAP: c->not_in_map++; break;
    case FM_NOT_IPV6: c->not_ipv6++; break;
    case FM_NOT_TCP_UDP: c->not_tcp_udp++; break;
    default: c->parse_error++; break;
  }
  switch (ext) {
    case FM_EXT_ADDED: c->ext_added++; break;
    case FM_EXT_TOO_BIG: c->ext_too_big++; break;
    case FM_EXT_SKIPPED: c->ext_skipped++; break;
    default: break;
  }
}

SEC("tc")
int flowmark_egress(struct __sk_buff* skb) {
  struct fm_ext_request req = {};
  int outcome = fm_mark(skb, &req);
  if (outcome == FM_SHORT) {
    __u32 len = skb->len < FM_PULL_BYTES ? skb->len : FM_PULL_BYTES;
    outcome = bpf_skb_pull_data(skb, len) == 0 ? fm_mark(skb, &req) : FM_PARSE_ERROR;
  }
  int ext = -1;
  if ((outcome == FM_MARKED || outcome == FM_MARKED_RULE || outcome == FM_MARKED_HANDSHAKE) &&
      req.wanted)
    ext = fm_add_ext_header(skb, &req);
  fm_count(outcome, ext);
  return TC_ACT_UNSPEC;
}
