// The sockets source's connection tracker on synthetic snapshots.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <set>
#include <vector>

#include "daemon/common/tracker.hpp"

namespace flowmark::daemon::sockets {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;

SocketInfo sock(std::uint64_t cookie, TcpState state, std::string_view src, std::string_view dst,
                std::uint64_t acked = 0, std::uint64_t received = 0) {
  SocketInfo s;
  s.cookie = cookie;
  s.state = state;
  s.src = *Endpoint::parse(src);
  s.dst = *Endpoint::parse(dst);
  s.family = s.src.address.family();
  scitags::TcpInfo ti;
  ti.bytes_acked = acked;
  ti.bytes_received = received;
  ti.rtt_us = 1000;
  s.tcp = ti;
  return s;
}

struct Recorder {
  std::vector<FlowEvent> events;
  ConnectionTracker::Emit emit() {
    return [this](const FlowEvent& e) { events.push_back(e); };
  }
  std::vector<FlowEvent> take() { return std::exchange(events, {}); }
};

constexpr std::string_view kLocal = "192.0.2.10:40000";  // documentation range: not global
constexpr std::string_view kRemote = "8.8.8.8:443";

TrackerOptions open_options() {
  TrackerOptions o;
  o.skip_private = false;
  o.seed = 1;
  return o;
}

TEST(SocketsTracker, FirstPollIsSilentThenNewConnectionsStart) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  const SocketInfo old = sock(1, TcpState::kEstablished, "192.0.2.10:40001", kRemote);
  std::vector<SocketInfo> snap{old};
  t.poll(snap, 100);
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.stats().existing, 1u);

  snap.push_back(sock(2, TcpState::kEstablished, kLocal, kRemote, 10, 20));
  t.poll(snap, 200);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].state, FlowState::kStart);
  EXPECT_EQ(ev[0].src, *Endpoint::parse(kLocal));
  EXPECT_EQ(ev[0].dst, *Endpoint::parse(kRemote));
  EXPECT_EQ(ev[0].protocol, scitags::Protocol::kTcp);
  EXPECT_EQ(ev[0].start_time, 200);
  EXPECT_EQ(ev[0].end_time, 0);
  ASSERT_TRUE(ev[0].usage);
  EXPECT_EQ(ev[0].usage->sent, 10u);
  EXPECT_EQ(ev[0].usage->received, 20u);
  ASSERT_TRUE(ev[0].tcp);
  EXPECT_EQ(ev[0].experiment, 0u);  // left to the classification rules

  // The old connection closing or vanishing was never announced: no end either.
  snap[0].state = TcpState::kFinWait1;
  t.poll(snap, 300);
  EXPECT_TRUE(r.take().empty());
  snap.erase(snap.begin());
  t.poll(snap, 400);
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.tracked(), 1u);
}

TEST(SocketsTracker, AnnounceExisting) {
  Recorder r;
  auto o = open_options();
  o.announce_existing = true;
  ConnectionTracker t(o, r.emit());
  std::vector<SocketInfo> snap{sock(1, TcpState::kEstablished, kLocal, kRemote)};
  t.poll(snap, 100);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].state, FlowState::kStart);
}

TEST(SocketsTracker, EveryClosingStateEndsOnce) {
  for (auto state :
       {TcpState::kFinWait1, TcpState::kFinWait2, TcpState::kCloseWait, TcpState::kLastAck,
        TcpState::kClosing, TcpState::kTimeWait, TcpState::kClose}) {
    SCOPED_TRACE(std::string(to_string(state)));
    Recorder r;
    ConnectionTracker t(open_options(), r.emit());
    t.poll({}, 1);
    std::vector<SocketInfo> snap{sock(7, TcpState::kEstablished, kLocal, kRemote, 5, 6)};
    t.poll(snap, 10);
    ASSERT_EQ(r.take().size(), 1u);
    snap[0] = sock(7, state, kLocal, kRemote, 50, 60);
    t.poll(snap, 20);
    auto ev = r.take();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].state, FlowState::kEnd);
    EXPECT_EQ(ev[0].start_time, 10);
    EXPECT_EQ(ev[0].end_time, 20);
    EXPECT_EQ(ev[0].usage->sent, 50u);
    EXPECT_EQ(ev[0].usage->received, 60u);
    // Still in a closing state, then gone: nothing more.
    t.poll(snap, 30);
    t.poll({}, 40);
    EXPECT_TRUE(r.take().empty());
    EXPECT_EQ(t.tracked(), 0u);
    EXPECT_EQ(t.stats().ends_closing, 1u);
    EXPECT_EQ(t.stats().ends_vanished, 0u);
  }
}

