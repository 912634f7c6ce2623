// Observer: flows from frames, chains, timers on the packet clock. Frames are built here
// byte by byte and go through the real decoder; records are checked field by field.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "../testing/bytes.hpp"
#include "flowmark/observe/chains.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"

namespace flowmark::observe {
namespace {

using flowmark::testing::Bytes;
using flowmark::testing::put16;
using flowmark::testing::put32;

constexpr Nanos kMs = 1'000'000, kSec = 1'000'000'000;
constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10;

struct Addr {
  bool v6 = false;
  std::array<std::uint8_t, 16> b{};
  IpAddress ip() const {
    if (v6) {
      in6_addr a;
      std::copy(b.begin(), b.end(), reinterpret_cast<std::uint8_t*>(&a));
      return IpAddress::v6(a);
    }
    return IpAddress::v4(std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 |
                         std::uint32_t{b[2]} << 8 | b[3]);
  }
};
Addr v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
  Addr r;
  r.b[0] = a, r.b[1] = b, r.b[2] = c, r.b[3] = d;
  return r;
}
Addr v6(std::uint8_t last) {
  Addr r;
  r.v6 = true;
  r.b[0] = 0x20, r.b[1] = 0x01, r.b[2] = 0x0d, r.b[3] = 0xb8, r.b[15] = last;
  return r;
}

// High address first, so that a record's forward direction is not the canonical order.
const Addr kA = v4(198, 51, 100, 7), kB = v4(192, 0, 2, 1), kC = v4(203, 0, 113, 9);

void put_addr(Bytes& b, const Addr& a) {
  b.insert(b.end(), a.b.begin(), a.b.begin() + (a.v6 ? 16 : 4));
}

// --- transport ---
Bytes tcp(unsigned sport, unsigned dport, unsigned flags, std::size_t payload = 0) {
  Bytes b;
  put16(b, sport), put16(b, dport), put32(b, 1000), put32(b, 2000);
  b.push_back(5 << 4), b.push_back(static_cast<std::uint8_t>(flags));
  put16(b, 65535), put16(b, 0), put16(b, 0);
  b.insert(b.end(), payload, 0xab);
  return b;
}
Bytes udp(unsigned sport, unsigned dport, std::size_t payload = 0) {
  Bytes b;
  put16(b, sport), put16(b, dport), put16(b, static_cast<unsigned>(8 + payload)), put16(b, 0);
  b.insert(b.end(), payload, 0xcd);
  return b;
}
// ICMP(v6) header; an error's body is 4 unused bytes then the quoted packet.
Bytes icmp(unsigned type, unsigned code, const Bytes& body = Bytes(4, 0)) {
  Bytes b{static_cast<std::uint8_t>(type), static_cast<std::uint8_t>(code), 0, 0};
  b.insert(b.end(), body.begin(), body.end());
  return b;
}

// --- IP ---
struct Frag {
  unsigned id = 0, offset8 = 0;
  bool more = false;
};
Bytes ip(const Addr& src, const Addr& dst, unsigned proto, const Bytes& l4, Frag frag = {}) {
  Bytes b;
  if (!src.v6) {
    b.push_back(0x45), b.push_back(0);
    put16(b, static_cast<unsigned>(20 + l4.size()));
    put16(b, frag.id);
    put16(b, (frag.more ? 0x2000u : 0u) | frag.offset8);
    b.push_back(64), b.push_back(static_cast<std::uint8_t>(proto)), put16(b, 0);
  } else {
    put32(b, 0x60000000);
    put16(b, static_cast<unsigned>(l4.size()));
    b.push_back(static_cast<std::uint8_t>(proto)), b.push_back(64);
  }
  put_addr(b, src), put_addr(b, dst);
  b.insert(b.end(), l4.begin(), l4.end());
  return b;
}

// --- link ---
Bytes eth(const Bytes& ip_packet, std::vector<unsigned> vlans = {}) {
  Bytes b{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
  for (unsigned v : vlans) put16(b, 0x8100), put16(b, v);
  put16(b, (ip_packet[0] >> 4) == 6 ? 0x86dd : 0x0800);
  b.insert(b.end(), ip_packet.begin(), ip_packet.end());
  return b;
}

Bytes tcp_frame(const Addr& s, unsigned sp, const Addr& d, unsigned dp, unsigned flags,
                std::size_t payload = 0) {
  return eth(ip(s, d, kProtoTcp, tcp(sp, dp, flags, payload)));
}
Bytes udp_frame(const Addr& s, unsigned sp, const Addr& d, unsigned dp, std::size_t payload = 0,
                std::vector<unsigned> vlans = {}) {
  return eth(ip(s, d, kProtoUdp, udp(sp, dp, payload)), std::move(vlans));
}

// The frame with its IP header's TOS / traffic class set (after any VLAN tags).
Bytes with_tos(Bytes f, std::uint8_t tos) {
  std::size_t off = 12;
  while (f[off] == 0x81 && f[off + 1] == 0x00) off += 4;
  off += 2;
  if ((f[off] >> 4) == 4) {
    f[off + 1] = tos;
  } else {
    f[off] = static_cast<std::uint8_t>(0x60 | tos >> 4);
    f[off + 1] = static_cast<std::uint8_t>((tos & 0x0f) << 4 | (f[off + 1] & 0x0f));
  }
  return f;
}

// An Observer with a sink that keeps what it gets.
struct Harness {
  explicit Harness(ObserverConfig c = {})
      : obs(c, [this](const FlowRecord& r) {
          out.push_back(r);
          json.emplace_back();
          append_record_json(json.back(), r, &obs);
        }) {}
  void feed(Nanos t, const Bytes& f) {
    obs.on_packet(t, LinkType::kEthernet, std::as_bytes(std::span(f)));
  }
  std::vector<FlowRecord> out;
  std::vector<std::string> json;  // each record as written, with its chains' fields
  Observer obs;
};

// A chain counting the UDP datagrams of a flow in its state.
class CountUdp final : public Chain {
 public:
  std::string_view name() const noexcept override { return "count"; }
  std::size_t state_size() const noexcept override { return 8; }
  unsigned hooks() const noexcept override { return kHookUdp; }
  std::vector<std::string> columns() const override { return {"udp_seen"}; }
  Verdict on_transport(FlowRecord&, std::byte* s, const PacketView&, bool) noexcept override {
    ++*reinterpret_cast<std::uint64_t*>(s);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* s, FieldWriter& w) const override {
    w.number("udp_seen", *reinterpret_cast<const std::uint64_t*>(s));
  }
};

void expect_key(const FlowRecord& r, const Addr& s, unsigned sp, const Addr& d, unsigned dp,
                unsigned proto) {
  EXPECT_EQ(r.sip, s.ip());
  EXPECT_EQ(r.dip, d.ip());
  EXPECT_EQ(r.sp, sp);
  EXPECT_EQ(r.dp, dp);
  EXPECT_EQ(r.proto, proto);
}

// ---------------------------------------------------------------------------------------

TEST(Observer, BothDirectionsOneRecordWithDirectionAndIpOctets) {
  Harness h;
  std::vector<bool> revs;
  h.obs.add_ip4([&](FlowRecord&, const PacketView&, bool rev) {
    revs.push_back(rev);
    return Verdict::kContinue;
  });
  h.feed(1 * kSec, tcp_frame(kA, 40000, kB, 443, kSyn));  // 40 octets
  h.feed(1 * kSec + 10 * kMs, tcp_frame(kB, 443, kA, 40000, kSyn | kAck));
  h.feed(1 * kSec + 20 * kMs, tcp_frame(kA, 40000, kB, 443, kAck | kPsh, 100));  // 140
  h.feed(1 * kSec + 30 * kMs, tcp_frame(kB, 443, kA, 40000, kAck, 1000));        // 1040
  EXPECT_EQ(h.obs.active_flows(), 1u);
  EXPECT_TRUE(h.out.empty());
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  const FlowRecord& r = h.out[0];
  expect_key(r, kA, 40000, kB, 443, kProtoTcp);
  EXPECT_EQ(r.ip_version, 4);
  EXPECT_EQ(r.pkt_fwd, 2u);
  EXPECT_EQ(r.pkt_rev, 2u);
  EXPECT_EQ(r.oct_fwd, 40u + 140u);
  EXPECT_EQ(r.oct_rev, 40u + 1040u);
  EXPECT_EQ(r.tcp_flags_fwd, kSyn | kAck | kPsh);
  EXPECT_EQ(r.tcp_flags_rev, kSyn | kAck);
  EXPECT_EQ(r.first, 1 * kSec);
  EXPECT_EQ(r.last, 1 * kSec + 30 * kMs);
  EXPECT_FALSE(r.continuation);
  EXPECT_EQ(r.fragments, 0u);
  EXPECT_EQ(r.icmp_errors, 0u);
  EXPECT_EQ(revs, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(h.obs.stats().packets, 4u);
  EXPECT_EQ(h.obs.stats().flows, 1u);
  EXPECT_EQ(h.obs.stats().emitted, 1u);
  EXPECT_EQ(h.obs.active_flows(), 0u);
}

TEST(Observer, ForwardIsTheFirstPacketsDirectionEitherWay) {
  Harness h;
  h.feed(1, udp_frame(kB, 53, kA, 5353, 10));  // low endpoint speaks first this time
  h.feed(2, udp_frame(kA, 5353, kB, 53, 20));
  h.feed(3, udp_frame(kA, 5353, kB, 53, 20));
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  expect_key(h.out[0], kB, 53, kA, 5353, kProtoUdp);
  EXPECT_EQ(h.out[0].pkt_fwd, 1u);
  EXPECT_EQ(h.out[0].pkt_rev, 2u);
  EXPECT_EQ(h.out[0].oct_fwd, 38u);
  EXPECT_EQ(h.out[0].oct_rev, 96u);
}

TEST(Observer, Ipv6OctetsIncludeTheFixedHeader) {
  Harness h;
  h.feed(1, eth(ip(v6(1), v6(2), kProtoUdp, udp(1000, 2000, 52))));
  h.feed(2, eth(ip(v6(2), v6(1), kProtoUdp, udp(2000, 1000, 12))));
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  expect_key(h.out[0], v6(1), 1000, v6(2), 2000, kProtoUdp);
  EXPECT_EQ(h.out[0].ip_version, 6);
  EXPECT_EQ(h.out[0].oct_fwd, 40u + 8u + 52u);
  EXPECT_EQ(h.out[0].oct_rev, 40u + 8u + 12u);
}

TEST(Observer, SamePortsOtherProtocolOrFamilyAreOtherFlows) {
  Harness h;
  h.feed(1, tcp_frame(kA, 1000, kB, 2000, kAck));
  h.feed(2, udp_frame(kA, 1000, kB, 2000));
  h.feed(3, udp_frame(kA, 1000, kC, 2000));
  h.feed(4, udp_frame(kA, 1001, kB, 2000));
  EXPECT_EQ(h.obs.active_flows(), 4u);
}

TEST(Observer, FinFinCompletesAndIsEmittedAfterTheExpiryDelayWithTrailingAck) {
  Harness h;  // expiry_delay 5 s
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  const Nanos t0 = 100 * kSec;
  h.feed(t0, tcp_frame(kA, 40000, kB, 80, kSyn));
  h.feed(t0 + 1 * kMs, tcp_frame(kB, 80, kA, 40000, kSyn | kAck));
  h.feed(t0 + 2 * kMs, tcp_frame(kA, 40000, kB, 80, kAck));
  h.feed(t0 + 3 * kMs, tcp_frame(kA, 40000, kB, 80, kFin | kAck));
  h.feed(t0 + 4 * kMs, tcp_frame(kB, 80, kA, 40000, kFin | kAck));  // completes here
  h.feed(t0 + 1 * kSec, tcp_frame(kA, 40000, kB, 80, kAck));        // trailing ACK: still counted
  // Another flow's packets move the clock: not yet at 5 s after completion ...
  h.feed(t0 + 4 * kMs + 5 * kSec - 1, udp_frame(kC, 1, kB, 2));
  EXPECT_TRUE(h.out.empty());
  EXPECT_EQ(h.obs.active_flows(), 2u);
  // ... and exactly at it, before that packet is counted.
  h.feed(t0 + 4 * kMs + 5 * kSec, udp_frame(kC, 1, kB, 2));
  ASSERT_EQ(h.out.size(), 1u);
  const FlowRecord& r = h.out[0];
  expect_key(r, kA, 40000, kB, 80, kProtoTcp);
  EXPECT_EQ(r.pkt_fwd, 4u);
  EXPECT_EQ(r.pkt_rev, 2u);
  EXPECT_EQ(r.tcp_flags_fwd, kSyn | kAck | kFin);
  EXPECT_EQ(r.tcp_flags_rev, kSyn | kAck | kFin);
  EXPECT_EQ(r.last, t0 + 1 * kSec);
  EXPECT_EQ(h.obs.active_flows(), 1u);
}

TEST(Observer, OneFinIsNotCompletion) {
  Harness h;
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(0, tcp_frame(kA, 1, kB, 2, kFin | kAck));
  h.feed(1, tcp_frame(kA, 1, kB, 2, kFin | kAck));
  h.feed(10 * kSec, udp_frame(kC, 1, kB, 2));
  EXPECT_TRUE(h.out.empty());
}

TEST(Observer, RstCompletes) {
  Harness h({.expiry_delay_ns = 2 * kSec});
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(0, tcp_frame(kA, 40000, kB, 81, kSyn));
  h.feed(1 * kMs, tcp_frame(kB, 81, kA, 40000, kRst | kAck));
  h.feed(2 * kSec, udp_frame(kC, 1, kB, 2));  // 1 ms short
  EXPECT_TRUE(h.out.empty());
  h.feed(2 * kSec + 1 * kMs, udp_frame(kC, 1, kB, 2));
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].pkt_fwd, 1u);
  EXPECT_EQ(h.out[0].pkt_rev, 1u);
  EXPECT_EQ(h.out[0].tcp_flags_rev, kRst | kAck);
}

TEST(Observer, ExpiryDelayZeroEmitsBeforeTheNextPacket) {
  Harness h({.expiry_delay_ns = 0});
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(5, tcp_frame(kA, 1, kB, 2, kRst));
  EXPECT_TRUE(h.out.empty());
  h.feed(5, tcp_frame(kA, 1, kB, 2, kAck));  // same time: the record is gone
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].pkt_fwd, 1u);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_EQ(h.out[1].pkt_fwd, 1u);
}

