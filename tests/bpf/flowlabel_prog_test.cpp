// The TC flow-label program on crafted frames (BPF_PROG_TEST_RUN), and the map API.
// Needs CAP_BPF (root): without it every test skips, saying so.
#include <gtest/gtest.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <arpa/inet.h>

#include <optional>
#include <set>

#include <bpf/bpf.h>

#include "flowlabel.h"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/scitags/flow_label.hpp"
#include "frames.hpp"

namespace flowmark::bpf {
namespace {

using test::Bytes;
using test::FrameSpec;

constexpr std::uint32_t kTcActUnspec = 0xFFFFFFFFu;  // TC_ACT_UNSPEC (-1): no verdict

IpAddress addr(const std::uint8_t (&b)[16]) {
  in6_addr a{};
  std::memcpy(&a, b, 16);
  return IpAddress::v6(a);
}

FlowTuple tuple_of(const FrameSpec& s) {
  return {addr(s.src), addr(s.dst), s.src_port, s.dst_port, s.protocol};
}

class FlowLabelProg : public ::testing::Test {
 protected:
  void SetUp() override {
    MarkerOptions opts;
    opts.capacity = 1000;
    auto m = FlowLabelMarker::load(opts);
    // Only a missing privilege skips; the verifier's refusal (EACCES) is a failure whose
    // message carries the verifier's log.
    if (!m && m.error().code() == std::errc::operation_not_permitted)
      GTEST_SKIP() << "cannot load BPF programs here: " << m.error().message();
    ASSERT_TRUE(m) << m.error().message();
    marker_.emplace(std::move(*m));
  }

  FlowLabelMarker& marker() { return *marker_; }

  // Runs the program on `in`; checks it passed the packet on with no verdict.
  Bytes run(const Bytes& in) {
    auto r = test::test_run(marker().program_fd(), in);
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.retval, kTcActUnspec);
    EXPECT_EQ(r.out.size(), in.size());
    return r.out;
  }

  Counters counters() {
    auto c = marker().counters();
    EXPECT_TRUE(c) << c.error().message();
    return c ? *c : Counters{};
  }

  std::uint32_t label(std::uint32_t exp, std::uint32_t act, std::uint32_t entropy) {
    auto l = scitags::encode_flow_label(exp, act, entropy);
    EXPECT_TRUE(l);
    return *l;
  }