TEST(SocketsTracker, VanishedEndsOnceWithLastUsage) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  std::vector<SocketInfo> snap{sock(3, TcpState::kEstablished, kLocal, kRemote, 1, 2)};
  t.poll(snap, 10);
  snap[0] = sock(3, TcpState::kEstablished, kLocal, kRemote, 1000, 2000);
  t.poll(snap, 20);
  ASSERT_EQ(r.take().size(), 1u);  // the start only
  t.poll({}, 30);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].state, FlowState::kEnd);
  EXPECT_EQ(ev[0].start_time, 10);
  EXPECT_EQ(ev[0].end_time, 30);
  EXPECT_EQ(ev[0].usage->sent, 1000u);
  EXPECT_EQ(ev[0].usage->received, 2000u);
  t.poll({}, 40);
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.stats().ends_vanished, 1u);
}

TEST(SocketsTracker, HandshakeStartsWhenEstablished) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  std::vector<SocketInfo> snap{sock(4, TcpState::kSynSent, kLocal, kRemote)};
  t.poll(snap, 10);
  EXPECT_TRUE(r.take().empty());
  snap[0].state = TcpState::kEstablished;
  t.poll(snap, 20);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].start_time, 20);
}

TEST(SocketsTracker, PortReuseWithNewCookieIsANewConnection) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  std::vector<SocketInfo> snap{sock(10, TcpState::kEstablished, kLocal, kRemote)};
  t.poll(snap, 10);
  ASSERT_EQ(r.take().size(), 1u);
  // Between two polls the connection closed and the same 4-tuple was connected again:
  // the old socket lingers in TIME_WAIT, the new one is established.
  snap = {sock(10, TcpState::kTimeWait, kLocal, kRemote),
          sock(11, TcpState::kEstablished, kLocal, kRemote)};
  t.poll(snap, 20);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].state, FlowState::kEnd);
  EXPECT_EQ(ev[0].start_time, 10);
  EXPECT_EQ(ev[1].state, FlowState::kStart);
  EXPECT_EQ(ev[1].start_time, 20);
  EXPECT_EQ(ev[0].src, ev[1].src);
  EXPECT_EQ(ev[0].dst, ev[1].dst);
  // And when the old one is already gone: end (vanished) and start in the same poll.
  snap = {sock(12, TcpState::kEstablished, kLocal, kRemote)};
  t.poll(snap, 30);
  ev = r.take();
  ASSERT_EQ(ev.size(), 2u);
  std::multiset<FlowState> states{ev[0].state, ev[1].state};
  EXPECT_EQ(states.count(FlowState::kStart), 1u);
  EXPECT_EQ(states.count(FlowState::kEnd), 1u);
}

TEST(SocketsTracker, ShortLivedConnectionStartsAndEndsAtOnce) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  std::vector<SocketInfo> snap{sock(20, TcpState::kTimeWait, kLocal, kRemote)};
  t.poll(snap, 10);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].state, FlowState::kStart);
  EXPECT_EQ(ev[1].state, FlowState::kEnd);
  t.poll(snap, 20);
  t.poll({}, 30);
  EXPECT_TRUE(r.take().empty());
  // A failed connect (CLOSE, never seen established) is not a connection.
  snap = {sock(21, TcpState::kClose, kLocal, kRemote)};
  t.poll(snap, 40);
  EXPECT_TRUE(r.take().empty());
}