TEST(Observer, IdleTimeoutAcrossAClockJumpGivesTwoRecords) {
  Harness h;  // idle 30 s
  h.feed(1000 * kSec, udp_frame(kA, 5000, kB, 6000, 10));
  h.feed(1000 * kSec + 1 * kSec, udp_frame(kB, 6000, kA, 5000, 10));
  h.feed(1000 * kSec + 62 * kSec, udp_frame(kA, 5000, kB, 6000, 10));  // 61 s gap
  ASSERT_EQ(h.out.size(), 1u);  // the first flow went out before this packet counted
  EXPECT_EQ(h.out[0].pkt_fwd, 1u);
  EXPECT_EQ(h.out[0].pkt_rev, 1u);
  EXPECT_EQ(h.out[0].last, 1001 * kSec);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_EQ(h.out[1].pkt_fwd, 1u);
  EXPECT_EQ(h.out[1].pkt_rev, 0u);
  EXPECT_EQ(h.out[1].first, 1062 * kSec);
  EXPECT_FALSE(h.out[1].continuation);
  EXPECT_EQ(h.obs.stats().flows, 2u);
}

TEST(Observer, IdleDeadlineIsExact) {
  Harness h({.idle_timeout_ns = 30 * kSec});
  h.feed(0, udp_frame(kA, 1, kB, 2));
  h.feed(30 * kSec - 1, udp_frame(kC, 1, kB, 2));
  EXPECT_TRUE(h.out.empty());
  h.feed(30 * kSec, udp_frame(kC, 1, kB, 2));
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].sip, kA.ip());
}

TEST(Observer, ClockJumpEmitsInDeadlineOrder) {
  Harness h({.idle_timeout_ns = 10 * kSec});
  for (unsigned i = 0; i < 5; ++i) h.feed(i * kSec, udp_frame(kA, 100 + i, kB, 2));
  h.feed(3600 * kSec, udp_frame(kC, 1, kB, 2));  // an hour later
  ASSERT_EQ(h.out.size(), 5u);
  for (unsigned i = 0; i < 5; ++i) EXPECT_EQ(h.out[i].sp, 100 + i);
}

TEST(Observer, ActiveTimeoutSplitsIntoContinuations) {
  Harness h({.idle_timeout_ns = 30 * kSec, .active_timeout_ns = 10 * kSec});
  for (int t = 0; t <= 24; t += 2) h.feed(t * kSec, udp_frame(kA, 1, kB, 2, 2));  // 30 octets
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_FALSE(h.out[0].continuation);
  EXPECT_EQ(h.out[0].first, 0);
  EXPECT_EQ(h.out[0].last, 8 * kSec);
  EXPECT_EQ(h.out[0].pkt_fwd, 5u);
  EXPECT_EQ(h.out[0].oct_fwd, 150u);
  EXPECT_TRUE(h.out[1].continuation);
  EXPECT_EQ(h.out[1].first, 10 * kSec);
  EXPECT_EQ(h.out[1].last, 18 * kSec);
  EXPECT_EQ(h.out[1].pkt_fwd, 5u);
  expect_key(h.out[1], kA, 1, kB, 2, kProtoUdp);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 3u);
  EXPECT_TRUE(h.out[2].continuation);
  EXPECT_EQ(h.out[2].first, 20 * kSec);
  EXPECT_EQ(h.out[2].last, 24 * kSec);
  EXPECT_EQ(h.out[2].pkt_fwd, 3u);
  EXPECT_EQ(h.obs.stats().flows, 1u);
  EXPECT_EQ(h.obs.stats().emitted, 3u);
}

TEST(Observer, ActiveTimeoutKeepsDirectionAndChainStateAndDropsEmptyParts) {
  Harness h({.idle_timeout_ns = 5 * kSec, .active_timeout_ns = 10 * kSec});
  h.obs.add_chain(std::make_unique<CountUdp>());
  h.feed(0, udp_frame(kA, 1, kB, 2));
  h.feed(4 * kSec, udp_frame(kB, 2, kA, 1));
  h.feed(8 * kSec, udp_frame(kA, 1, kB, 2));
  h.feed(12 * kSec, udp_frame(kB, 2, kA, 1));  // after the split at 10 s: reverse still
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_NE(h.json[0].find(R"("udp_seen":3})"), std::string::npos) << h.json[0];
  // No packet after 12 s: the part goes idle at 17 s and is emitted then.
  h.feed(30 * kSec, udp_frame(kC, 1, kB, 2));
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_TRUE(h.out[1].continuation);
  EXPECT_EQ(h.out[1].sip, kA.ip());
  EXPECT_EQ(h.out[1].pkt_fwd, 0u);
  EXPECT_EQ(h.out[1].pkt_rev, 1u);
  EXPECT_NE(h.json[1].find(R"("udp_seen":4})"), std::string::npos) << h.json[1];

  // A split with no packet after it before the idle timeout: nothing more is emitted.
  Harness g({.idle_timeout_ns = 5 * kSec, .active_timeout_ns = 10 * kSec});
  g.feed(0, udp_frame(kA, 1, kB, 2));
  g.feed(4 * kSec, udp_frame(kA, 1, kB, 2));
  g.feed(8 * kSec, udp_frame(kA, 1, kB, 2));
  g.feed(100 * kSec, udp_frame(kC, 1, kB, 2));  // split at 10 s, idle at 13 s
  ASSERT_EQ(g.out.size(), 1u);
  EXPECT_EQ(g.out[0].pkt_fwd, 3u);
  EXPECT_EQ(g.obs.active_flows(), 1u);  // only kC's flow
}

