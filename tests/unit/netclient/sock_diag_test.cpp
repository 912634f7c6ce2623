// SockDiag against real loopback connections.
#include "flowmark/netclient/sock_diag.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

#include "../net/loopback_pair.hpp"

namespace flowmark::netclient {
namespace {

using testing::connect_pair;
using testing::listen_loopback;

// The socket with this 4-tuple (seen from its own side) in a fresh dump, if any.
std::optional<SocketInfo> find(SockDiag& diag, Family f, const Endpoint& src, const Endpoint& dst,
                               std::uint32_t states = kAllStates) {
  std::optional<SocketInfo> found;
  auto n = diag.dump({.family = f, .states = states, .want_info = true, .want_congestion = true},
                     [&](const SocketInfo& s) {
                       if (s.src == src && s.dst == dst) found = s;
                     });
  EXPECT_TRUE(n) << n.error().message();
  return found;
}

// Repeats `check` for up to two seconds (the kernel acks asynchronously).
template <typename F>
bool eventually(F check) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < until) {
    if (check()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return check();
}

void send_all(int fd, std::size_t n) {
  std::vector<char> buf(n, 'x');
  std::size_t done = 0;
  while (done < n) {
    auto w = ::send(fd, buf.data() + done, n - done, 0);
    ASSERT_GT(w, 0);
    done += static_cast<std::size_t>(w);
  }
}

void recv_all(int fd, std::size_t n) {
  std::vector<char> buf(64 * 1024);
  std::size_t done = 0;
  while (done < n) {
    auto r = ::recv(fd, buf.data(), std::min(buf.size(), n - done), 0);
    ASSERT_GT(r, 0);
    done += static_cast<std::size_t>(r);
  }
}

// A connected loopback pair of the family under test, its listener and a SockDiag.
class SockDiagLoopback : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    listener_ = listen_loopback(GetParam());
    if (!listener_) GTEST_SKIP() << "no loopback for this family";
    pair_ = connect_pair(listener_->get());
    ASSERT_TRUE(pair_);
    auto diag = SockDiag::open();
    ASSERT_TRUE(diag) << diag.error().message();
    diag_.emplace(std::move(*diag));
  }

  std::optional<UniqueFd> listener_;
  std::optional<testing::TcpPair> pair_;
  std::optional<SockDiag> diag_;
};

TEST_P(SockDiagLoopback, DumpFindsBothEndsWithTcpInfo) {
  const Family f = GetParam();

  auto client = find(*diag_, f, pair_->client_end, pair_->server_end);
  auto server = find(*diag_, f, pair_->server_end, pair_->client_end);
  ASSERT_TRUE(client);
  ASSERT_TRUE(server);
  EXPECT_EQ(client->state, TcpState::kEstablished);
  EXPECT_EQ(server->state, TcpState::kEstablished);
  EXPECT_EQ(client->family, f);
  EXPECT_EQ(client->protocol, scitags::Protocol::kTcp);
  EXPECT_NE(client->cookie, 0u);
  EXPECT_NE(client->cookie, server->cookie);
  EXPECT_NE(client->inode, 0u);
  EXPECT_EQ(client->uid, ::getuid());
  ASSERT_TRUE(client->tcp);
  EXPECT_GT(client->tcp->mss, 0u);
  EXPECT_GT(client->tcp->cwnd, 0u);
  EXPECT_FALSE(client->congestion().empty());

  // The listener shows with LISTEN in the mask, not with the connection states.
  const Endpoint listen_at = testing::local_of(listener_->get());
  Endpoint any_peer{IpAddress::any(f), 0};
  EXPECT_TRUE(find(*diag_, f, listen_at, any_peer));
  EXPECT_FALSE(find(*diag_, f, listen_at, any_peer, kConnectedStates));

  // N bytes client → server: acked on one side, received on the other.
  constexpr std::size_t kBytes = 100'000;
  send_all(pair_->client.get(), kBytes);
  recv_all(pair_->server.get(), kBytes);
  EXPECT_TRUE(eventually([&] {
    auto c = find(*diag_, f, pair_->client_end, pair_->server_end);
    // The kernel may count the SYN's sequence number as one byte acked.
    return c && c->tcp && c->tcp->bytes_acked >= kBytes && c->tcp->bytes_acked <= kBytes + 1;
  })) <<
      [&] {
        auto c = find(*diag_, f, pair_->client_end, pair_->server_end);
        if (!c) return std::string("client socket not found");
        return fmt::format("{}: state {} cookie {} tcp {} acked {} sent {}", c->src.to_string(),
                           to_string(c->state), c->cookie, c->tcp.has_value(),
                           c->tcp ? c->tcp->bytes_acked : 0, c->tcp ? c->tcp->bytes_sent : 0);
      }();
  server = find(*diag_, f, pair_->server_end, pair_->client_end);
  ASSERT_TRUE(server && server->tcp);
  EXPECT_EQ(server->tcp->bytes_received, kBytes);
  client = find(*diag_, f, pair_->client_end, pair_->server_end);
  ASSERT_TRUE(client && client->tcp);
  EXPECT_EQ(client->tcp->bytes_sent, kBytes);
  EXPECT_GT(client->tcp->segs_out, 1u);
  EXPECT_GT(client->tcp->rtt_us, 0u);
  EXPECT_EQ(diag_->stats().malformed, 0u);
}

