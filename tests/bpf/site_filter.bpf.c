/* A stand-in for a site's own egress filter, for test_flowlabel_netns.py: it sets the hop
 * limit of IPv6 TCP and UDP packets (not ICMPv6: neighbour discovery needs 255) to 42, so
 * that a receiver sees that it ran.
 * Loaded by `tc filter add ... bpf da obj site_filter.bpf.o sec tc`, at a priority after
 * flowmark's: the hop limit shows that flowmark's filter lets the chain go on. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int site_filter(struct __sk_buff* skb) {
  void* data = (void*)(long)skb->data;
  void* end = (void*)(long)skb->data_end;
  struct ethhdr* eth = data;
  if ((void*)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IPV6)) return TC_ACT_OK;
  struct ipv6hdr* ip6 = (void*)(eth + 1);
  if ((void*)(ip6 + 1) > end) return TC_ACT_OK;
  if (ip6->nexthdr != 6 && ip6->nexthdr != 17) return TC_ACT_OK;
  ip6->hop_limit = 42;
  return TC_ACT_OK;
}