TEST(Observer, NewSynDuringExpiryStartsANewRecord) {
  Harness h;
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(0, tcp_frame(kA, 40000, kB, 80, kSyn));
  h.feed(1, tcp_frame(kB, 80, kA, 40000, kSyn | kAck));
  h.feed(2, tcp_frame(kA, 40000, kB, 80, kFin | kAck));
  h.feed(3, tcp_frame(kB, 80, kA, 40000, kFin | kAck));
  h.feed(4, tcp_frame(kA, 40000, kB, 80, kAck));
  // A retransmitted SYN-ACK is no new connection.
  h.feed(5, tcp_frame(kB, 80, kA, 40000, kSyn | kAck));
  EXPECT_TRUE(h.out.empty());
  h.feed(1 * kSec, tcp_frame(kA, 40000, kB, 80, kSyn));  // port reused within 5 s
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].pkt_fwd, 3u);
  EXPECT_EQ(h.out[0].pkt_rev, 3u);
  h.feed(1 * kSec + 1, tcp_frame(kB, 80, kA, 40000, kSyn | kAck));
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_EQ(h.out[1].first, 1 * kSec);
  EXPECT_EQ(h.out[1].pkt_fwd, 1u);
  EXPECT_EQ(h.out[1].pkt_rev, 1u);
  EXPECT_EQ(h.out[1].tcp_flags_fwd, kSyn);
  EXPECT_EQ(h.obs.stats().flows, 2u);
}

TEST(Observer, NewSynFromTheOtherSideAlsoStartsANewRecord) {
  Harness h;
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(0, tcp_frame(kA, 40000, kB, 80, kSyn));
  h.feed(1, tcp_frame(kB, 80, kA, 40000, kRst | kAck));
  h.feed(2, tcp_frame(kB, 80, kA, 40000, kSyn));
  ASSERT_EQ(h.out.size(), 1u);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  expect_key(h.out[1], kB, 80, kA, 40000, kProtoTcp);
}

TEST(Observer, NewFlowChainVetoIgnoresTheFlow) {
  Harness h;
  int calls = 0;
  h.obs.add_new_flow([&](FlowRecord& r, const PacketView& p) {
    ++calls;
    r.sp = 9999;  // key fields are the observer's: this is undone
    return !(p.has_ports && (p.sport == 53 || p.dport == 53));
  });
  h.feed(0, udp_frame(kA, 5353, kB, 53));
  h.feed(1, udp_frame(kB, 53, kA, 5353));
  h.feed(2, udp_frame(kA, 5353, kB, 53));
  h.feed(3, udp_frame(kA, 5353, kB, 54));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(h.obs.stats().ignored, 1u);
  EXPECT_EQ(h.obs.stats().ignored_packets, 2u);
  EXPECT_EQ(h.obs.stats().flows, 1u);
  EXPECT_EQ(h.obs.active_flows(), 1u);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].dp, 54);
  EXPECT_EQ(h.out[0].sp, 5353);
}

TEST(Observer, IgnoredKeysAreForgottenAfterTheIdleTimeout) {
  Harness h({.idle_timeout_ns = 10 * kSec});
  int calls = 0;
  h.obs.add_new_flow([&](FlowRecord&, const PacketView&) { return ++calls > 1; });
  h.feed(0, udp_frame(kA, 1, kB, 2));
  h.feed(9 * kSec, udp_frame(kA, 1, kB, 2));   // refreshes
  h.feed(18 * kSec, udp_frame(kB, 2, kA, 1));  // still ignored (9 s after)
  EXPECT_EQ(calls, 1);
  h.feed(40 * kSec, udp_frame(kA, 1, kB, 2));  // forgotten: asked again, accepted
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(h.obs.active_flows(), 1u);
}

TEST(Observer, EvictsTheLeastRecentlyActiveFlowWhenFull) {
  Harness h({.max_flows = 3});
  h.feed(1 * kSec, udp_frame(kA, 1, kB, 2));
  h.feed(2 * kSec, udp_frame(kA, 2, kB, 2));
  h.feed(3 * kSec, udp_frame(kA, 3, kB, 2));
  h.feed(4 * kSec, udp_frame(kB, 2, kA, 1));  // flow 1 active again
  h.feed(5 * kSec, udp_frame(kA, 4, kB, 2));  // full: flow 2 goes
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].sp, 2);
  EXPECT_EQ(h.out[0].end_reason, EndReason::kLackOfResources);
  EXPECT_EQ(h.obs.stats().evicted, 1u);
  EXPECT_EQ(h.obs.active_flows(), 3u);
  h.feed(6 * kSec, udp_frame(kA, 5, kB, 2));  // then flow 3
  ASSERT_EQ(h.out.size(), 2u);
  EXPECT_EQ(h.out[1].sp, 3);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 5u);
  std::vector<unsigned> rest;
  for (std::size_t i = 2; i < 5; ++i) rest.push_back(h.out[i].sp);
  std::sort(rest.begin(), rest.end());
  EXPECT_EQ(rest, (std::vector<unsigned>{1, 4, 5}));
  EXPECT_EQ(h.out[2].sp == 1 ? h.out[2].pkt_rev : 1u, 1u);
  EXPECT_EQ(h.obs.stats().evicted, 2u);
  EXPECT_EQ(h.obs.stats().emitted, 5u);
}

TEST(Observer, FragmentsAreAttributedToTheirFlowInTheirDirection) {
  Harness h;
  // A UDP datagram of 8 + 40 bytes in two fragments (24 + 24), and its answer in two.
  const Bytes dgram = udp(5000, 6000, 40);
  const Bytes first(dgram.begin(), dgram.begin() + 24), rest(dgram.begin() + 24, dgram.end());
  h.feed(1, eth(ip(kA, kB, kProtoUdp, first, {.id = 77, .offset8 = 0, .more = true})));
  h.feed(2, eth(ip(kA, kB, kProtoUdp, rest, {.id = 77, .offset8 = 3})));
  const Bytes answer = udp(6000, 5000, 40);
  const Bytes a1(answer.begin(), answer.begin() + 16), a2(answer.begin() + 16, answer.end());
  // Out of order at the far side: the first fragment still comes first here.
  h.feed(3, eth(ip(kB, kA, kProtoUdp, a1, {.id = 77, .offset8 = 0, .more = true})));
  h.feed(4, eth(ip(kB, kA, kProtoUdp, a2, {.id = 77, .offset8 = 2})));
  // A later fragment whose first fragment was never seen.
  h.feed(5, eth(ip(kA, kB, kProtoUdp, Bytes(16, 0), {.id = 99, .offset8 = 2})));
  EXPECT_EQ(h.obs.stats().fragments, 3u);
  EXPECT_EQ(h.obs.stats().fragments_unmatched, 1u);
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  const FlowRecord& r = h.out[0].sp == 5000 ? h.out[0] : h.out[1];
  const FlowRecord& u = h.out[0].sp == 5000 ? h.out[1] : h.out[0];
  expect_key(r, kA, 5000, kB, 6000, kProtoUdp);
  EXPECT_EQ(r.pkt_fwd, 2u);
  EXPECT_EQ(r.pkt_rev, 2u);
  EXPECT_EQ(r.oct_fwd, 44u + 44u);
  EXPECT_EQ(r.oct_rev, 36u + 52u);
  EXPECT_EQ(r.fragments, 2u);
  expect_key(u, kA, 0, kB, 0, kProtoUdp);  // the unmatched one: a 3-tuple flow
  EXPECT_EQ(u.pkt_fwd, 1u);
  EXPECT_EQ(u.fragments, 1u);
}

TEST(Observer, FragmentMapEntriesTimeOut) {
  Harness h({.idle_timeout_ns = 100 * kSec, .fragment_timeout_ns = 1 * kSec});
  const Bytes dgram = udp(5000, 6000, 40);
  h.feed(0, eth(ip(kA, kB, kProtoUdp, Bytes(dgram.begin(), dgram.begin() + 24),
                   {.id = 5, .more = true})));
  h.feed(2 * kSec, eth(ip(kA, kB, kProtoUdp, Bytes(dgram.begin() + 24, dgram.end()),
                          {.id = 5, .offset8 = 3})));
  EXPECT_EQ(h.obs.stats().fragments_unmatched, 1u);
  EXPECT_EQ(h.obs.active_flows(), 2u);
}

// A UDP probe A→B, B's port unreachable quoting it, and an error from C quoting a flow
// never seen; fed to h (matched: the ICMP errors the observer should match).
void feed_probe_and_errors(Harness& h, std::size_t& error_len, std::uint64_t matched = 1) {
  const Bytes probe = ip(kA, kB, kProtoUdp, udp(40000, 33434, 12));
  h.feed(1, eth(probe));
  // kB answers port unreachable, quoting the probe's IP header and 8 bytes.
  Bytes body(4, 0);
  body.insert(body.end(), probe.begin(), probe.begin() + 28);
  const Bytes error = ip(kB, kA, kProtoIcmp, icmp(3, 3, body));
  error_len = error.size();  // IP octets
  h.feed(2, eth(error));
  EXPECT_EQ(h.obs.stats().icmp_errors_matched, matched);
  // An error quoting a flow we never saw matches nothing.
  Bytes other(4, 0);
  const Bytes unseen = ip(kA, kC, kProtoUdp, udp(1, 2));
  other.insert(other.end(), unseen.begin(), unseen.end());
  h.feed(3, eth(ip(kC, kA, kProtoIcmp, icmp(3, 3, other))));
  EXPECT_EQ(h.obs.stats().icmp_errors_matched, matched);
  h.obs.finish();
}