  std::optional<FlowLabelMarker> marker_;
};

TEST_F(FlowLabelProg, WritesTheLabelAndKeepsTrafficClassAndEcn) {
  FrameSpec s;
  s.traffic_class = 0xB9;  // DSCP EF (46), ECN ECT(1)
  s.flow_label = 0xABCDE;  // whatever the stack put there is replaced
  const std::uint32_t l = label(2, 9, 0b10110);
  ASSERT_TRUE(marker().set(tuple_of(s), l));
  const Bytes in = test::ipv6_frame(s);
  const Bytes out = run(in);
  const std::uint32_t w = test::ip6_word(out, 14);
  EXPECT_EQ(w >> 28, 6u);
  EXPECT_EQ((w >> 20) & 0xFF, 0xB9u);
  EXPECT_EQ(w & 0xFFFFF, l);
  const auto d = scitags::decode_flow_label(w & 0xFFFFF);
  EXPECT_EQ(d.experiment, 2u);
  EXPECT_EQ(d.activity, 9u);
  EXPECT_EQ(d.entropy, 0b10110u);
  EXPECT_EQ(w & scitags::kFlowLabelSemanticMask, 0x10024u);
  // Nothing else in the frame changed.
  Bytes expect = in;
  for (int i = 15; i < 18; ++i)
    expect[static_cast<std::size_t>(i)] = out[static_cast<std::size_t>(i)];
  EXPECT_EQ(out, expect);
  EXPECT_EQ(counters().marked, 1u);
}

TEST_F(FlowLabelProg, EveryTrafficClassSurvives) {
  FrameSpec s;
  const std::uint32_t l = label(5, 14, 31);
  ASSERT_TRUE(marker().set(tuple_of(s), l));
  for (std::uint32_t tc = 0; tc < 256; ++tc) {
    s.traffic_class = static_cast<std::uint8_t>(tc);
    s.flow_label = 0xFFFFF - tc;
    const std::uint32_t w = test::ip6_word(run(test::ipv6_frame(s)), 14);
    ASSERT_EQ(w, (6u << 28) | (tc << 20) | l) << "traffic class " << tc;
  }
  EXPECT_EQ(counters().marked, 256u);
}

TEST_F(FlowLabelProg, VlanAndQinQ) {
  for (auto tags : {std::vector<std::uint16_t>{0x8100}, std::vector<std::uint16_t>{0x88A8, 0x8100},
                    std::vector<std::uint16_t>{0x8100, 0x8100}}) {
    FrameSpec s;
    s.vlan_tpids = tags;
    s.traffic_class = 0x03;  // ECN CE
    const std::uint32_t l = label(3, 3, 0);
    ASSERT_TRUE(marker().set(tuple_of(s), l));
    const std::uint32_t w = test::ip6_word(run(test::ipv6_frame(s)), test::ipv6_offset(s));
    EXPECT_EQ(w, (6u << 28) | (0x03u << 20) | 0x3000Cu) << tags.size() << " tags";
  }
  EXPECT_EQ(counters().marked, 3u);
}

TEST_F(FlowLabelProg, WalksExtensionHeaders) {
  const std::vector<std::vector<std::uint8_t>> chains = {
      {0},           // hop-by-hop
      {0, 60, 44},   // hop-by-hop, destination options, first fragment
      {0, 43, 60},   // hop-by-hop, routing, destination options
      {51},          // AH
      {60, 44, 51},  // destination options, fragment, AH
      {0, 43, 44, 60, 51, 60},
      {0, 60, 60, 60, 60, 60, 60, 60}};  // eight: as many as the program walks
  std::uint32_t n = 0;
  for (const auto& chain : chains) {
    for (std::uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP}) {
      FrameSpec s;
      s.ext = chain;
      s.protocol = proto;
      s.src_port = static_cast<std::uint16_t>(1000 + n);
      const std::uint32_t l = label(4, 3, n % 32);
      ASSERT_TRUE(marker().set(tuple_of(s), l));
      const std::uint32_t w = test::ip6_word(run(test::ipv6_frame(s)), 14);
      EXPECT_EQ(w & 0xFFFFF, l) << "chain of " << chain.size() << ", protocol " << int{proto};
      ++n;
    }
  }
  EXPECT_EQ(counters().marked, n);
}

TEST_F(FlowLabelProg, NonFirstFragmentHasNoPortsAndIsUntouched) {
  FrameSpec s;
  s.ext = {44};
  s.fragment_offset = 185;  // 1480 bytes in
  ASSERT_TRUE(marker().set(tuple_of(s), label(2, 9, 0)));
  const Bytes in = test::ipv6_frame(s);
  EXPECT_EQ(run(in), in);
  const auto c = counters();
  EXPECT_EQ(c.not_tcp_udp, 1u);
  EXPECT_EQ(c.marked, 0u);
}

TEST_F(FlowLabelProg, UdpMarkedAndTcpUdpKeptApart) {
  FrameSpec s;
  s.protocol = IPPROTO_UDP;
  s.traffic_class = 0x01;
  const std::uint32_t l = label(5, 10, 7);
  ASSERT_TRUE(marker().set(tuple_of(s), l));
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(s)), 14), (6u << 28) | (1u << 20) | l);
  // The same addresses and ports over TCP are another flow.
  FrameSpec t = s;
  t.protocol = IPPROTO_TCP;
  const Bytes in = test::ipv6_frame(t);
  EXPECT_EQ(run(in), in);
  const auto c = counters();
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.not_in_map, 1u);
}