TEST_P(SockDiagLoopback, LookupOneSocketAndCloseChangesState) {
  const Family f = GetParam();

  send_all(pair_->client.get(), 1000);
  recv_all(pair_->server.get(), 1000);
  auto one = diag_->lookup(scitags::Protocol::kTcp, pair_->client_end, pair_->server_end, true);
  ASSERT_TRUE(one) << one.error().message();
  ASSERT_TRUE(*one);
  EXPECT_EQ((*one)->src, pair_->client_end);
  EXPECT_EQ((*one)->dst, pair_->server_end);
  EXPECT_EQ((*one)->state, TcpState::kEstablished);
  ASSERT_TRUE((*one)->tcp);
  EXPECT_EQ((*one)->tcp->bytes_sent, 1000u);
  auto info = diag_->tcp_info(pair_->server_end, pair_->client_end);
  ASSERT_TRUE(info) << info.error().message();
  ASSERT_TRUE(*info);
  EXPECT_EQ((*info)->bytes_received, 1000u);

  // No such socket: not an error.
  Endpoint nowhere = pair_->server_end;
  nowhere.port = testing::local_of(listener_->get()).port;  // the listener has no such peer
  auto none = diag_->lookup(scitags::Protocol::kTcp, nowhere, pair_->server_end, false);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(*none);

  // The client closes: it goes to FIN_WAIT (or TIME_WAIT), the server to CLOSE_WAIT.
  pair_->client.reset();
  EXPECT_TRUE(eventually([&] {
    auto s = diag_->lookup(scitags::Protocol::kTcp, pair_->server_end, pair_->client_end, false);
    return s && *s && (*s)->state == TcpState::kCloseWait;
  }));
  auto c = find(*diag_, f, pair_->client_end, pair_->server_end);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->state == TcpState::kFinWait2 || c->state == TcpState::kFinWait1 ||
              c->state == TcpState::kTimeWait)
      << to_string(c->state);
  // The server closes too: the client's side ends in TIME_WAIT with the same cookie.
  const auto cookie = c->cookie;
  pair_->server.reset();
  EXPECT_TRUE(eventually([&] {
    auto tw = find(*diag_, f, pair_->client_end, pair_->server_end);
    return tw && tw->state == TcpState::kTimeWait && tw->cookie == cookie;
  }));
}

INSTANTIATE_TEST_SUITE_P(Families, SockDiagLoopback, ::testing::Values(Family::kV4, Family::kV6),
                         [](const auto& p) { return p.param == Family::kV4 ? "IPv4" : "IPv6"; });

TEST(SockDiag, DualStackSocketShowsIPv4Addresses) {
  // An IPv6 listener on [::] accepting an IPv4 client: the accepted socket is AF_INET6 with
  // ::ffff:127.0.0.1 addresses, reported as plain IPv4.
  auto listener = net::listen_tcp_dual_stack(0, 8);
  if (!listener) GTEST_SKIP() << "no IPv6: " << listener.error().message();
  const auto port = testing::local_of(listener->get()).port;
  const Endpoint to{*IpAddress::parse("127.0.0.1"), port};
  auto client = net::connect_tcp(to);
  ASSERT_TRUE(client) << client.error().message();
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  const Endpoint client_end = testing::local_of(client->get());

  auto diag = SockDiag::open();
  ASSERT_TRUE(diag);
  auto s = find(*diag, Family::kV6, to, client_end);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->family, Family::kV6);
  EXPECT_TRUE(s->src.address.is_v4());
  EXPECT_TRUE(s->dst.address.is_v4());
  auto one = diag->lookup(scitags::Protocol::kTcp, to, client_end, true);
  ASSERT_TRUE(one) << one.error().message();
  ASSERT_TRUE(*one);
  EXPECT_EQ((*one)->cookie, s->cookie);
}