TEST(Observer, IcmpErrorIsAttributedToTheQuotedFlow) {
  Harness h;
  std::vector<std::uint8_t> l4_protos;  // the error goes through the other-L4 chain
  h.obs.add_l4([&](FlowRecord& r, const PacketView& p, bool rev) {
    if (r.proto == kProtoUdp) {
      l4_protos.push_back(p.proto);
      EXPECT_TRUE(rev);
    }
    return Verdict::kContinue;
  });
  h.obs.add_udp([](FlowRecord&, const PacketView& p, bool) {
    EXPECT_EQ(p.proto, kProtoUdp);  // never the ICMP error
    return Verdict::kContinue;
  });
  std::size_t error_len = 0;
  feed_probe_and_errors(h, error_len);
  // The error counted on the UDP flow (against the probe's direction), no record of its
  // own; the error quoting an unseen flow is its own ICMP flow.
  ASSERT_EQ(h.out.size(), 2u);
  const FlowRecord* udpr = nullptr;
  const FlowRecord* icmpr = nullptr;
  for (const auto& r : h.out) {
    if (r.proto == kProtoUdp) udpr = &r;
    if (r.proto == kProtoIcmp) icmpr = &r;
  }
  ASSERT_TRUE(udpr && icmpr);
  EXPECT_TRUE(udpr->has_ports);
  EXPECT_EQ(udpr->icmp_errors, 1u);
  EXPECT_EQ(udpr->pkt_fwd, 1u);
  EXPECT_EQ(udpr->pkt_rev, 1u);
  EXPECT_EQ(udpr->oct_rev, error_len);  // IP octets of the error
  EXPECT_EQ(udpr->last, 2);
  EXPECT_EQ(l4_protos, std::vector<std::uint8_t>{kProtoIcmp});
  expect_key(*icmpr, kC, 0, kA, 0, kProtoIcmp);
  EXPECT_FALSE(icmpr->has_ports);
  EXPECT_EQ(icmpr->icmp_errors, 0u);
}

TEST(Observer, IcmpFlowsKeepsTheErrorsOwnRecord) {
  Harness h({.icmp_flows = true});
  std::size_t error_len = 0;
  feed_probe_and_errors(h, error_len);
  ASSERT_EQ(h.out.size(), 3u);
  const FlowRecord* udpr = nullptr;
  const FlowRecord* icmpr = nullptr;
  for (const auto& r : h.out) {
    if (r.proto == kProtoUdp) udpr = &r;
    if (r.proto == kProtoIcmp && r.sip == kB.ip()) icmpr = &r;
  }
  ASSERT_TRUE(udpr && icmpr);
  EXPECT_EQ(udpr->icmp_errors, 1u);
  EXPECT_EQ(udpr->pkt_fwd, 1u);
  EXPECT_EQ(udpr->pkt_rev, 0u);  // the error is not a packet of the UDP flow
  expect_key(*icmpr, kB, 0, kA, 0, kProtoIcmp);
  EXPECT_FALSE(icmpr->has_ports);
  EXPECT_EQ(icmpr->pkt_fwd, 1u);
  EXPECT_EQ(icmpr->oct_fwd, error_len);
  EXPECT_EQ(icmpr->icmp_errors, 0u);
}

TEST(Observer, IcmpErrorOfAVetoedFlowIsIgnoredWithIt) {
  for (const bool icmp_flows : {false, true}) {
    Harness h({.icmp_flows = icmp_flows});
    h.obs.add_new_flow([](FlowRecord& r, const PacketView&) { return r.proto != kProtoUdp; });
    std::size_t error_len = 0;
    feed_probe_and_errors(h, error_len, 0);
    // Default: the error quoting the vetoed UDP flow is skipped with it; only the error
    // quoting an unseen flow is a record. --icmp-flows: both errors are ICMP records.
    EXPECT_EQ(h.out.size(), icmp_flows ? 2u : 1u) << icmp_flows;
    EXPECT_EQ(h.obs.stats().ignored_packets, icmp_flows ? 0u : 1u) << icmp_flows;
    for (const auto& r : h.out) EXPECT_EQ(r.proto, kProtoIcmp);
  }
}

TEST(Observer, Icmpv6ErrorIsAttributedToTheQuotedTcpFlow) {
  Harness h;
  bool tcp_chain_saw_icmp = false;
  h.obs.add_tcp([&](FlowRecord&, const PacketView& p, bool) {
    tcp_chain_saw_icmp |= p.proto != kProtoTcp;
    return Verdict::kContinue;
  });
  const Bytes seg = ip(v6(1), v6(2), kProtoTcp, tcp(40000, 443, kAck, 1400));
  h.feed(1, eth(seg));
  Bytes body(4, 0);
  body.insert(body.end(), seg.begin(), seg.begin() + 48);
  h.feed(2, eth(ip(v6(9), v6(1), kProtoIcmpv6, icmp(2, 0, body))));  // packet too big
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  const FlowRecord& r = h.out[0];
  expect_key(r, v6(1), 40000, v6(2), 443, kProtoTcp);
  EXPECT_EQ(r.icmp_errors, 1u);
  EXPECT_EQ(r.pkt_fwd, 1u);
  EXPECT_EQ(r.pkt_rev, 1u);
  EXPECT_EQ(r.tcp_flags_rev, 0u);
  EXPECT_FALSE(tcp_chain_saw_icmp);
}

TEST(Observer, IcmpEchoIsOneThreeTupleFlow) {
  Harness h;
  h.feed(1, eth(ip(kA, kB, kProtoIcmp, icmp(8, 0))));
  h.feed(2, eth(ip(kB, kA, kProtoIcmp, icmp(0, 0))));
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  expect_key(h.out[0], kA, 0, kB, 0, kProtoIcmp);
  EXPECT_FALSE(h.out[0].has_ports);  // written as null
  EXPECT_EQ(h.out[0].pkt_fwd, 1u);
  EXPECT_EQ(h.out[0].pkt_rev, 1u);
}

TEST(Observer, VlanIsPartOfTheKeyOnlyWhenAsked) {
  for (bool key_vlan : {false, true}) {
    Harness h({.key_vlan = key_vlan});
    h.feed(1, udp_frame(kA, 1, kB, 2, 0, {10}));
    h.feed(2, udp_frame(kB, 2, kA, 1, 0, {20}));
    h.feed(3, udp_frame(kA, 1, kB, 2, 0, {10, 30}));  // QinQ: the outer tag counts
    h.feed(4, udp_frame(kA, 1, kB, 2));               // untagged
    h.obs.finish();
    if (!key_vlan) {
      ASSERT_EQ(h.out.size(), 1u);
      EXPECT_EQ(h.out[0].vlan, 10);
      EXPECT_EQ(h.out[0].pkt_fwd, 3u);
      EXPECT_EQ(h.out[0].pkt_rev, 1u);
    } else {
      ASSERT_EQ(h.out.size(), 3u);
      std::map<unsigned, std::uint64_t> pk;
      for (const auto& r : h.out) pk[r.vlan] = r.pkt_fwd + r.pkt_rev;
      EXPECT_EQ(pk, (std::map<unsigned, std::uint64_t>{{0, 1}, {10, 2}, {20, 1}}));
    }
  }
}

TEST(Observer, SelfFlowCountsEveryPacketForward) {
  Harness h;
  const Addr lo = v4(127, 0, 0, 1);
  h.feed(1, udp_frame(lo, 7000, lo, 7000, 4));
  h.feed(2, udp_frame(lo, 7000, lo, 7000, 4));
  h.feed(3, udp_frame(lo, 7000, lo, 7000, 4));
  h.feed(4, udp_frame(lo, 7000, lo, 7001, 4));  // other port: another flow
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 2u);
  const FlowRecord& r = h.out[0].dp == 7000 ? h.out[0] : h.out[1];
  EXPECT_EQ(r.pkt_fwd, 3u);
  EXPECT_EQ(r.pkt_rev, 0u);
  EXPECT_EQ(r.oct_fwd, 3u * 32u);
}

TEST(Observer, FinishEmitsExpiringThenActive) {
  Harness h;
  h.obs.add_tcp(tcp_complete_on_fin_or_rst);
  h.feed(1, udp_frame(kA, 1, kB, 2));        // active
  h.feed(2, tcp_frame(kA, 3, kB, 4, kRst));  // expiring
  h.feed(3, udp_frame(kC, 1, kB, 2));        // active
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 3u);
  EXPECT_EQ(h.out[0].proto, kProtoTcp);
  EXPECT_EQ(h.obs.active_flows(), 0u);
  EXPECT_EQ(h.obs.stats().emitted, 3u);
  // The observer can go on after finish().
  h.feed(4, udp_frame(kA, 1, kB, 2));
  EXPECT_EQ(h.obs.active_flows(), 1u);
  h.obs.finish();
  EXPECT_EQ(h.out.size(), 4u);
}