TEST(SocketsTracker, ListenersAndUnconnectedSkipped) {
  Recorder r;
  auto o = open_options();
  o.announce_existing = true;
  ConnectionTracker t(o, r.emit());
  std::vector<SocketInfo> snap{sock(30, TcpState::kListen, "0.0.0.0:80", kRemote),
                               sock(31, TcpState::kEstablished, "[::]:53", kRemote),
                               sock(32, TcpState::kEstablished, kLocal, kRemote)};
  snap[0].dst = Endpoint{IpAddress::any(Family::kV4), 0};  // a listener has no peer
  snap[1].dst = Endpoint{IpAddress::any(Family::kV6), 0};  // nor an unconnected UDP socket
  snap[1].protocol = scitags::Protocol::kUdp;
  snap[2].state = TcpState::kListen;  // whatever else it says
  t.poll(snap, 10);
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.tracked(), 0u);
}

TEST(SocketsTracker, InternalAndPrivateDestinationsSkipped) {
  Recorder r;
  TrackerOptions o;  // skip_private on, as flowd
  o.internal_networks = {*Network::parse("203.0.113.0/24"), *Network::parse("2001:db8::/32")};
  o.announce_existing = true;
  ConnectionTracker t(o, r.emit());
  std::vector<SocketInfo> snap{
      sock(40, TcpState::kEstablished, kLocal, "10.1.2.3:22"),
      sock(41, TcpState::kEstablished, kLocal, "127.0.0.1:22"),
      sock(42, TcpState::kEstablished, "[::1]:4000", "[::1]:22"),
      sock(43, TcpState::kEstablished, kLocal, "203.0.113.9:22"),
      sock(44, TcpState::kEstablished, "[2001:db8::1]:4000", "[2001:db8::2]:22"),
      sock(45, TcpState::kEstablished, kLocal, "192.168.1.1:22"),
      sock(46, TcpState::kEstablished, kLocal, kRemote),
  };
  t.poll(snap, 10);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].dst, *Endpoint::parse(kRemote));
  EXPECT_EQ(t.stats().skipped_internal, 6u);

  // skip_private off: only the configured internal networks are skipped.
  o.skip_private = false;
  ConnectionTracker t2(o, r.emit());
  t2.poll(snap, 10);
  ev = r.take();
  EXPECT_EQ(ev.size(), 5u);
  EXPECT_EQ(t2.stats().skipped_internal, 2u);
}

TEST(SocketsTracker, PortFilterMatchesSourceOrDestination) {
  Recorder r;
  auto o = open_options();
  o.announce_existing = true;
  o.ports = {{5201, 5201}, {8000, 8100}};
  ConnectionTracker t(o, r.emit());
  std::vector<SocketInfo> snap{
      sock(50, TcpState::kEstablished, kLocal, "8.8.8.8:5201"),      // dst
      sock(51, TcpState::kEstablished, "192.0.2.10:5201", kRemote),  // src (server side)
      sock(52, TcpState::kEstablished, kLocal, "8.8.8.8:8100"),      // range end
      sock(53, TcpState::kEstablished, kLocal, "8.8.8.8:8101"),
      sock(54, TcpState::kEstablished, kLocal, kRemote),
  };
  t.poll(snap, 10);
  EXPECT_EQ(r.take().size(), 3u);
  EXPECT_EQ(t.stats().skipped_port, 2u);
  // The filters run once per connection: the skipped ones are remembered by cookie.
  t.poll(snap, 20);
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.stats().skipped_port, 2u);
  EXPECT_EQ(t.tracked(), 3u);
  EXPECT_EQ(t.ignored(), 2u);
  t.poll({}, 30);
  EXPECT_EQ(r.take().size(), 3u);  // the three ends
  EXPECT_EQ(t.ignored(), 0u);
}