TEST(SockDiag, UdpConnectedSocketIsEstablished) {
  auto rx = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0});
  ASSERT_TRUE(rx) << rx.error().message();
  const Endpoint rx_end = testing::local_of(rx->get());
  auto tx = net::open_udp_socket(Family::kV4);
  ASSERT_TRUE(tx) << tx.error().message();
  ASSERT_TRUE(net::connect_to(tx->get(), rx_end));
  const Endpoint tx_end = testing::local_of(tx->get());

  auto diag = SockDiag::open();
  ASSERT_TRUE(diag);
  auto all = diag->dump({.family = Family::kV4, .protocol = scitags::Protocol::kUdp});
  ASSERT_TRUE(all) << all.error().message();
  bool found_tx = false, found_rx = false;
  for (const auto& s : *all) {
    if (s.src == tx_end && s.dst == rx_end) {
      found_tx = true;
      EXPECT_EQ(s.state, TcpState::kEstablished);
      EXPECT_EQ(s.protocol, scitags::Protocol::kUdp);
      EXPECT_FALSE(s.tcp);
    }
    if (s.src == rx_end) {
      found_rx = true;
      EXPECT_EQ(s.state, TcpState::kClose);  // unconnected
    }
  }
  EXPECT_TRUE(found_tx);
  EXPECT_TRUE(found_rx);
  auto one = diag->lookup(scitags::Protocol::kUdp, tx_end, rx_end, false);
  ASSERT_TRUE(one) << one.error().message();
  EXPECT_TRUE(*one);
}

TEST(SockDiag, ShorterTcpInfoFromOlderKernels) {
  tcp_info ti{};
  ti.tcpi_rtt = 1234;
  ti.tcpi_snd_cwnd = 10;
  ti.tcpi_bytes_acked = 999;
  ti.tcpi_bytes_sent = 777;
  // A 4.x-era struct ends before tcpi_bytes_acked (no usage counters yet).
  auto old = tcp_info_from_bytes(&ti, offsetof(tcp_info, tcpi_pacing_rate));
  EXPECT_EQ(old.rtt_us, 1234u);
  EXPECT_EQ(old.cwnd, 10u);
  EXPECT_EQ(old.bytes_acked, 0u);
  EXPECT_EQ(old.bytes_sent, 0u);
  auto full = tcp_info_from_bytes(&ti, sizeof ti);
  EXPECT_EQ(full.bytes_acked, 999u);
  EXPECT_EQ(full.bytes_sent, 777u);
  // A newer kernel's longer struct is cut to ours.
  std::vector<std::byte> longer(sizeof ti + 64);
  std::memcpy(longer.data(), &ti, sizeof ti);
  EXPECT_EQ(tcp_info_from_bytes(longer.data(), longer.size()), full);
}

// A SOCK_DIAG_BY_FAMILY message as the kernel writes it: header, inet_diag_msg, attributes.
struct MessageBuilder {
  std::vector<std::byte> bytes;

  MessageBuilder(std::uint8_t family, TcpState state) {
    bytes.resize(NLMSG_LENGTH(sizeof(inet_diag_msg)));
    inet_diag_msg m{};
    m.idiag_family = family;
    m.idiag_state = static_cast<std::uint8_t>(state);
    m.id.idiag_sport = htons(40000);
    m.id.idiag_dport = htons(443);
    if (family == AF_INET) {
      m.id.idiag_src[0] = htonl(0xC0000201);  // 192.0.2.1
      m.id.idiag_dst[0] = htonl(0x08080808);  // 8.8.8.8
    } else {
      in6_addr mapped{};
      inet_pton(AF_INET6, "::ffff:192.0.2.1", &mapped);
      std::memcpy(m.id.idiag_src, &mapped, 16);
      inet_pton(AF_INET6, "2001:4860:4860::8888", &mapped);
      std::memcpy(m.id.idiag_dst, &mapped, 16);
    }
    m.id.idiag_cookie[0] = 0x89abcdef;
    m.id.idiag_cookie[1] = 0x01234567;
    m.idiag_uid = 1000;
    m.idiag_inode = 4242;
    std::memcpy(bytes.data() + NLMSG_HDRLEN, &m, sizeof m);
    set_len();
  }
  void attribute(std::uint16_t type, const void* data, std::size_t len) {
    const auto at = bytes.size();
    bytes.resize(at + RTA_SPACE(len));
    rtattr a{};
    a.rta_type = type;
    a.rta_len = static_cast<std::uint16_t>(RTA_LENGTH(len));
    std::memcpy(bytes.data() + at, &a, sizeof a);
    std::memcpy(bytes.data() + at + RTA_LENGTH(0), data, len);
    set_len();
  }
  void set_len(std::uint32_t len = 0) {
    nlmsghdr h{};
    h.nlmsg_len = len ? len : static_cast<std::uint32_t>(bytes.size());
    h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    std::memcpy(bytes.data(), &h, sizeof h);
  }
};