TEST_F(FlowLabelProg, Ipv4AndArpUntouched) {
  FrameSpec s;
  ASSERT_TRUE(marker().set(tuple_of(s), label(2, 9, 0)));
  for (const Bytes& in : {test::ipv4_udp_frame(), test::arp_frame()}) EXPECT_EQ(run(in), in);
  const auto c = counters();
  EXPECT_EQ(c.not_ipv6, 2u);
  EXPECT_EQ(c.marked, 0u);
}

TEST_F(FlowLabelProg, FlowNotInMapUntouched) {
  FrameSpec s;
  s.flow_label = 0x12345;
  ASSERT_TRUE(marker().set(tuple_of(s), label(2, 9, 0)));
  FrameSpec other = s;
  other.src_port = 40001;  // another flow
  FrameSpec reverse = s;   // the reply direction is not the flow in the map
  std::swap(reverse.src, reverse.dst);
  std::swap(reverse.src_port, reverse.dst_port);
  FrameSpec other_src = s;  // same destination and ports, another source address
  other_src.src[15] = 9;
  for (const auto& f : {other, reverse, other_src}) {
    const Bytes in = test::ipv6_frame(f);
    EXPECT_EQ(run(in), in);
  }
  const auto c = counters();
  EXPECT_EQ(c.not_in_map, 3u);
  EXPECT_EQ(c.marked, 0u);
}

TEST_F(FlowLabelProg, ErasedFlowNoLongerMarked) {
  FrameSpec s;
  ASSERT_TRUE(marker().set(tuple_of(s), label(2, 9, 0)));
  const Bytes in = test::ipv6_frame(s);
  EXPECT_NE(run(in), in);
  auto e = marker().erase(tuple_of(s));
  ASSERT_TRUE(e);
  EXPECT_TRUE(*e);
  EXPECT_EQ(run(in), in);
  e = marker().erase(tuple_of(s));
  ASSERT_TRUE(e);
  EXPECT_FALSE(*e);
  const auto c = counters();
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.not_in_map, 1u);
}

TEST_F(FlowLabelProg, MalformedCountedAsParseErrors) {
  FrameSpec s;
  ASSERT_TRUE(marker().set(tuple_of(s), label(2, 9, 0)));
  Bytes full = test::ipv6_frame(s);
  // Cut inside the TCP ports. (A frame cut inside the IPv6 header never reaches the
  // program: BPF_PROG_TEST_RUN refuses it, as the stack would never build it.)
  Bytes cut(full.begin(), full.begin() + 14 + 40 + 2);
  EXPECT_EQ(run(cut), cut);
  // A hop-by-hop header whose length runs past the end of the packet.
  FrameSpec hbh = s;
  hbh.ext = {0};
  Bytes longer = test::ipv6_frame(hbh);
  longer[14 + 40 + 1] = 20;  // (20 + 1) * 8 = 168 bytes
  EXPECT_EQ(run(longer), longer);
  // Version not 6 under an IPv6 EtherType.
  Bytes v4 = full;
  v4[14] = 0x45;
  EXPECT_EQ(run(v4), v4);
  // Nine extension headers: more than the program walks.
  FrameSpec deep = s;
  deep.ext = {0, 60, 60, 60, 60, 60, 60, 60, 60};
  const Bytes d = test::ipv6_frame(deep);
  EXPECT_EQ(run(d), d);
  const auto c = counters();
  EXPECT_EQ(c.parse_error, 4u);  // cut, long header, version, depth
  EXPECT_EQ(c.marked, 0u);
}

TEST_F(FlowLabelProg, IcmpV6NotTcpUdp) {
  FrameSpec s;
  s.protocol = 58;
  const Bytes in = test::ipv6_frame(s);
  EXPECT_EQ(run(in), in);
  EXPECT_EQ(counters().not_tcp_udp, 1u);
}