TEST(SocketsTracker, ConfiguredTagAndIperfChoices) {
  Recorder r;
  auto o = open_options();
  o.announce_existing = true;
  o.tag = {2, 1};
  ConnectionTracker fixed(o, r.emit());
  std::vector<SocketInfo> one{sock(60, TcpState::kEstablished, kLocal, kRemote)};
  fixed.poll(one, 1);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].experiment, 2u);
  EXPECT_EQ(ev[0].activity, 1u);

  // The iperf preset: port 5201, (exp, act) drawn per flow; the end keeps the start's draw.
  o.ports = {{5201, 5201}};
  o.choices = {{2, 1}, {3, 4}, {5, 6}};
  ConnectionTracker iperf(o, r.emit());
  std::vector<SocketInfo> snap;
  for (std::uint64_t i = 0; i < 60; ++i) {
    snap.push_back(sock(100 + i, TcpState::kEstablished, fmt::format("192.0.2.10:{}", 30000 + i),
                        "8.8.8.8:5201"));
  }
  iperf.poll(snap, 1);
  auto starts = r.take();
  ASSERT_EQ(starts.size(), 60u);
  std::set<std::pair<std::uint32_t, std::uint32_t>> drawn;
  for (const auto& e : starts) {
    const Tag tag{e.experiment, e.activity};
    EXPECT_TRUE(tag == o.choices[0] || tag == o.choices[1] || tag == o.choices[2]);
    drawn.insert({e.experiment, e.activity});
  }
  EXPECT_EQ(drawn.size(), 3u);  // 60 draws from 3: all appear (seeded)
  iperf.poll({}, 2);
  auto ends = r.take();
  ASSERT_EQ(ends.size(), 60u);
  for (const auto& end : ends) {
    for (const auto& start : starts) {
      if (start.src == end.src) {
        EXPECT_EQ(start.experiment, end.experiment);
        EXPECT_EQ(start.activity, end.activity);
      }
    }
  }
}

TEST(SocketsTracker, AbandonedPollEndsNothing) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  std::vector<SocketInfo> snap{sock(70, TcpState::kEstablished, kLocal, kRemote)};
  t.poll(snap, 10);
  ASSERT_EQ(r.take().size(), 1u);
  t.begin(20);  // a dump failed before this socket was seen
  t.abandon();
  EXPECT_TRUE(r.take().empty());
  EXPECT_EQ(t.tracked(), 1u);
  t.poll(snap, 30);
  EXPECT_TRUE(r.take().empty());
}

TEST(SocketsTracker, UdpStartsWhenConnectedAndEndsWhenGone) {
  Recorder r;
  ConnectionTracker t(open_options(), r.emit());
  t.poll({}, 1);
  auto s = sock(80, TcpState::kEstablished, kLocal, "8.8.8.8:53");
  s.protocol = scitags::Protocol::kUdp;
  s.tcp.reset();
  std::vector<SocketInfo> snap{s};
  t.poll(snap, 10);
  auto ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].protocol, scitags::Protocol::kUdp);
  EXPECT_FALSE(ev[0].usage);
  t.poll({}, 20);
  ev = r.take();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].state, FlowState::kEnd);
  EXPECT_EQ(ev[0].protocol, scitags::Protocol::kUdp);
}

TEST(SocketsTracker, PortRanges) {
  EXPECT_EQ(*parse_port_range("5201"), (PortRange{5201, 5201}));
  EXPECT_EQ(*parse_port_range("8000-8100"), (PortRange{8000, 8100}));
  EXPECT_FALSE(parse_port_range("8100-8000"));
  EXPECT_FALSE(parse_port_range("0"));
  EXPECT_FALSE(parse_port_range("70000"));
  EXPECT_FALSE(parse_port_range("a-b"));
  EXPECT_FALSE(parse_port_range(""));
}

}  // namespace
}  // namespace flowmark::daemon::sockets