TEST(SockDiag, ParsesAKernelMessage) {
  MessageBuilder b(AF_INET, TcpState::kEstablished);
  tcp_info ti{};
  ti.tcpi_rtt = 250;
  ti.tcpi_snd_mss = 1448;
  // An old kernel's tcp_info, cut before the byte counters.
  b.attribute(INET_DIAG_INFO, &ti, offsetof(tcp_info, tcpi_pacing_rate));
  b.attribute(INET_DIAG_CONG, "bbr", 4);
  SocketInfo s;
  ASSERT_TRUE(parse_sock_diag_message(b.bytes, scitags::Protocol::kTcp, s));
  EXPECT_EQ(s.family, Family::kV4);
  EXPECT_EQ(s.state, TcpState::kEstablished);
  EXPECT_EQ(s.src, *Endpoint::parse("192.0.2.1:40000"));
  EXPECT_EQ(s.dst, *Endpoint::parse("8.8.8.8:443"));
  EXPECT_EQ(s.cookie, 0x0123456789abcdefULL);
  EXPECT_EQ(s.uid, 1000u);
  EXPECT_EQ(s.inode, 4242u);
  ASSERT_TRUE(s.tcp);
  EXPECT_EQ(s.tcp->rtt_us, 250u);
  EXPECT_EQ(s.tcp->mss, 1448u);
  EXPECT_EQ(s.tcp->bytes_acked, 0u);
  EXPECT_EQ(s.congestion(), "bbr");
  // UDP messages carry no tcp_info, whatever the attributes say.
  ASSERT_TRUE(parse_sock_diag_message(b.bytes, scitags::Protocol::kUdp, s));
  EXPECT_FALSE(s.tcp);

  MessageBuilder v6(AF_INET6, TcpState::kTimeWait);
  ASSERT_TRUE(parse_sock_diag_message(v6.bytes, scitags::Protocol::kTcp, s));
  EXPECT_EQ(s.family, Family::kV6);
  EXPECT_EQ(s.src, *Endpoint::parse("192.0.2.1:40000"));  // IPv4-mapped → IPv4
  EXPECT_EQ(s.dst, *Endpoint::parse("[2001:4860:4860::8888]:443"));
  EXPECT_FALSE(s.tcp);
  EXPECT_TRUE(s.congestion().empty());
}

TEST(SockDiag, MalformedMessagesAreRejected) {
  SocketInfo s;
  MessageBuilder good(AF_INET, TcpState::kEstablished);
  good.attribute(INET_DIAG_CONG, "cubic", 6);
  ASSERT_TRUE(parse_sock_diag_message(good.bytes, scitags::Protocol::kTcp, s));

  // Shorter than an inet_diag_msg.
  MessageBuilder short_msg = good;
  short_msg.bytes.resize(NLMSG_HDRLEN + 8);
  short_msg.set_len();
  EXPECT_FALSE(parse_sock_diag_message(short_msg.bytes, scitags::Protocol::kTcp, s));
  // Claims more than it holds.
  MessageBuilder overlong = good;
  overlong.set_len(static_cast<std::uint32_t>(good.bytes.size() + 16));
  EXPECT_FALSE(parse_sock_diag_message(overlong.bytes, scitags::Protocol::kTcp, s));
  // An attribute cut short: its header says 64 bytes, 12 follow.
  MessageBuilder cut = good;
  rtattr a{};
  a.rta_type = INET_DIAG_INFO;
  a.rta_len = 64;
  const auto at = cut.bytes.size();
  cut.bytes.resize(at + 12);
  std::memcpy(cut.bytes.data() + at, &a, sizeof a);
  cut.set_len();
  EXPECT_FALSE(parse_sock_diag_message(cut.bytes, scitags::Protocol::kTcp, s));
  // Not an inet family.
  MessageBuilder unix_family(AF_UNIX, TcpState::kEstablished);
  EXPECT_FALSE(parse_sock_diag_message(unix_family.bytes, scitags::Protocol::kTcp, s));
  // Fewer bytes than a netlink header.
  EXPECT_FALSE(parse_sock_diag_message(std::span(good.bytes).first(8), scitags::Protocol::kTcp, s));
}

TEST(SockDiag, StateNames) {
  EXPECT_EQ(to_string(TcpState::kEstablished), "ESTABLISHED");
  EXPECT_EQ(to_string(TcpState::kTimeWait), "TIME_WAIT");
  EXPECT_EQ(to_string(static_cast<TcpState>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace flowmark::netclient