TEST_F(FlowLabelProg, MapApi) {
  FrameSpec s;
  const auto f = tuple_of(s);
  auto r = marker().set(f, label(2, 9, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, SetOutcome::kInserted);
  r = marker().set(f, label(2, 9, 2));
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, SetOutcome::kReplaced);
  EXPECT_EQ(marker().lookup(f), label(2, 9, 2));
  EXPECT_EQ(marker().fill(), 1u);
  // Not IPv6, not TCP/UDP: refused with a reason.
  FlowTuple v4{IpAddress::v4(0xC0000201), IpAddress::v4(0xC0000202), 1, 2, IPPROTO_TCP};
  auto bad = marker().set(v4, 1);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  FlowTuple icmp = f;
  icmp.protocol = 58;
  EXPECT_FALSE(marker().set(icmp, 1));
}

TEST_F(FlowLabelProg, FullMapRefusesNewFlowsAndEvictsNone) {
  FrameSpec s;
  FlowTuple f = tuple_of(s);
  for (std::uint32_t i = 0; i < 1000; ++i) {
    f.src_port = static_cast<std::uint16_t>(10000 + i);
    auto r = marker().set(f, i);
    ASSERT_TRUE(r) << i << ": " << r.error().message();
  }
  f.src_port = 20000;
  auto full = marker().set(f, 1);
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code(), Errc::kTruncated);
  EXPECT_NE(full.error().message().find("full"), std::string::npos);
  // Every admitted flow is still there: the LRU map evicted none of them.
  for (std::uint32_t i = 0; i < 1000; ++i) {
    f.src_port = static_cast<std::uint16_t>(10000 + i);
    ASSERT_EQ(marker().lookup(f), i);
  }
  const auto st = marker().map_stats();
  EXPECT_EQ(st.fill, 1000u);
  EXPECT_EQ(st.rejected_full, 1u);
  // An existing flow can still change its label; after an erase there is room again.
  f.src_port = 10000;
  EXPECT_TRUE(marker().set(f, 5));
  ASSERT_TRUE(marker().erase(f));
  f.src_port = 20000;
  EXPECT_TRUE(marker().set(f, 1));
}

// ---- the optional extension-header option -------------------------------------------

// Checks that `out` is `in` with the 8-byte option header of `kind` inserted after the
// IPv6 header at 14, the payload length grown by 8 and the label written.
void expect_option_inserted(const Bytes& in, const Bytes& out, std::uint8_t kind,
                            std::uint32_t label, std::uint16_t exp, std::uint8_t act) {
  ASSERT_EQ(out.size(), in.size() + 8);
  EXPECT_EQ(test::ip6_word(out, 14), (test::ip6_word(in, 14) & 0xFFF00000u) | label);
  const unsigned plen_in = in[18] << 8 | in[19], plen_out = out[18] << 8 | out[19];
  EXPECT_EQ(plen_out, plen_in + 8);
  EXPECT_EQ(out[20], kind);
  const Bytes option(out.begin() + 54, out.begin() + 62);
  const Bytes expect_option = {in[20],
                               0,
                               0x1E,
                               3,
                               static_cast<std::uint8_t>(exp >> 8),
                               static_cast<std::uint8_t>(exp & 0xFF),
                               act,
                               0};
  EXPECT_EQ(option, expect_option);
  // Ethernet and the rest of the IPv6 header, and everything after it, unchanged.
  EXPECT_TRUE(std::equal(in.begin(), in.begin() + 15, out.begin()));
  EXPECT_TRUE(std::equal(in.begin() + 21, in.begin() + 54, out.begin() + 21));
  EXPECT_TRUE(std::equal(in.begin() + 54, in.end(), out.begin() + 62));
}

Bytes run_grown(FlowLabelMarker& m, const Bytes& in) {
  auto r = test::test_run(m.program_fd(), in);
  EXPECT_EQ(r.error, 0);
  EXPECT_EQ(r.retval, kTcActUnspec);
  return r.out;
}

