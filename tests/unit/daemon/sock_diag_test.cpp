// SockDiag against real loopback connections.
#include "flowmark/daemon/sock_diag.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <linux/tcp.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

#include "loopback_pair.hpp"

namespace flowmark::daemon {
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

class SockDiagLoopback : public ::testing::TestWithParam<Family> {};

TEST_P(SockDiagLoopback, DumpFindsBothEndsWithTcpInfo) {
  const Family f = GetParam();
  auto listener = listen_loopback(f);
  if (!listener) GTEST_SKIP() << "no loopback for this family";
  auto pair = connect_pair(listener->get());
  ASSERT_TRUE(pair);
  auto diag = SockDiag::open();
  ASSERT_TRUE(diag) << diag.error().message();

  auto client = find(*diag, f, pair->client_end, pair->server_end);
  auto server = find(*diag, f, pair->server_end, pair->client_end);
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
  const Endpoint listen_at = testing::local_of(listener->get());
  Endpoint any_peer{IpAddress::any(f), 0};
  EXPECT_TRUE(find(*diag, f, listen_at, any_peer));
  EXPECT_FALSE(find(*diag, f, listen_at, any_peer, kConnectedStates));

  // N bytes client → server: acked on one side, received on the other.
  constexpr std::size_t kBytes = 100'000;
  send_all(pair->client.get(), kBytes);
  recv_all(pair->server.get(), kBytes);
  EXPECT_TRUE(eventually([&] {
    auto c = find(*diag, f, pair->client_end, pair->server_end);
    // The kernel may count the SYN's sequence number as one byte acked.
    return c && c->tcp && c->tcp->bytes_acked >= kBytes && c->tcp->bytes_acked <= kBytes + 1;
  })) <<
      [&] {
        auto c = find(*diag, f, pair->client_end, pair->server_end);
        if (!c) return std::string("client socket not found");
        return fmt::format("{}: state {} cookie {} tcp {} acked {} sent {}", c->src.to_string(),
                           to_string(c->state), c->cookie, c->tcp.has_value(),
                           c->tcp ? c->tcp->bytes_acked : 0, c->tcp ? c->tcp->bytes_sent : 0);
      }();
  server = find(*diag, f, pair->server_end, pair->client_end);
  ASSERT_TRUE(server && server->tcp);
  EXPECT_EQ(server->tcp->bytes_received, kBytes);
  client = find(*diag, f, pair->client_end, pair->server_end);
  ASSERT_TRUE(client && client->tcp);
  EXPECT_EQ(client->tcp->bytes_sent, kBytes);
  EXPECT_GT(client->tcp->segs_out, 1u);
  EXPECT_GT(client->tcp->rtt_us, 0u);
  EXPECT_EQ(diag->stats().malformed, 0u);
}

TEST_P(SockDiagLoopback, LookupOneSocketAndCloseChangesState) {
  const Family f = GetParam();
  auto listener = listen_loopback(f);
  if (!listener) GTEST_SKIP() << "no loopback for this family";
  auto pair = connect_pair(listener->get());
  ASSERT_TRUE(pair);
  auto diag = SockDiag::open();
  ASSERT_TRUE(diag) << diag.error().message();

  send_all(pair->client.get(), 1000);
  recv_all(pair->server.get(), 1000);
  auto one = diag->lookup(scitags::Protocol::kTcp, pair->client_end, pair->server_end, true);
  ASSERT_TRUE(one) << one.error().message();
  ASSERT_TRUE(*one);
  EXPECT_EQ((*one)->src, pair->client_end);
  EXPECT_EQ((*one)->dst, pair->server_end);
  EXPECT_EQ((*one)->state, TcpState::kEstablished);
  ASSERT_TRUE((*one)->tcp);
  EXPECT_EQ((*one)->tcp->bytes_sent, 1000u);
  auto info = diag->tcp_info(pair->server_end, pair->client_end);
  ASSERT_TRUE(info) << info.error().message();
  ASSERT_TRUE(*info);
  EXPECT_EQ((*info)->bytes_received, 1000u);

  // No such socket: not an error.
  Endpoint nowhere = pair->server_end;
  nowhere.port = testing::local_of(listener->get()).port;  // the listener has no such peer
  auto none = diag->lookup(scitags::Protocol::kTcp, nowhere, pair->server_end, false);
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(*none);

  // The client closes: it goes to FIN_WAIT (or TIME_WAIT), the server to CLOSE_WAIT.
  pair->client.reset();
  EXPECT_TRUE(eventually([&] {
    auto s = diag->lookup(scitags::Protocol::kTcp, pair->server_end, pair->client_end, false);
    return s && *s && (*s)->state == TcpState::kCloseWait;
  }));
  auto c = find(*diag, f, pair->client_end, pair->server_end);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->state == TcpState::kFinWait2 || c->state == TcpState::kFinWait1 ||
              c->state == TcpState::kTimeWait)
      << to_string(c->state);
  // The server closes too: the client's side ends in TIME_WAIT with the same cookie.
  const auto cookie = c->cookie;
  pair->server.reset();
  EXPECT_TRUE(eventually([&] {
    auto tw = find(*diag, f, pair->client_end, pair->server_end);
    return tw && tw->state == TcpState::kTimeWait && tw->cookie == cookie;
  }));
}

INSTANTIATE_TEST_SUITE_P(Families, SockDiagLoopback, ::testing::Values(Family::kV4, Family::kV6),
                         [](const auto& p) { return p.param == Family::kV4 ? "IPv4" : "IPv6"; });

TEST(SockDiag, DualStackSocketShowsIPv4Addresses) {
  // An IPv6 listener on [::] accepting an IPv4 client: the accepted socket is AF_INET6 with
  // ::ffff:127.0.0.1 addresses, reported as plain IPv4.
  UniqueFd listener(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int off = 0;
  ::setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
  sockaddr_in6 any{};
  any.sin6_family = AF_INET6;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&any), sizeof any) != 0 ||
      ::listen(listener.get(), 8) != 0) {
    GTEST_SKIP() << "no IPv6";
  }
  const auto port = testing::local_of(listener.get()).port;
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  const Endpoint to{*IpAddress::parse("127.0.0.1"), port};
  sockaddr_storage ss{};
  const auto len = to.to_sockaddr(ss);
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  UniqueFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  const Endpoint client_end = testing::local_of(client.get());

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
  UniqueFd rx(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  UniqueFd tx(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  Endpoint at{*IpAddress::parse("127.0.0.1"), 0};
  sockaddr_storage ss{};
  auto len = at.to_sockaddr(ss);
  ASSERT_EQ(::bind(rx.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  const Endpoint rx_end = testing::local_of(rx.get());
  len = rx_end.to_sockaddr(ss);
  ASSERT_EQ(::connect(tx.get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  const Endpoint tx_end = testing::local_of(tx.get());

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

TEST(SockDiag, StateNames) {
  EXPECT_EQ(to_string(TcpState::kEstablished), "ESTABLISHED");
  EXPECT_EQ(to_string(TcpState::kTimeWait), "TIME_WAIT");
  EXPECT_EQ(to_string(static_cast<TcpState>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace flowmark::daemon
