// bpf_flowlabel_bench — nanoseconds per packet of the TC flow-label program, measured by
// the kernel (BPF_PROG_TEST_RUN with repeat) with 100,000 flows in the map.
//
//   bpf_flowlabel_bench [--repeat N] [--flows N] [--trials N] [--json FILE]
//   bpf_flowlabel_bench --attach IFACE [--flows N]
//
// The second form is for bench/bpf_veth_bench.sh: the map is filled the same way, the
// program is attached to IFACE ("attached" is printed), then each line
// "tcp|udp,SRC,SPORT,DST,DPORT" on standard input marks that flow too ("ok"); at the end
// of the input the counters are printed.
//
// Each case runs `repeat` times in the kernel per trial; the figure is the median over the
// trials of the kernel's average per run. Needs CAP_BPF (root). Target (issue 6): <= 100 ns.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fmt/format.h>

#include "../tests/bpf/frames.hpp"
#include "flowlabel.h"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/scitags/flow_label.hpp"

using namespace flowmark;
using bpf::test::FrameSpec;

namespace {

struct Case {
  std::string name;
  bpf::test::Bytes frame;
};

IpAddress addr(const std::uint8_t (&b)[16]) {
  in6_addr a{};
  std::memcpy(&a, b, 16);
  return IpAddress::v6(a);
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 1'000'000, trials = 5;
  std::size_t flows = 100'000;
  std::string json_path, attach;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--attach")
      attach = argv[i + 1];
    else if (a == "--repeat")
      repeat = std::stoi(argv[i + 1]);
    else if (a == "--flows")
      flows = std::stoul(argv[i + 1]);
    else if (a == "--trials")
      trials = std::stoi(argv[i + 1]);
    else if (a == "--json")
      json_path = argv[i + 1];
  }
  bpf::MarkerOptions opts;
  opts.capacity = std::max<std::size_t>(flows, 1);
  auto marker = bpf::FlowLabelMarker::load(opts);
  if (!marker) {
    fmt::print(stderr, "bpf_flowlabel_bench: {}\n", marker.error().message());
    return 1;
  }
  // `flows` flows to random destinations; the benchmarked ones are among them.
  std::mt19937_64 rng(42);
  FrameSpec base;
  bpf::FlowTuple f{addr(base.src), addr(base.dst), 0, 443, IPPROTO_TCP};
  std::uint8_t dst[16];
  std::memcpy(dst, base.dst, 16);
  for (std::size_t i = 0; i + 3 < flows; ++i) {  // the 3 in-map cases below make `flows`
    for (int b = 8; b < 16; ++b) dst[b] = static_cast<std::uint8_t>(rng());
    in6_addr a{};
    std::memcpy(&a, dst, 16);
    f.dst = IpAddress::v6(a);
    f.src_port = static_cast<std::uint16_t>(rng());
    f.protocol = (i & 1) ? IPPROTO_UDP : IPPROTO_TCP;
    if (auto r = marker->set(f, static_cast<std::uint32_t>(rng()) & 0xFFFFF); !r) {
      fmt::print(stderr, "bpf_flowlabel_bench: filling the map: {}\n", r.error().message());
      return 1;
    }
  }
  auto label = *scitags::encode_flow_label(2, 9, 5);
  if (!attach.empty()) {
    if (auto r = marker->attach(attach); !r) {
      fmt::print(stderr, "bpf_flowlabel_bench: {}\n", r.error().message());
      return 1;
    }
    fmt::print("attached\n");
    std::fflush(stdout);
    for (std::string text; std::getline(std::cin, text);) {  // tcp|udp,SRC,SPORT,DST,DPORT
      std::vector<std::string> part;
      std::size_t start = 0;
      for (std::size_t comma; (comma = text.find(',', start)) != std::string::npos;
           start = comma + 1)
        part.push_back(text.substr(start, comma - start));
      part.push_back(text.substr(start));
      auto from = IpAddress::parse(part.size() == 5 ? part[1] : "");
      auto to = IpAddress::parse(part.size() == 5 ? part[3] : "");
      if (!from || !to) {
        fmt::print("error: expected tcp|udp,SRC,SPORT,DST,DPORT\n");
      } else {
        bpf::FlowTuple t{*from, *to, static_cast<std::uint16_t>(std::stoul(part[2])),
                         static_cast<std::uint16_t>(std::stoul(part[4])),
                         static_cast<std::uint8_t>(part[0] == "udp" ? IPPROTO_UDP : IPPROTO_TCP)};
        auto r = marker->set(t, label);
        fmt::print("{}\n", r ? "ok" : "error: " + r.error().message());
      }
      std::fflush(stdout);
    }
    if (auto c = marker->counters())
      fmt::print("counters: marked {}, not in map {}, not ipv6 {}, not tcp/udp {}\n", c->marked,
                 c->not_in_map, c->not_ipv6, c->not_tcp_udp);
    return 0;
  }
  std::vector<Case> cases;
  auto add = [&](std::string name, FrameSpec s, bool in_map) {
    if (in_map)
      (void)marker->set({addr(s.src), addr(s.dst), s.src_port, s.dst_port, s.protocol}, label);
    cases.push_back({std::move(name), bpf::test::ipv6_frame(s)});
  };
  FrameSpec tcp;
  tcp.payload = 1400;
  add("ipv6 tcp, in map (marked)", tcp, true);
  FrameSpec udp = tcp;
  udp.protocol = IPPROTO_UDP;
  add("ipv6 udp, in map (marked)", udp, true);
  FrameSpec miss = tcp;
  miss.src_port = 1;
  add("ipv6 tcp, not in map", miss, false);
  FrameSpec ext = tcp;
  ext.ext = {0, 60, 44};
  ext.vlan_tpids = {0x8100};
  ext.src_port = 2;
  add("vlan + ipv6 hbh/dstopts/frag + tcp, in map", ext, true);
  cases.push_back({"ipv4 udp (untouched)", bpf::test::ipv4_udp_frame()});
  // The passive side's SYN-ACKs (issue 18): a segment with SYN set and no flow entry is
  // looked up in the handshake map (the kernel-events program fills it, up to
  // FLOWMARK_HANDSHAKE_ENTRIES, all used here); every other miss pays a flag test only
  // ("not in map" above).
  const int hs_fd = marker->shared_map().handshakes_fd;
  FrameSpec syn_ack = tcp;
  syn_ack.payload = 0;
  syn_ack.tcp_flags = 0x12;
  syn_ack.src_port = 5;
  auto hs_put = [&](const FrameSpec& s) {
    flowmark_flow_key k{};
    std::memcpy(k.src_addr, s.src, 16);
    std::memcpy(k.dst_addr, s.dst, 16);
    k.src_port = htons(s.src_port);
    k.dst_port = htons(s.dst_port);
    k.protocol = IPPROTO_TCP;
    flowmark_flow_value v{label | FLOWMARK_LABEL_FROM_KERNEL, 2, 9, 0};
    return bpf_map_update_elem(hs_fd, &k, &v, BPF_ANY) == 0;
  };
  FrameSpec other = syn_ack;
  for (std::uint32_t i = 0; i + 1 < FLOWMARK_HANDSHAKE_ENTRIES; ++i) {
    other.dst_port = static_cast<std::uint16_t>(i);
    other.dst[14] = 0x77;
    if (!hs_put(other)) {
      fmt::print(stderr, "bpf_flowlabel_bench: filling the handshake map: {}\n",
                 std::strerror(errno));
      return 1;
    }
  }
  FrameSpec syn_ack_miss = syn_ack;
  syn_ack_miss.src_port = 6;
  cases.push_back(
      {"ipv6 tcp SYN-ACK, no entry, handshake miss", bpf::test::ipv6_frame(syn_ack_miss)});
  if (!hs_put(syn_ack)) return 1;
  cases.push_back({"ipv6 tcp SYN-ACK, handshake map (marked)", bpf::test::ipv6_frame(syn_ack)});