TEST(Observer, ChainsSeeEveryPacketAndAnyCompleteCompletes) {
  Harness h({.expiry_delay_ns = 1 * kSec});
  std::vector<std::string> calls;
  h.obs.add_ip4([&](FlowRecord& r, const PacketView&, bool) {
    calls.push_back("ip4:" + std::to_string(r.pkt_fwd + r.pkt_rev));  // counted already
    return r.pkt_fwd == 2 ? Verdict::kComplete : Verdict::kContinue;
  });
  h.obs.add_ip6([&](FlowRecord&, const PacketView&, bool) {
    calls.push_back("ip6");
    return Verdict::kContinue;
  });
  h.obs.add_udp([&](FlowRecord&, const PacketView&, bool) {
    calls.push_back("udp");
    return Verdict::kContinue;
  });
  h.obs.add_tcp([&](FlowRecord&, const PacketView&, bool) {
    calls.push_back("tcp");
    return Verdict::kContinue;
  });
  h.obs.add_l4([&](FlowRecord&, const PacketView& p, bool) {
    calls.push_back("l4:" + std::to_string(p.proto));
    return Verdict::kContinue;
  });
  h.feed(0, udp_frame(kA, 1, kB, 2));
  h.feed(1, udp_frame(kA, 1, kB, 2));  // ip4 says complete; udp still called
  h.feed(2, eth(ip(kA, kB, kProtoIcmp, icmp(8, 0))));
  h.feed(3, eth(ip(v6(1), v6(2), kProtoSctp, Bytes(12, 0))));
  EXPECT_EQ(calls, (std::vector<std::string>{"ip4:1", "udp", "ip4:2", "udp", "ip4:1", "l4:1", "ip6",
                                             "l4:132"}));
  h.feed(1 * kSec + 1, udp_frame(kC, 1, kB, 2));
  ASSERT_GE(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].proto, kProtoUdp);
  EXPECT_EQ(h.out[0].pkt_fwd, 2u);
}

// on_packets() counts the packets of known flows on a fast path while no chain needs to see
// them; a chain added to any layer (or next to the built-in TCP completion) sees every one.
TEST(Observer, BatchesRunEveryChainOnEveryPacket) {
  std::vector<Bytes> frames;
  for (int i = 0; i < 40; ++i) {
    frames.push_back(tcp_frame(kA, 1000, kB, 80, kAck, 10));
    frames.push_back(udp_frame(kB, 53, kA, 2000, 10));
    frames.push_back(udp_frame(v6(1), 53, v6(2), 2000, 10, {7}));
  }
  std::vector<FrameRef> refs;
  for (std::size_t i = 0; i < frames.size(); ++i)
    refs.push_back({static_cast<Nanos>(i) * kMs, std::as_bytes(std::span(frames[i]))});
  enum Where { kIp4, kIp6, kTcp, kUdp, kTcpWithBuiltin };
  for (const Where where : {kIp4, kIp6, kTcp, kUdp, kTcpWithBuiltin}) {
    Harness h;
    int calls = 0;
    PacketFn fn = [&](FlowRecord&, const PacketView&, bool) {
      ++calls;
      return Verdict::kContinue;
    };
    switch (where) {
      case kIp4: h.obs.add_ip4(fn); break;
      case kIp6: h.obs.add_ip6(fn); break;
      case kTcp: h.obs.add_tcp(fn); break;
      case kUdp: h.obs.add_udp(fn); break;
      case kTcpWithBuiltin:
        h.obs.add_tcp(tcp_complete_on_fin_or_rst);
        h.obs.add_tcp(fn);
        break;
    }
    h.obs.on_packets(LinkType::kEthernet, std::span(refs).first(60));
    h.obs.on_packets(LinkType::kEthernet, std::span(refs).subspan(60));
    const int want = where == kIp4 ? 80 : where == kUdp ? 80 : 40;
    EXPECT_EQ(calls, want) << "chain " << where;
    h.obs.finish();
    ASSERT_EQ(h.out.size(), 3u);
    for (const auto& r : h.out) EXPECT_EQ(r.pkt_fwd, 40u);
  }
}

TEST(Observer, ChainsAreAddedBeforeTheFirstPacketAndTheirStateIsTheirs) {
  Harness h;
  h.obs.add_chain(std::make_unique<CountUdp>());
  h.obs.add_chain(std::make_unique<CountUdp>());
  EXPECT_EQ(h.obs.chains().size(), 2u);
  h.feed(0, udp_frame(kA, 1, kB, 2));
  h.feed(1, udp_frame(kB, 2, kA, 1));
  EXPECT_THROW(h.obs.add_chain(std::make_unique<CountUdp>()), std::logic_error);
  h.obs.finish();
  ASSERT_EQ(h.json.size(), 1u);
  // Two chains, two states: each counted both datagrams.
  EXPECT_NE(h.json[0].find(R"("udp_seen":2,"udp_seen":2})"), std::string::npos) << h.json[0];
  // A copy of a record is not the observer's: no state for it.
  EXPECT_EQ(h.obs.chain_state(h.out[0], 0), nullptr);
  std::string csv;
  append_csv_header(csv, &h.obs);
  EXPECT_TRUE(csv.ends_with(",continuation,udp_seen,udp_seen\n")) << csv;
}

// chain_states() gives what chain_state() gives chain by chain, in one lookup.
TEST(Observer, ChainStatesAtOnceAreEachChainsState) {
  std::vector<std::vector<const std::byte*>> one_by_one, at_once;
  std::unique_ptr<Observer> obs;
  obs = std::make_unique<Observer>(ObserverConfig{}, [&](const FlowRecord& r) {
    const std::size_t n = obs->chains().size();
    one_by_one.emplace_back();
    for (std::size_t i = 0; i < n + 1; ++i) one_by_one.back().push_back(obs->chain_state(r, i));
    at_once.emplace_back(n + 1, reinterpret_cast<const std::byte*>(1));
    obs->chain_states(r, at_once.back());
    const FlowRecord copy = r;
    std::vector<const std::byte*> none(n, reinterpret_cast<const std::byte*>(1));
    obs->chain_states(copy, none);
    for (const std::byte* p : none) EXPECT_EQ(p, nullptr);
  });
  obs->add_chain(std::make_unique<CountUdp>());
  obs->add_chain(make_chain("ecn"));
  obs->add_chain(std::make_unique<CountUdp>());
  const Bytes f = udp_frame(kA, 1, kB, 2);
  obs->on_packet(0, LinkType::kEthernet, std::as_bytes(std::span(f)));
  obs->finish();
  ASSERT_EQ(at_once.size(), 1u);
  EXPECT_EQ(at_once, one_by_one);
  ASSERT_EQ(at_once[0].size(), 4u);
  EXPECT_NE(at_once[0][0], nullptr);
  EXPECT_LT(at_once[0][0], at_once[0][2]);
  EXPECT_EQ(at_once[0][3], nullptr);  // no chain 3
}

TEST(Observer, DecodeErrorsAreCountedByReason) {
  Harness h;
  Bytes arp{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06};
  arp.resize(42, 0);
  h.feed(1, arp);
  Bytes cut = udp_frame(kA, 1, kB, 2);
  cut.resize(14 + 20 + 3);  // not even the ports
  h.feed(2, cut);
  h.feed(3, Bytes{1, 2, 3});
  const auto& s = h.obs.stats();
  EXPECT_EQ(s.packets, 3u);
  EXPECT_EQ(s.non_ip, 1u);
  EXPECT_EQ(s.short_packets, 1u);
  EXPECT_EQ(s.decode_errors[static_cast<std::size_t>(DecodeError::kNotIp)], 1u);
  EXPECT_EQ(s.decode_errors[static_cast<std::size_t>(DecodeError::kTruncatedL4)], 1u);
  EXPECT_EQ(s.decode_errors[static_cast<std::size_t>(DecodeError::kTruncatedLink)], 1u);
  EXPECT_EQ(h.obs.active_flows(), 0u);
}

TEST(Observer, TimestampsGoingBackwardsUseTheClock) {
  Harness h;
  h.feed(10 * kSec, udp_frame(kA, 1, kB, 2));
  h.feed(5 * kSec, udp_frame(kB, 2, kA, 1));
  h.obs.finish();
  ASSERT_EQ(h.out.size(), 1u);
  EXPECT_EQ(h.out[0].first, 10 * kSec);
  EXPECT_EQ(h.out[0].last, 10 * kSec);
  EXPECT_EQ(h.out[0].pkt_rev, 1u);
  EXPECT_EQ(h.obs.stats().late_packets, 1u);
}

TEST(Observer, MemoryPerFlowIsWithinTarget) {
  auto with = [](std::string_view list) {
    Observer obs({}, nullptr);
    const auto names = parse_chain_list(list);  // kept: the loop reads into it
    for (const auto& n : *names)
      if (auto c = make_chain(n)) obs.add_chain(std::move(c));
    return obs.bytes_per_flow();
  };
  EXPECT_GE(with("basic"), sizeof(FlowRecord));
  EXPECT_LE(with(kDefaultChains), 200u);
  EXPECT_LE(with("all"), 224u);
}