TEST_F(FlowLabelProg, HopByHopOptionInserted) {
  FrameSpec s;
  s.traffic_class = 0xB9;
  const std::uint32_t l = label(2, 9, 3);
  ASSERT_TRUE(marker().set(tuple_of(s), Mark{l, ExtHeader::kHopByHop, 2, 9}));
  const Bytes in = test::ipv6_frame(s);
  expect_option_inserted(in, run_grown(marker(), in), 0, l, 2, 9);
  const auto c = counters();
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.ext_added, 1u);
}

TEST_F(FlowLabelProg, DestinationOptionInsertedOnUdp) {
  FrameSpec s;
  s.protocol = IPPROTO_UDP;
  const std::uint32_t l = label(300, 63, 0);
  ASSERT_TRUE(marker().set(tuple_of(s), Mark{l, ExtHeader::kDestinationOptions, 300, 63}));
  const Bytes in = test::ipv6_frame(s);
  expect_option_inserted(in, run_grown(marker(), in), 60, l, 300, 63);
  EXPECT_EQ(counters().ext_added, 1u);
}

TEST_F(FlowLabelProg, OptionSkippedWhereExtensionHeadersOrVlanTags) {
  FrameSpec with_ext;
  with_ext.ext = {0};
  FrameSpec vlan;
  vlan.vlan_tpids = {0x8100};
  vlan.src_port = 40001;
  for (const auto& s : {with_ext, vlan}) {
    const std::uint32_t l = label(4, 3, 1);
    ASSERT_TRUE(marker().set(tuple_of(s), Mark{l, ExtHeader::kHopByHop, 4, 3}));
    const Bytes in = test::ipv6_frame(s);
    const Bytes out = run_grown(marker(), in);
    ASSERT_EQ(out.size(), in.size());  // not grown, but the label is written
    EXPECT_EQ(test::ip6_word(out, test::ipv6_offset(s)) & 0xFFFFF, l);
  }
  const auto c = counters();
  EXPECT_EQ(c.marked, 2u);
  EXPECT_EQ(c.ext_skipped, 2u);
  EXPECT_EQ(c.ext_added, 0u);
}

// BPF_PROG_TEST_RUN runs the program on the loopback device of the caller's network
// namespace: in a private one, its MTU can be lowered.
TEST_F(FlowLabelProg, OptionOnlyWithinTheMtu) {
  if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "cannot unshare the network namespace";
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  ifr.ifr_mtu = 1280;
  ASSERT_EQ(::ioctl(fd, SIOCSIFMTU, &ifr), 0) << std::strerror(errno);
  ::close(fd);
  FrameSpec s;
  const std::uint32_t l = label(2, 9, 0);
  ASSERT_TRUE(marker().set(tuple_of(s), Mark{l, ExtHeader::kHopByHop, 2, 9}));
  s.payload = 1280 - 40 - 20 - 8;  // grown: exactly the MTU
  const Bytes fits = test::ipv6_frame(s);
  expect_option_inserted(fits, run_grown(marker(), fits), 0, l, 2, 9);
  s.payload += 1;  // grown: one byte over
  const Bytes big = test::ipv6_frame(s);
  const Bytes out = run_grown(marker(), big);
  ASSERT_EQ(out.size(), big.size());
  EXPECT_EQ(test::ip6_word(out, 14) & 0xFFFFF, l);
  const auto c = counters();
  EXPECT_EQ(c.ext_added, 1u);
  EXPECT_EQ(c.ext_too_big, 1u);
  EXPECT_EQ(c.marked, 2u);
}

// ---- rules evaluated in the kernel (set_rules) ----------------------------------------

