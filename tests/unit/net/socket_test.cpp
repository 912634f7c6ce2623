#include "flowmark/net/socket.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <string>

namespace flowmark::net {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(BindUdp, PortZeroIsReportedAsTheRealPort) {
  auto fd = bind_udp({ip("127.0.0.1"), 0});
  ASSERT_TRUE(fd.has_value()) << fd.error().message();
  auto local = local_endpoint(fd->get());
  ASSERT_TRUE(local.has_value()) << local.error().message();
  EXPECT_EQ(local->address, ip("127.0.0.1"));
  EXPECT_NE(local->port, 0);
}

TEST(BindTo, ErrorsNameTheAddressAndWhatToDo) {
  auto first = bind_udp({ip("127.0.0.1"), 0});
  ASSERT_TRUE(first.has_value());
  const Endpoint taken = *local_endpoint(first->get());
  auto second = open_udp_socket(Family::kV4);
  ASSERT_TRUE(second.has_value());
  auto in_use = bind_to(second->get(), taken, "cannot listen on", "flowd may hold it");
  ASSERT_FALSE(in_use);
  EXPECT_EQ(in_use.error().code(), std::errc::address_in_use);
  EXPECT_EQ(in_use.error().message().rfind("cannot listen on " + taken.to_string() + ": ", 0), 0u)
      << in_use.error().message();
  EXPECT_NE(in_use.error().message().find("— flowd may hold it"), std::string::npos);

  // 192.0.2.1 (TEST-NET-1) is assigned to no interface here.
  auto foreign = bind_udp({ip("192.0.2.1"), 0});
  ASSERT_FALSE(foreign);
  EXPECT_NE(foreign.error().message().find("not a local address"), std::string::npos)
      << foreign.error().message();
}

TEST(OpenUdpSocket, Ipv6SocketsAreIpv6OnlyAndCloseOnExec) {
  auto fd = open_udp_socket(Family::kV6, SOCK_NONBLOCK);
  ASSERT_TRUE(fd.has_value()) << fd.error().message();
  int v6only = 0;
  socklen_t len = sizeof v6only;
  ASSERT_EQ(getsockopt(fd->get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
  EXPECT_EQ(v6only, 1);
  EXPECT_NE(fcntl(fd->get(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(fcntl(fd->get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(ListenTcp, AcceptsWhatConnectTcpOpens) {
  auto listener = listen_tcp({ip("127.0.0.1"), 0});
  ASSERT_TRUE(listener.has_value()) << listener.error().message();
  const Endpoint at = *local_endpoint(listener->get());
  auto client = connect_tcp(at);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  EXPECT_EQ(*local_endpoint(server.get()), at);
}

TEST(ListenTcpDualStack, TakesIpv4AndIpv6Clients) {
  auto listener = listen_tcp_dual_stack(0);
  if (!listener && listener.error().code() == std::errc::address_family_not_supported)
    GTEST_SKIP() << "no IPv6 here: " << listener.error().message();
  ASSERT_TRUE(listener.has_value()) << listener.error().message();
  int v6only = 1;
  socklen_t len = sizeof v6only;
  ASSERT_EQ(getsockopt(listener->get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
  EXPECT_EQ(v6only, 0);
  const Endpoint at = *local_endpoint(listener->get());
  EXPECT_TRUE(at.address.is_unspecified());
  EXPECT_TRUE(at.address.is_v6());
  auto v4 = connect_tcp({ip("127.0.0.1"), at.port});
  ASSERT_TRUE(v4.has_value()) << v4.error().message();
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  // The accepted end of an IPv4 client is an IPv6 socket with an IPv4-mapped address.
  EXPECT_EQ(local_endpoint(server.get())->address, ip("::ffff:127.0.0.1"));
  if (auto v6 = connect_tcp({ip("::1"), at.port})) {
    UniqueFd server6(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(server6);
    EXPECT_EQ(local_endpoint(server6.get())->address, ip("::1"));
  }
}

TEST(ConnectTcp, NonBlockingIsUnderWayAndRefusalIsAnError) {
  auto listener = listen_tcp({ip("127.0.0.1"), 0});
  ASSERT_TRUE(listener.has_value()) << listener.error().message();
  const Endpoint at = *local_endpoint(listener->get());
  auto client = connect_tcp(at, SOCK_NONBLOCK);
  ASSERT_TRUE(client.has_value()) << client.error().message();
  EXPECT_NE(fcntl(client->get(), F_GETFL) & O_NONBLOCK, 0);
  // The SYN reached the listener: the connection is there to accept (blocking accept).
  UniqueFd server(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(server);
  EXPECT_EQ(*local_endpoint(server.get()), at);

  listener->reset();  // nothing listens on `at` any more
  auto refused = connect_tcp(at);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), std::errc::connection_refused);
  EXPECT_EQ(refused.error().message().rfind("cannot connect to " + at.to_string() + ": ", 0), 0u)
      << refused.error().message();
}

TEST(ConnectTo, GivesAUdpSocketItsDestination) {
  auto rx = bind_udp({ip("127.0.0.1"), 0});
  ASSERT_TRUE(rx.has_value()) << rx.error().message();
  const Endpoint rx_end = *local_endpoint(rx->get());
  auto tx = open_udp_socket(Family::kV4);
  ASSERT_TRUE(tx.has_value());
  ASSERT_TRUE(connect_to(tx->get(), rx_end));
  ASSERT_EQ(::send(tx->get(), "x", 1, 0), 1);  // no address given: the connected one
  char c = 0;
  EXPECT_EQ(::recv(rx->get(), &c, 1, 0), 1);
  EXPECT_EQ(c, 'x');
}

TEST(Buffers, ReceiveBufferGrows) {
  auto fd = open_udp_socket(Family::kV4);
  ASSERT_TRUE(fd.has_value());
  int before = 0;
  socklen_t len = sizeof before;
  ASSERT_EQ(getsockopt(fd->get(), SOL_SOCKET, SO_RCVBUF, &before, &len), 0);
  ASSERT_TRUE(set_receive_buffer(fd->get(), before * 2));
  int after = 0;
  ASSERT_EQ(getsockopt(fd->get(), SOL_SOCKET, SO_RCVBUF, &after, &len), 0);
  EXPECT_GT(after, before);  // the kernel doubles what it is given, capped at rmem_max
  EXPECT_TRUE(set_send_buffer(fd->get(), 0));  // 0: unchanged, not an error
}

}  // namespace
}  // namespace flowmark::net