// 100,000 concurrent flows, every flow seen several times in both directions, idle
// timeouts and evictions along the way: everything adds up. (No timing asserts.)
TEST(Observer, HundredThousandFlows) {
  constexpr unsigned kFlows = 100'000;
  std::uint64_t emitted = 0, pkts = 0;
  Observer obs({.idle_timeout_ns = 20 * kSec, .max_flows = 90'000}, [&](const FlowRecord& r) {
    ++emitted;
    pkts += r.pkt_fwd + r.pkt_rev;
  });
  std::vector<Bytes> frames;
  frames.reserve(2 * kFlows);
  for (unsigned i = 0; i < kFlows; ++i) {
    const Addr a = v4(10, static_cast<std::uint8_t>(i >> 16), static_cast<std::uint8_t>(i >> 8),
                      static_cast<std::uint8_t>(i));
    frames.push_back(udp_frame(a, 1000 + i % 5000, kB, 53));
    frames.push_back(udp_frame(kB, 53, a, 1000 + i % 5000));
  }
  std::mt19937 rng(1);
  Nanos t = 0;
  std::uint64_t fed = 0;
  for (int round = 0; round < 4; ++round) {
    std::vector<unsigned> order(frames.size());
    for (unsigned i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), rng);
    for (unsigned i : order) {
      t += 50'000;  // 50 µs: a round is 10 s of packet clock
      obs.on_packet(t, LinkType::kEthernet, std::as_bytes(std::span(frames[i])));
      ++fed;
    }
    if (round == 1) t += 25 * kSec;  // everything goes idle once
  }
  EXPECT_LE(obs.active_flows(), 90'000u);
  obs.finish();
  EXPECT_EQ(pkts, fed);
  EXPECT_EQ(emitted, obs.stats().emitted);
  EXPECT_GT(obs.stats().evicted, 0u);
  EXPECT_EQ(obs.stats().flows, obs.stats().emitted);
}

// ---------------------------------------------------------------------------------------
// Randomised check of the timers against a plain model that scans every flow for its
// deadline at every packet: same records, emitted before the same packets.

struct ModelFlow {
  FlowRecord rec;
  bool expiring = false, pending = false;
  Nanos expire_at = 0;
};

class Model {
 public:
  Model(Nanos idle, Nanos active, Nanos expiry) : idle_(idle), active_(active), expiry_(expiry) {}

  void packet(Nanos now, const Addr& s, unsigned sp, const Addr& d, unsigned dp, unsigned proto,
              unsigned flags, std::uint32_t len, std::vector<FlowRecord>& out) {
    fire(now, out);
    auto key = std::make_tuple(std::min(std::make_pair(s.b, sp), std::make_pair(d.b, dp)),
                               std::max(std::make_pair(s.b, sp), std::make_pair(d.b, dp)), proto);
    auto it = flows_.find(key);
    if (it != flows_.end() && it->second.expiring && proto == kProtoTcp &&
        (flags & (kSyn | kAck)) == kSyn) {
      out.push_back(it->second.rec);
      flows_.erase(it);
      it = flows_.end();
    }
    bool rev = false;
    if (it == flows_.end()) {
      ModelFlow f;
      f.rec.sip = s.ip(), f.rec.dip = d.ip(), f.rec.sp = static_cast<std::uint16_t>(sp);
      f.rec.dp = static_cast<std::uint16_t>(dp), f.rec.proto = static_cast<std::uint8_t>(proto);
      f.rec.ip_version = 4, f.rec.first = now;
      it = flows_.emplace(key, f).first;
    } else {
      rev = !(it->second.rec.sip == s.ip() && it->second.rec.sp == sp);
      if (it->second.pending) it->second.pending = false, it->second.rec.first = now;
    }
    FlowRecord& r = it->second.rec;
    (rev ? r.pkt_rev : r.pkt_fwd)++;
    (rev ? r.oct_rev : r.oct_fwd) += len;
    (rev ? r.tcp_flags_rev : r.tcp_flags_fwd) |= static_cast<std::uint8_t>(flags);
    r.last = now;
    if (proto == kProtoTcp && !it->second.expiring) {
      const bool done = (flags & kRst) || ((r.tcp_flags_fwd & kFin) && (r.tcp_flags_rev & kFin));
      if (done) it->second.expiring = true, it->second.expire_at = now + expiry_;
    }
  }

  void finish(std::vector<FlowRecord>& out) {
    for (auto& [k, f] : flows_)
      if (f.expiring) out.push_back(f.rec);
    for (auto& [k, f] : flows_)
      if (!f.expiring && !f.pending) out.push_back(f.rec);
    flows_.clear();
  }

 private:
  Nanos deadline(const ModelFlow& f) const {
    if (f.expiring) return f.expire_at;
    if (f.pending) return f.rec.last + idle_;
    return std::min(f.rec.last + idle_, f.rec.first + active_);
  }
  void fire(Nanos now, std::vector<FlowRecord>& out) {
    for (;;) {
      auto best = flows_.end();
      for (auto it = flows_.begin(); it != flows_.end(); ++it)
        if (deadline(it->second) <= now &&
            (best == flows_.end() || deadline(it->second) < deadline(best->second)))
          best = it;
      if (best == flows_.end()) return;
      ModelFlow& f = best->second;
      if (f.expiring) {
        out.push_back(f.rec);
        flows_.erase(best);
      } else if (f.pending || f.rec.last + idle_ <= f.rec.first + active_) {
        if (!f.pending) out.push_back(f.rec);
        flows_.erase(best);
      } else {
        out.push_back(f.rec);
        FlowRecord& r = f.rec;
        r.pkt_fwd = r.pkt_rev = r.oct_fwd = r.oct_rev = 0;
        r.tcp_flags_fwd = r.tcp_flags_rev = 0;
        r.continuation = true;
        f.pending = true;
      }
    }
  }

  Nanos idle_, active_, expiry_;
  std::map<std::tuple<std::pair<std::array<std::uint8_t, 16>, unsigned>,
                      std::pair<std::array<std::uint8_t, 16>, unsigned>, unsigned>,
           ModelFlow>
      flows_;
};

using RecordKey =
    std::tuple<std::string, std::string, unsigned, unsigned, unsigned, Nanos, Nanos, std::uint64_t,
               std::uint64_t, std::uint64_t, std::uint64_t, unsigned, unsigned, bool>;
std::vector<RecordKey> canon(const std::vector<FlowRecord>& rs) {
  std::vector<RecordKey> v;
  for (const auto& r : rs)
    v.emplace_back(r.sip.to_string(), r.dip.to_string(), r.sp, r.dp, r.proto, r.first, r.last,
                   r.pkt_fwd, r.pkt_rev, r.oct_fwd, r.oct_rev, r.tcp_flags_fwd, r.tcp_flags_rev,
                   r.continuation);
  std::sort(v.begin(), v.end());
  return v;
}