MarkRule rule(std::string_view prefix, std::uint16_t first, std::uint16_t last, std::uint32_t exp,
              std::uint32_t act) {
  auto n = Network::parse(prefix);
  EXPECT_TRUE(n) << prefix;
  MarkRule r;
  r.destination = *n;
  r.port_first = first;
  r.port_last = last;
  auto l = scitags::encode_flow_label(exp, act, 0);
  EXPECT_TRUE(l);
  r.mark =
      Mark{*l, ExtHeader::kNone, static_cast<std::uint16_t>(exp), static_cast<std::uint8_t>(act)};
  return r;
}

TEST_F(FlowLabelProg, MatchAllRuleMarksEveryFlowOneLabelPerFlow) {
  const std::vector<MarkRule> rules = {rule("::/0", 0, 65535, 7, 5)};
  ASSERT_TRUE(marker().set_rules(rules));
  std::set<std::uint32_t> entropies;
  for (std::uint16_t port = 40000; port < 40064; ++port) {
    FrameSpec s;
    s.src_port = port;
    s.protocol = port % 2 ? IPPROTO_UDP : IPPROTO_TCP;
    const std::uint32_t w1 = test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF;
    const std::uint32_t w2 = test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF;
    EXPECT_EQ(w1, w2) << "a flow keeps its label, port " << port;
    const auto d = scitags::decode_flow_label(w1);
    EXPECT_EQ(d.experiment, 7u);
    EXPECT_EQ(d.activity, 5u);
    entropies.insert(d.entropy);
  }
  EXPECT_GT(entropies.size(), 8u) << "the entropy bits spread over flows";
  const auto c = counters();
  EXPECT_EQ(c.marked_rule, 128u);
  EXPECT_EQ(c.marked, 0u);
  EXPECT_EQ(c.not_in_map, 0u);
}

TEST_F(FlowLabelProg, PrefixAndPortRulesMostSpecificFirst) {
  // 2001:db8::/32 port 443 → (10, 1); 2001:db8::/32 ports 5000-5100 → (11, 2);
  // 2001:db8:0:0::/64 any port → (12, 3) — the /64 wins for its addresses;
  // nothing else marked.
  const std::vector<MarkRule> rules = {rule("2001:db8::/32", 443, 443, 10, 1),
                                       rule("2001:db8::/32", 5000, 5100, 11, 2),
                                       rule("2001:db8:0:1::/64", 0, 65535, 12, 3)};
  ASSERT_TRUE(marker().set_rules(rules));
  auto mark_of = [&](const char* dst, std::uint16_t port) -> std::optional<std::pair<int, int>> {
    FrameSpec s;
    in6_addr a{};
    EXPECT_EQ(::inet_pton(AF_INET6, dst, &a), 1);
    std::memcpy(s.dst, &a, 16);
    s.dst_port = port;
    s.flow_label = 0;
    const std::uint32_t w = test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF;
    if (w == 0) return std::nullopt;
    const auto d = scitags::decode_flow_label(w);
    return std::pair<int, int>(static_cast<int>(d.experiment), static_cast<int>(d.activity));
  };
  using P = std::pair<int, int>;
  EXPECT_EQ(mark_of("2001:db8::2", 443), P(10, 1));
  EXPECT_EQ(mark_of("2001:db8:ffff::9", 5050), P(11, 2));
  EXPECT_EQ(mark_of("2001:db8::2", 80), std::nullopt);
  EXPECT_EQ(mark_of("2001:db8:0:1::5", 80), P(12, 3));
  EXPECT_EQ(mark_of("2001:db8:0:1::5", 443), P(12, 3));
  EXPECT_EQ(mark_of("2001:db9::2", 443), std::nullopt);
  const auto c = counters();
  EXPECT_EQ(c.marked_rule, 4u);
  EXPECT_EQ(c.not_in_map, 2u);
  // Replacing the rules drops the old ones.
  ASSERT_TRUE(marker().set_rules(std::vector<MarkRule>{rule("2001:db9::/32", 0, 65535, 1, 1)}));
  EXPECT_EQ(mark_of("2001:db8::2", 443), std::nullopt);
  EXPECT_EQ(mark_of("2001:db9::2", 443), P(1, 1));
}

