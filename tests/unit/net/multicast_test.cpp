#include "flowmark/net/multicast.hpp"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "flowmark/core/interface.hpp"
#include "flowmark/net/datagram.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::net {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(Multicast, GroupChecks) {
  EXPECT_TRUE(check_group(ip("239.1.1.1"), std::nullopt));
  auto unicast = check_group(ip("10.0.0.1"), std::nullopt);
  ASSERT_FALSE(unicast);
  EXPECT_EQ(unicast.error().code(), Errc::kInvalidArgument);
  auto link = check_group(ip("ff02::1:2"), std::nullopt);
  ASSERT_FALSE(link);
  EXPECT_NE(link.error().message().find("--iface"), std::string::npos);
  EXPECT_TRUE(check_group(ip("ff02::1:2%1"), std::nullopt));
  EXPECT_TRUE(check_group(ip("ff02::1:2"), Interface{1, "lo", {}, true, true}));
  EXPECT_TRUE(check_group(ip("ff05::2"), std::nullopt));
  EXPECT_TRUE(check_ttl(0));
  EXPECT_TRUE(check_ttl(255));
  EXPECT_FALSE(check_ttl(256));
  EXPECT_FALSE(check_ttl(-1));
}

TEST(Multicast, JoinOnMissingInterfaceIsRefusedWithReason) {
  auto fd = open_udp_socket(Family::kV4);
  ASSERT_TRUE(fd.has_value());
  auto r = join_group(fd->get(), ip("239.1.2.3"), nullptr, 999999);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kRefused);
  EXPECT_NE(r.error().message().find("cannot join 239.1.2.3"), std::string::npos)
      << r.error().message();

  auto fd6 = open_udp_socket(Family::kV6);
  ASSERT_TRUE(fd6.has_value());
  auto src = ip("2001:db8::1");
  auto ssm = join_group(fd6->get(), ip("ff3e::1234"), &src, 999999);
  ASSERT_FALSE(ssm);
  EXPECT_NE(ssm.error().message().find("(2001:db8::1, ff3e::1234)"), std::string::npos)
      << ssm.error().message();
  auto mixed_src = ip("10.0.0.1");
  auto mixed = join_group(fd6->get(), ip("ff3e::1234"), &mixed_src, 0);
  ASSERT_FALSE(mixed);
  EXPECT_EQ(mixed.error().code(), Errc::kInvalidArgument);
}

TEST(Multicast, SendOptionsOnMissingInterfaceFail) {
  auto fd = open_udp_socket(Family::kV4);
  ASSERT_TRUE(fd.has_value());
  SendOptions o;
  o.iface = Interface{999999, "ghost0", {}, true, true};
  auto r = apply_send_options(fd->get(), Family::kV4, o);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("ghost0"), std::string::npos);
  o.iface.reset();
  o.ttl = 300;
  EXPECT_FALSE(apply_send_options(fd->get(), Family::kV4, o));
  o.ttl = 16;
  EXPECT_TRUE(apply_send_options(fd->get(), Family::kV4, o));
  int ttl = 0;
  socklen_t len = sizeof ttl;
  ASSERT_EQ(getsockopt(fd->get(), IPPROTO_IP, IP_MULTICAST_TTL, &ttl, &len), 0);
  EXPECT_EQ(ttl, 16);
}

TEST(GroupSocket, RejectsMixedFamiliesBadSourcesAndNoGroup) {
  GroupSocketConfig c;
  c.groups = {ip("239.1.1.1"), ip("ff05::1")};
  auto mixed = open_group_socket(c);
  ASSERT_FALSE(mixed.has_value());
  EXPECT_NE(mixed.error().message().find("different address families"), std::string::npos);
  c.groups = {ip("239.1.1.1")};
  c.sources = {ip("ff05::1")};
  EXPECT_FALSE(open_group_socket(c).has_value());
  c.sources = {ip("192.0.2.1")};
  c.bind = ip("::1");
  auto bind = open_group_socket(c);
  ASSERT_FALSE(bind.has_value());
  EXPECT_NE(bind.error().message().find("not of the groups' family"), std::string::npos);
  c = {};
  auto none = open_group_socket(c);
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), Errc::kInvalidArgument);
}

// A group joined on lo: a datagram sent to it comes back through the socket with the group
// as its destination (packet info on), and the kernel-chosen port is reported.
TEST(GroupSocket, ReceivesWhatIsSentToTheGroupOnLoopback) {
  auto lo = resolve_interface("lo");
  ASSERT_TRUE(lo.has_value()) << lo.error().message();
  GroupSocketConfig config;
  config.groups = {ip("239.255.42.7")};
  config.iface = *lo;
  auto rx = open_group_socket(config);
  ASSERT_TRUE(rx.has_value()) << rx.error().message();
  ASSERT_NE(rx->port, 0);
  EXPECT_EQ(local_endpoint(rx->fd.get())->port, rx->port);

  auto tx = open_udp_socket(Family::kV4);
  ASSERT_TRUE(tx.has_value());
  ASSERT_TRUE(apply_send_options(tx->get(), Family::kV4, {.iface = *lo, .ttl = 0}));
  const Endpoint group{ip("239.255.42.7"), rx->port};
  sockaddr_storage ss{};
  const socklen_t len = group.to_sockaddr(ss);
  ASSERT_EQ(::sendto(tx->get(), "hi", 2, 0, reinterpret_cast<sockaddr*>(&ss), len), 2);

  pollfd p{rx->fd.get(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 5000), 1) << "nothing arrived within 5 s";
  DatagramReader reader(64, 4);
  auto got = reader.read(rx->fd.get());
  ASSERT_TRUE(got.has_value()) << got.error().message();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].destination, ip("239.255.42.7"));
  EXPECT_EQ((*got)[0].size, 2u);
}

}  // namespace
}  // namespace flowmark::net