  fmt::print("flows in map: {}; repeat {} x {} trials; kernel average ns per run, median\n",
             marker->fill(), repeat, trials);
  std::string json = "[";
  auto run_cases = [&](const std::vector<Case>& to_run) -> bool {
    for (const auto& c : to_run) {
      std::vector<std::uint32_t> ns;
      for (int t = 0; t < trials; ++t) {
        auto r = bpf::test::test_run(marker->program_fd(), c.frame, repeat);
        if (r.error) {
          fmt::print(stderr, "bpf_flowlabel_bench: test run: {}\n", std::strerror(-r.error));
          return false;
        }
        ns.push_back(r.duration_ns);
      }
      std::sort(ns.begin(), ns.end());
      const auto median = ns[ns.size() / 2];
      fmt::print("  {:<45} {:>5} ns/packet (min {}, max {})\n", c.name, median, ns.front(),
                 ns.back());
      json += fmt::format("{}{{\"case\":\"{}\",\"ns_per_packet\":{},\"min\":{},\"max\":{}}}",
                          json.size() > 1 ? "," : "", c.name, median, ns.front(), ns.back());
    }
    return true;
  };
  if (!run_cases(cases)) return 1;

  // Rules in the kernel (issue 18): the packets of flows without an entry go through the LPM
  // trie. 256 /48 prefixes under 2001:db8:: with 4 port ranges each plus a ::/0 rule for
  // port 5201 (covering rules are copied into every prefix: 5 ranges each) — the cost of a
  // rule hit, of a prefix hit whose ports do not match, and of a miss, next to "not in map"
  // above (no rules: an empty trie).
  std::vector<bpf::MarkRule> rules;
  const auto rule_label = *scitags::encode_flow_label(3, 2, 0);
  for (int p = 0; p < 256; ++p) {
    auto net = Network::parse(fmt::format("2001:db8:{:x}::/48", p + 1));
    for (std::uint16_t r = 0; r < 4; ++r)
      rules.push_back({*net,
                       static_cast<std::uint16_t>(1000 + r * 100),
                       static_cast<std::uint16_t>(1000 + r * 100 + 50),
                       {rule_label}});
  }
  rules.push_back({*Network::parse("::/0"), 5201, 5201, {rule_label}});
  if (auto r = marker->set_rules(rules); !r) {
    fmt::print(stderr, "bpf_flowlabel_bench: rules: {}\n", r.error().message());
    return 1;
  }
  std::vector<Case> rule_cases;
  FrameSpec hit = tcp;
  hit.src_port = 3;
  hit.dst[4] = 0x00;  // 2001:db8:80::2 → the /48 of prefix 0x80
  hit.dst[5] = 0x80;
  hit.dst_port = 1310;  // the last of its 4 ranges
  rule_cases.push_back({"ipv6 tcp, no entry, rule hit (1,025 rules)", bpf::test::ipv6_frame(hit)});
  FrameSpec all = hit;
  all.dst_port = 5201;
  rule_cases.push_back({"ipv6 tcp, no entry, ::/0 rule (copied in)", bpf::test::ipv6_frame(all)});
  FrameSpec ports = hit;
  ports.dst_port = 443;
  rule_cases.push_back({"ipv6 tcp, no entry, prefix hit, no port", bpf::test::ipv6_frame(ports)});
  FrameSpec none = tcp;
  none.src_port = 4;
  none.dst[0] = 0x30;  // 3001:db8::2: only ::/0 covers it, port 443 not its
  rule_cases.push_back({"ipv6 tcp, no entry, no rule applies", bpf::test::ipv6_frame(none)});
  rule_cases.push_back({"ipv6 tcp, in map (rules set)", cases[0].frame});
  if (!run_cases(rule_cases)) return 1;
  // flowd-go's perfSONAR mode: one rule, ::/0, every port.
  const bpf::MarkRule match_all{*Network::parse("::/0"), 0, 65535, {rule_label}};
  if (auto r = marker->set_rules({&match_all, 1}); !r) {
    fmt::print(stderr, "bpf_flowlabel_bench: rules: {}\n", r.error().message());
    return 1;
  }
  if (!run_cases({{"ipv6 tcp, no entry, perfSONAR mode (::/0 only)", rule_cases[3].frame}}))
    return 1;
  json += "]";
  auto c = marker->counters();
  if (c)
    fmt::print("counters: marked {}, marked by a rule {}, not in map {}, not ipv6 {}\n", c->marked,
               c->marked_rule, c->not_in_map, c->not_ipv6);
  if (!json_path.empty()) {
    if (FILE* out = std::fopen(json_path.c_str(), "w")) {
      std::fputs(json.c_str(), out);
      std::fputs("\n", out);
      std::fclose(out);
    }
  }
  return 0;
}