TEST_F(FlowLabelProg, FlowEntryWinsOverRule) {
  ASSERT_TRUE(marker().set_rules(std::vector<MarkRule>{rule("::/0", 0, 65535, 7, 5)}));
  FrameSpec s;
  const std::uint32_t l = label(2, 9, 4);
  ASSERT_TRUE(marker().set(tuple_of(s), l));
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF, l);
  s.src_port = 40001;
  EXPECT_EQ(scitags::decode_flow_label(test::ip6_word(run(test::ipv6_frame(s)), 14)).experiment,
            7u);
  const auto c = counters();
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.marked_rule, 1u);
}

TEST_F(FlowLabelProg, RuleErrorsNameTheRule) {
  auto v4 = rule("::/0", 0, 65535, 1, 1);
  v4.destination = *Network::parse("10.0.0.0/8");
  auto r = marker().set_rules(std::vector<MarkRule>{rule("::/0", 0, 65535, 1, 1), v4});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("rule 2 (10.0.0.0/8"), std::string::npos)
      << r.error().message();
  std::vector<MarkRule> many;
  for (std::uint16_t i = 0; i < 17; ++i)
    many.push_back(rule("::/0", static_cast<std::uint16_t>(1000 + i),
                        static_cast<std::uint16_t>(1000 + i), 1, 1));
  r = marker().set_rules(many);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("::/0: 17 rules"), std::string::npos) << r.error().message();
}

// flowd-go's hopByHopDestination: both headers (hop-by-hop first), the label left alone.
TEST_F(FlowLabelProg, BothHeadersInsertedLabelKept) {
  FrameSpec s;
  s.flow_label = 0x12345;
  ASSERT_TRUE(marker().set(tuple_of(s), Mark{label(2, 9, 0), ExtHeader::kBoth, 2, 9, false}));
  const Bytes in = test::ipv6_frame(s);
  const Bytes out = run_grown(marker(), in);
  ASSERT_EQ(out.size(), in.size() + 16);
  EXPECT_EQ(test::ip6_word(out, 14), test::ip6_word(in, 14));  // label unchanged
  EXPECT_EQ((out[18] << 8 | out[19]), (in[18] << 8 | in[19]) + 16);
  EXPECT_EQ(out[20], 0);  // hop-by-hop first
  const Bytes hbh(out.begin() + 54, out.begin() + 62), dst(out.begin() + 62, out.begin() + 70);
  EXPECT_EQ(hbh, (Bytes{60, 0, 0x1E, 3, 0, 2, 9, 0}));
  EXPECT_EQ(dst, (Bytes{in[20], 0, 0x1E, 3, 0, 2, 9, 0}));
  EXPECT_TRUE(std::equal(in.begin() + 54, in.end(), out.begin() + 70));
  // The same by a rule, for flows without an entry.
  auto r = rule("::/0", 0, 65535, 2, 9);
  r.mark.ext_header = ExtHeader::kHopByHop;
  r.mark.write_label = false;
  ASSERT_TRUE(marker().set_rules(std::vector<MarkRule>{r}));
  s.src_port = 40001;
  const Bytes in2 = test::ipv6_frame(s);
  const Bytes out2 = run_grown(marker(), in2);
  ASSERT_EQ(out2.size(), in2.size() + 8);
  EXPECT_EQ(test::ip6_word(out2, 14), test::ip6_word(in2, 14));
  EXPECT_EQ(out2[20], 0);
  const auto c = counters();
  EXPECT_EQ(c.ext_added, 2u);
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.marked_rule, 1u);
}