TEST(Observer, TimersMatchAScanningModel) {
  const Nanos idle = 3 * kSec, active = 7 * kSec, expiry = 1 * kSec;
  for (unsigned seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    std::vector<FlowRecord> got, want;
    Observer obs({.expiry_delay_ns = expiry, .idle_timeout_ns = idle, .active_timeout_ns = active},
                 [&](const FlowRecord& r) { got.push_back(r); });
    obs.add_tcp(tcp_complete_on_fin_or_rst);
    Model model(idle, active, expiry);
    const Addr hosts[] = {kA, kB, kC, v4(10, 0, 0, 1)};
    const unsigned flag_set[] = {kSyn, kSyn | kAck, kAck, kAck, kAck, kFin | kAck, kRst};
    Nanos t = 0;
    for (int i = 0; i < 3000; ++i) {
      // Even seeds: gaps on a 100 ms grid, so that packets land exactly on deadlines;
      // odd seeds: any nanosecond. Now and then a gap longer than the whole wheel.
      const auto g = static_cast<unsigned>(rng() % 100);
      const Nanos small = seed % 2 ? static_cast<Nanos>(rng() % 2'000'000'000)
                                   : static_cast<Nanos>(rng() % 20) * 100 * kMs;
      t += g < 60   ? 0
           : g < 90 ? small
           : g < 99 ? static_cast<Nanos>(rng() % 80) * 100 * kMs
                    : static_cast<Nanos>(rng() % 200) * kSec;
      const Addr& s = hosts[rng() % 4];
      const Addr& d = hosts[rng() % 4];
      const auto sp = static_cast<unsigned>(1 + rng() % 3);
      const auto dp = static_cast<unsigned>(1 + rng() % 3);
      const bool is_tcp = rng() % 2;
      const unsigned flags = is_tcp ? flag_set[rng() % 7] : 0;
      const std::size_t payload = rng() % 50;
      const Bytes f =
          is_tcp ? tcp_frame(s, sp, d, dp, flags, payload) : udp_frame(s, sp, d, dp, payload);
      const auto len = static_cast<std::uint32_t>(f.size() - 14);
      const std::size_t before = want.size();
      model.packet(t, s, sp, d, dp, is_tcp ? kProtoTcp : kProtoUdp, flags, len, want);
      const std::size_t got_before = got.size();
      obs.on_packet(t, LinkType::kEthernet, std::as_bytes(std::span(f)));
      // Same records out before this packet (the order among equal deadlines may differ).
      ASSERT_EQ(canon({got.begin() + got_before, got.end()}),
                canon({want.begin() + before, want.end()}))
          << "seed " << seed << " packet " << i << " t " << t;
    }
    const std::size_t before = want.size(), got_before = got.size();
    model.finish(want);
    obs.finish();
    ASSERT_EQ(canon({got.begin() + got_before, got.end()}),
              canon({want.begin() + before, want.end()}))
        << "seed " << seed;
  }
}

// on_packets() is on_packet() frame by frame: the same records in the same order, the
// same statistics, whatever the batch sizes — fragments, ICMP errors, decode errors, clock
// jumps and evictions included.
TEST(Observer, BatchesBehaveLikeSinglePackets) {
  std::mt19937 rng(7);
  const Addr hosts[] = {kA, kB, kC, v6(1), v6(2)};
  std::vector<Bytes> frames;
  std::vector<Nanos> times;
  Nanos t = 0;
  for (int i = 0; i < 5000; ++i) {
    const auto r = static_cast<unsigned>(rng() % 100);
    t += r < 70 ? static_cast<Nanos>(rng() % 1000) * kMs : static_cast<Nanos>(rng() % 40) * kSec;
    const bool six = rng() % 4 == 0;
    const Addr& s = hosts[six ? 3 + rng() % 2 : rng() % 3];
    const Addr& d = hosts[six ? 3 + rng() % 2 : rng() % 3];
    const auto sp = static_cast<unsigned>(1 + rng() % 4), dp = static_cast<unsigned>(1 + rng() % 4);
    const auto kind = static_cast<unsigned>(rng() % 10);
    Bytes f;
    if (kind < 4) {
      const unsigned flags[] = {kSyn, kSyn | kAck, kAck, kFin | kAck, kRst};
      f = tcp_frame(s, sp, d, dp, flags[rng() % 5], rng() % 30);
    } else if (kind < 7) {
      f = udp_frame(s, sp, d, dp, rng() % 30,
                    rng() % 3 == 0 ? std::vector<unsigned>{10} : std::vector<unsigned>{});
    } else if (kind == 7 && !six) {  // a fragment, first or later
      const Bytes dgram = udp(sp, dp, 40);
      const unsigned id = static_cast<unsigned>(rng() % 3);
      f = rng() % 2 ? eth(ip(s, d, kProtoUdp, Bytes(dgram.begin(), dgram.begin() + 24),
                             {.id = id, .more = true}))
                    : eth(ip(s, d, kProtoUdp, Bytes(dgram.begin() + 24, dgram.end()),
                             {.id = id, .offset8 = 3}));
    } else if (kind == 8 && !six) {  // an ICMP error quoting a UDP packet
      const Bytes quoted = ip(d, s, kProtoUdp, udp(dp, sp));
      Bytes body(4, 0);
      body.insert(body.end(), quoted.begin(), quoted.begin() + 28);
      f = eth(ip(s, d, kProtoIcmp, icmp(3, 3, body)));
    } else {
      f = udp_frame(s, sp, d, dp);
      f.resize(14 + (six ? 40 : 20) + 3);  // cut in the UDP header
    }
    if (f.size() > 14 + 20 && rng() % 2)
      f = with_tos(std::move(f), static_cast<std::uint8_t>(rng()));
    frames.push_back(std::move(f));
    times.push_back(t);
  }
  // Without and with record_tos (the fast path then reads the TOS too).
  for (const bool record_tos : {false, true}) {
    SCOPED_TRACE(record_tos ? "record_tos" : "no record_tos");
    const ObserverConfig cfg{.expiry_delay_ns = 2 * kSec,
                             .idle_timeout_ns = 20 * kSec,
                             .active_timeout_ns = 60 * kSec,
                             .max_flows = 12,
                             .record_tos = record_tos};
    Harness one(cfg), many(cfg);
    for (auto* h : {&one, &many}) h->obs.add_tcp(tcp_complete_on_fin_or_rst);
    for (std::size_t i = 0; i < frames.size(); ++i) one.feed(times[i], frames[i]);
    std::vector<FrameRef> refs;
    for (std::size_t i = 0; i < frames.size(); ++i)
      refs.push_back({times[i], std::as_bytes(std::span(frames[i]))});
    // Short batches, and some long enough for several of on_packets()' groups in flight.
    for (std::size_t i = 0; i < refs.size();) {
      const std::size_t n =
          std::min<std::size_t>(refs.size() - i, rng() % 4 == 0 ? rng() % 300 : rng() % 20);
      many.obs.on_packets(LinkType::kEthernet, std::span(refs).subspan(i, n));
      i += n;
    }
    one.obs.finish();
    many.obs.finish();
    ASSERT_EQ(one.out.size(), many.out.size());
    for (std::size_t i = 0; i < one.out.size(); ++i) {
      const auto a = canon({one.out[i]}), b = canon({many.out[i]});
      ASSERT_EQ(a, b) << "record " << i;
      EXPECT_EQ(one.out[i].fragments, many.out[i].fragments);
      EXPECT_EQ(one.out[i].icmp_errors, many.out[i].icmp_errors);
      EXPECT_EQ(one.out[i].tos_fwd, many.out[i].tos_fwd) << "record " << i;
      EXPECT_EQ(one.out[i].tos_rev, many.out[i].tos_rev) << "record " << i;
      EXPECT_EQ(one.out[i].end_reason, many.out[i].end_reason) << "record " << i;
      EXPECT_EQ(one.out[i].direction, many.out[i].direction) << "record " << i;
      if (!record_tos) {
        EXPECT_EQ(one.out[i].tos_fwd | one.out[i].tos_rev, 0);
      }
      EXPECT_NE(one.out[i].end_reason, EndReason::kNone);
    }
    const ObserverStats &x = one.obs.stats(), &y = many.obs.stats();
    EXPECT_EQ(x.packets, y.packets);
    EXPECT_EQ(x.flows, y.flows);
    EXPECT_EQ(x.evicted, y.evicted);
    EXPECT_EQ(x.emitted, y.emitted);
    EXPECT_EQ(x.short_packets, y.short_packets);
    EXPECT_EQ(x.fragments, y.fragments);
    EXPECT_EQ(x.fragments_unmatched, y.fragments_unmatched);
    EXPECT_EQ(x.icmp_errors_matched, y.icmp_errors_matched);
    EXPECT_GT(x.evicted, 0u);
    EXPECT_GT(x.fragments, 0u);
    EXPECT_GT(x.icmp_errors_matched, 0u);
    EXPECT_GT(x.short_packets, 0u);
    if (record_tos) {
      EXPECT_TRUE(std::any_of(one.out.begin(), one.out.end(),
                              [](const FlowRecord& r) { return r.tos_rev != 0; }));
    }
  }
}

// The IPFIX export's fields: why each record was emitted, who opened the flow, and the TOS of
// the first packet each way (record_tos), on the full path and on the fast path alike.
TEST(Observer, EndReasonDirectionAndFirstTos) {
  const ObserverConfig cfg{.expiry_delay_ns = 1 * kSec,
                           .idle_timeout_ns = 10 * kSec,
                           .active_timeout_ns = 100 * kSec,
                           .record_tos = true};
  for (const bool batched : {false, true}) {
    SCOPED_TRACE(batched ? "on_packets" : "on_packet");
    std::vector<std::pair<Nanos, Bytes>> in;
    // 1: a connection closed by FIN both ways; forward sent the SYN.
    in.push_back({0, with_tos(tcp_frame(kA, 1000, kB, 80, kSyn), 0x28)});
    in.push_back({1 * kMs, with_tos(tcp_frame(kB, 80, kA, 1000, kSyn | kAck), 0x0a)});
    in.push_back({2 * kMs, with_tos(tcp_frame(kA, 1000, kB, 80, kAck, 10), 0xb8)});
    in.push_back({3 * kMs, with_tos(tcp_frame(kB, 80, kA, 1000, kAck, 10), 0xff)});
    in.push_back({4 * kMs, tcp_frame(kA, 1000, kB, 80, kFin | kAck)});
    in.push_back({5 * kMs, tcp_frame(kB, 80, kA, 1000, kFin | kAck)});
    // 2: the answer seen first (SYN+ACK): the reverse side opened it; ends idle.
    in.push_back({6 * kMs, with_tos(tcp_frame(kC, 443, kA, 2000, kSyn | kAck), 0x04)});
    // 3: UDP, IPv6, both ways, long: split by the active timeout, then still open at the end.
    // Part 1: 7 s .. 103.5 s; part 2 from 107.5 s, its first packet a reverse one.
    for (int i = 0; i < 30; ++i) {
      const bool back = i % 2 == 1;
      Bytes f =
          back ? udp_frame(v6(2), 53, v6(1), 5000, 20) : udp_frame(v6(1), 5000, v6(2), 53, 20);
      const Nanos t = 7 * kSec + i * 4 * kSec + (i > 0 ? 500 * kMs : 0);
      in.push_back(
          {t, with_tos(std::move(f), static_cast<std::uint8_t>((back ? 0x40 : 0x80) + i))});
    }
    Harness h(cfg);
    h.obs.add_tcp(tcp_complete_on_fin_or_rst);
    if (batched) {
      std::vector<FrameRef> refs;
      for (const auto& [t, f] : in) refs.push_back({t, std::as_bytes(std::span(f))});
      h.obs.on_packets(LinkType::kEthernet, refs);
    } else {
      for (const auto& [t, f] : in) h.feed(t, f);
    }
    h.obs.finish();
    std::map<unsigned, std::vector<FlowRecord>> by_port;
    for (const FlowRecord& r : h.out) by_port[r.sp].push_back(r);
    ASSERT_EQ(by_port[1000].size(), 1u);
    const FlowRecord& fin = by_port[1000][0];
    EXPECT_EQ(fin.end_reason, EndReason::kEndDetected);
    EXPECT_EQ(fin.direction, BiflowDirection::kInitiator);
    EXPECT_EQ(fin.tos_fwd, 0x28);
    EXPECT_EQ(fin.tos_rev, 0x0a);
    ASSERT_EQ(by_port[443].size(), 1u);
    EXPECT_EQ(by_port[443][0].end_reason, EndReason::kIdleTimeout);
    EXPECT_EQ(by_port[443][0].direction, BiflowDirection::kReverseInitiator);
    EXPECT_EQ(by_port[443][0].tos_fwd, 0x04);
    EXPECT_EQ(by_port[443][0].tos_rev, 0);
    const auto& parts = by_port[5000];
    ASSERT_EQ(parts.size(), 2u);
    EXPECT_EQ(parts[0].end_reason, EndReason::kActiveTimeout);
    EXPECT_EQ(parts[1].end_reason, EndReason::kForcedEnd);
    for (const FlowRecord& r : parts) EXPECT_EQ(r.direction, BiflowDirection::kArbitrary);
    EXPECT_EQ(parts[0].tos_fwd, 0x80);  // the part's first packet each way
    EXPECT_EQ(parts[0].tos_rev, 0x41);
    EXPECT_EQ(parts[1].tos_rev, 0x40 + 25);
    EXPECT_EQ(parts[1].tos_fwd, 0x80 + 26);
  }
}

// A fast-path chain that completes a flow at its 4th non-SYN packet: on_quick() (batched on
// the fast path) and on_ip() (the full path) must count alike.
class CompleteAtFour final : public Chain {
 public:
  std::string_view name() const noexcept override { return "four"; }
  std::size_t state_size() const noexcept override { return 4; }
  std::size_t state_align() const noexcept override { return 4; }
  unsigned hooks() const noexcept override { return kHookIp | kHookQuick; }
  bool quick() const noexcept override { return true; }
  std::vector<std::string> columns() const override { return {"seen"}; }
  Verdict on_ip(FlowRecord&, std::byte* s, const PacketView& p, bool) noexcept override {
    if (p.proto == kProtoTcp && (p.tcp_flags & kSyn)) return Verdict::kContinue;
    return step(s);
  }
  Verdict on_quick(FlowRecord&, std::byte* s, const QuickFacts&, bool) noexcept override {
    return step(s);
  }
  void write(const FlowRecord&, const std::byte* s, FieldWriter& w) const override {
    w.number("seen", *reinterpret_cast<const std::uint32_t*>(s));
  }

 private:
  static Verdict step(std::byte* s) {
    auto& n = *reinterpret_cast<std::uint32_t*>(s);
    return ++n == 4 ? Verdict::kComplete : Verdict::kContinue;
  }
};

// With every built-in chain (and a chain completing flows on the fast path, with_four),
// on_packets() (the chains' on_quick in batches) writes the records on_packet() (the full
// path) writes: the same text, in the same order, with idle timeouts and evictions between
// the batches. Without a completing chain, the batches keep no completion notes
// (Chain::quick_completes).
void batched_chains_write_what_single_packets_write(bool with_four) {
  std::mt19937 rng(11);
  const Addr hosts[] = {kA, kB, kC, v6(1), v6(2)};
  std::vector<Bytes> frames;
  std::vector<Nanos> times;
  Nanos t = 0;
  for (int i = 0; i < 6000; ++i) {
    t += rng() % 50 == 0 ? static_cast<Nanos>(rng() % 30) * kSec
                         : static_cast<Nanos>(rng() % 200) * kMs;
    const bool six = rng() % 3 == 0;
    const Addr& s = hosts[six ? 3 + rng() % 2 : rng() % 3];
    const Addr& d = hosts[six ? 3 + rng() % 2 : rng() % 3];
    const auto sp = static_cast<unsigned>(1 + rng() % 3), dp = static_cast<unsigned>(1 + rng() % 3);
    Bytes f;
    if (rng() % 2) {
      const unsigned flags[] = {kSyn, kSyn | kAck, kAck,        kAck,
                                kAck, kAck | 0x08, kFin | kAck, kRst};
      f = tcp_frame(s, sp, d, dp, flags[rng() % 8], rng() % 3 ? rng() % 30 : 0);
    } else {
      f = udp_frame(s, sp, d, dp, rng() % 30);
    }
    // TOS / traffic class and flow label: what ecn, dscp, evil and scitags read.
    const std::size_t ip0 = 14;
    if (six) {
      f[ip0] = static_cast<std::uint8_t>(0x60 | (rng() % 16));
      f[ip0 + 1] = static_cast<std::uint8_t>(rng());
      if (rng() % 4) f[ip0 + 3] = static_cast<std::uint8_t>(rng() % 4);
    } else {
      f[ip0 + 1] = static_cast<std::uint8_t>(rng());  // (the checksum is not checked)
      if (rng() % 8 == 0) f[ip0 + 6] |= 0x80;         // the evil bit
    }
    frames.push_back(std::move(f));
    times.push_back(t);
  }
  const ObserverConfig cfg{.expiry_delay_ns = 1 * kSec,
                           .idle_timeout_ns = 10 * kSec,
                           .active_timeout_ns = 40 * kSec,
                           .max_flows = 20};
  Harness one(cfg), many(cfg);
  for (auto* h : {&one, &many}) {
    h->obs.add_tcp(tcp_complete_on_fin_or_rst);
    for (const auto name : kChainNames)
      if (auto c = make_chain(name)) h->obs.add_chain(std::move(c));
    if (with_four) h->obs.add_chain(std::make_unique<CompleteAtFour>());
  }
  for (std::size_t i = 0; i < frames.size(); ++i) one.feed(times[i], frames[i]);
  std::vector<FrameRef> refs;
  for (std::size_t i = 0; i < frames.size(); ++i)
    refs.push_back({times[i], std::as_bytes(std::span(frames[i]))});
  for (std::size_t i = 0; i < refs.size();) {
    const std::size_t n = std::min<std::size_t>(refs.size() - i, 1 + rng() % 100);
    many.obs.on_packets(LinkType::kEthernet, std::span(refs).subspan(i, n));
    i += n;
  }
  one.obs.finish();
  many.obs.finish();
  ASSERT_EQ(one.json.size(), many.json.size());
  for (std::size_t i = 0; i < one.json.size(); ++i) ASSERT_EQ(one.json[i], many.json[i]) << i;
  EXPECT_EQ(one.obs.stats().evicted, many.obs.stats().evicted);
  EXPECT_GT(one.obs.stats().evicted, 0u);
  // Flows completed by the chain on the fast path: a record with seen == 4 and more packets.
  std::size_t completed = 0;
  for (const auto& j : one.json) completed += j.find("\"seen\":4}") != std::string::npos;
  if (with_four) {
    EXPECT_GT(completed, 10u);
  }
}

TEST(Observer, BatchedChainsWriteWhatSinglePacketsWrite) {
  batched_chains_write_what_single_packets_write(true);
}

TEST(Observer, BatchedBuiltinChainsWriteWhatSinglePacketsWrite) {
  batched_chains_write_what_single_packets_write(false);
}

// The same with a table too large for the caches, where on_packets() looks ahead and
// prefetches: 20,000 background flows keep it large; new flows evict some of them.
TEST(Observer, BatchesBehaveLikeSinglePacketsWithALargeTable) {
  std::mt19937 rng(11);
  std::vector<Bytes> frames;
  std::vector<Nanos> times;
  Nanos t = 0;
  for (unsigned i = 0; i < 20'000; ++i) {  // background
    const Addr a = v4(10, 1, static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i));
    frames.push_back(udp_frame(a, 1000 + i % 7, kC, 53));
    times.push_back(t += 1000);
  }
  const Addr hosts[] = {kA, kB, kC, v4(10, 0, 0, 1)};
  for (int i = 0; i < 20'000; ++i) {
    t += static_cast<Nanos>(rng() % 2000) * kMs / 1000;
    const Addr& s = hosts[rng() % 4];
    const Addr& d = hosts[rng() % 4];
    const auto sp = static_cast<unsigned>(1 + rng() % 50),
               dp = static_cast<unsigned>(1 + rng() % 4);
    const auto kind = static_cast<unsigned>(rng() % 8);
    if (kind < 3) {
      const unsigned flags[] = {kSyn, kSyn | kAck, kAck, kFin | kAck, kRst};
      frames.push_back(tcp_frame(s, sp, d, dp, flags[rng() % 5], rng() % 30));
    } else if (kind < 6) {
      frames.push_back(udp_frame(s, sp, d, dp, rng() % 30));
    } else if (kind == 6) {  // a background flow again, either way
      const unsigned b = static_cast<unsigned>(rng() % 20'000);
      const Addr a = v4(10, 1, static_cast<std::uint8_t>(b >> 8), static_cast<std::uint8_t>(b));
      frames.push_back(rng() % 2 ? udp_frame(a, 1000 + b % 7, kC, 53)
                                 : udp_frame(kC, 53, a, 1000 + b % 7));
    } else {
      const Bytes dgram = udp(sp, dp, 40);
      frames.push_back(eth(
          ip(s, d, kProtoUdp, Bytes(dgram.begin() + 24, dgram.end()), {.id = 1, .offset8 = 3})));
    }
    times.push_back(t);
  }
  const ObserverConfig cfg{
      .expiry_delay_ns = 2 * kSec, .idle_timeout_ns = 600 * kSec, .max_flows = 20'300};
  Harness one(cfg), many(cfg);
  for (auto* h : {&one, &many}) h->obs.add_tcp(tcp_complete_on_fin_or_rst);
  for (std::size_t i = 0; i < frames.size(); ++i) one.feed(times[i], frames[i]);
  std::vector<FrameRef> refs;
  for (std::size_t i = 0; i < frames.size(); ++i)
    refs.push_back({times[i], std::as_bytes(std::span(frames[i]))});
  for (std::size_t i = 0; i < refs.size();) {
    const std::size_t n = std::min<std::size_t>(refs.size() - i, 1 + rng() % 100);
    many.obs.on_packets(LinkType::kEthernet, std::span(refs).subspan(i, n));
    i += n;
  }
  EXPECT_EQ(one.obs.active_flows(), many.obs.active_flows());
  one.obs.finish();
  many.obs.finish();
  ASSERT_EQ(one.out.size(), many.out.size());
  for (std::size_t i = 0; i < one.out.size(); ++i)
    ASSERT_EQ(canon({one.out[i]}), canon({many.out[i]})) << "record " << i;
  EXPECT_EQ(one.obs.stats().evicted, many.obs.stats().evicted);
  EXPECT_EQ(one.obs.stats().emitted, many.obs.stats().emitted);
  EXPECT_EQ(one.obs.stats().fragments_unmatched, many.obs.stats().fragments_unmatched);
  EXPECT_GT(one.obs.stats().evicted, 0u);
}

}  // namespace
}  // namespace flowmark::observe