// The handshake map (what the kernel-events program fills when a SYN arrives): consulted for
// a TCP segment with SYN set whose flow has no entry; a flow entry wins; other segments of
// the flow are not marked by it; an LRU of its own, bounded.
TEST_F(FlowLabelProg, HandshakeMapMarksSynAcksOnly) {
  FrameSpec s;
  s.tcp_flags = 0x12;  // SYN-ACK
  s.src_port = 5004;
  s.dst_port = 40100;
  const std::uint32_t l = label(4, 3, 7);
  flowmark_flow_key key{};
  std::memcpy(key.src_addr, s.src, 16);
  std::memcpy(key.dst_addr, s.dst, 16);
  key.src_port = htons(s.src_port);
  key.dst_port = htons(s.dst_port);
  key.protocol = IPPROTO_TCP;
  flowmark_flow_value value{l | FLOWMARK_LABEL_FROM_KERNEL, 4, 3, 0};
  const int hs = marker().shared_map().handshakes_fd;
  ASSERT_GE(hs, 0);
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF, 0u) << "no entry yet";
  ASSERT_EQ(bpf_map_update_elem(hs, &key, &value, BPF_ANY), 0);
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF, l);
  FrameSpec data = s;
  data.tcp_flags = 0x18;  // the same flow's data: not the handshake map's to mark
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(data)), 14) & 0xFFFFF, 0u);
  FrameSpec udp = s;
  udp.protocol = IPPROTO_UDP;
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(udp)), 14) & 0xFFFFF, 0u);
  // A flow entry wins.
  const std::uint32_t other = label(2, 9, 1);
  ASSERT_TRUE(marker().set(tuple_of(s), other));
  EXPECT_EQ(test::ip6_word(run(test::ipv6_frame(s)), 14) & 0xFFFFF, other);
  const auto c = counters();
  EXPECT_EQ(c.marked_handshake, 1u);
  EXPECT_EQ(c.marked, 1u);
  EXPECT_EQ(c.not_in_map, 3u);
  // Bounded: an LRU of FLOWMARK_HANDSHAKE_ENTRIES; twice as many inserts all succeed, the
  // flow map's fill does not move.
  for (std::uint32_t i = 0; i < 2 * FLOWMARK_HANDSHAKE_ENTRIES; ++i) {
    key.dst_port = htons(static_cast<std::uint16_t>(i));
    key.dst_addr[15] = static_cast<std::uint8_t>(i >> 16) + 3;
    ASSERT_EQ(bpf_map_update_elem(hs, &key, &value, BPF_ANY), 0) << i;
  }
  std::uint32_t n = 0;
  flowmark_flow_key k{}, next{};
  for (void* prev = nullptr; bpf_map_get_next_key(hs, prev, &next) == 0; prev = &k) {
    k = next;
    ++n;
  }
  EXPECT_LE(n, FLOWMARK_HANDSHAKE_ENTRIES);
  EXPECT_EQ(marker().fill(), 1u);
}

TEST(FlowLabelHooks, InterfacesWithGlobalIpv6) {
  if (::unshare(CLONE_NEWNET) != 0) GTEST_SKIP() << "cannot unshare the network namespace";
  // A fresh namespace: lo (::1 once up) does not count.
  ASSERT_EQ(std::system("ip link set lo up"), 0);
  EXPECT_TRUE(interfaces_with_global_ipv6().empty());
  ASSERT_EQ(std::system("ip link add fmt0 type veth peer name fmt1 && "
                        "ip -6 addr add fd00::5/64 dev fmt0 nodad && ip link set fmt0 up && "
                        "ip link set fmt1 up"),
            0);
  // fmt1 has only a link-local address.
  EXPECT_EQ(interfaces_with_global_ipv6(), std::vector<std::string>{"fmt0"});
}

TEST(FlowLabelHooks, AttachErrorsNameTheProblem) {
  auto m = FlowLabelMarker::load();
  if (!m && m.error().code() == std::errc::operation_not_permitted)
    GTEST_SKIP() << m.error().message();
  ASSERT_TRUE(m) << m.error().message();
  auto r = m->attach("no-such-if0");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("no-such-if0"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace flowmark::bpf
