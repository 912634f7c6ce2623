#include <arpa/inet.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include "flowmark/mcast/commands.hpp"
#include "flowmark/mcast/receiver.hpp"
#include "flowmark/mcast/sender.hpp"
#include "flowmark/mcast/socket.hpp"

namespace flowmark::mcast {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

TEST(Socket, GroupChecks) {
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

TEST(Socket, JoinOnMissingInterfaceIsRefusedWithReason) {
  auto fd = open_udp_socket(Family::kV4);
  ASSERT_TRUE(fd.has_value());
  auto r = join_group(fd->get(), ip("239.1.2.3"), nullptr, 999999);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kRefused);
  EXPECT_NE(r.error().message().find("cannot join 239.1.2.3"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(exit_code_for(r.error()), kExitUnavailable);

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

TEST(Socket, SendOptionsOnMissingInterfaceFail) {
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

TEST(Sender, RejectsUnicastAndOversizedPayloads) {
  auto bad = Sender::open({{ip("192.0.2.1"), 5000}, {}, {}, 0, 0});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  auto tx = Sender::open({{ip("239.255.0.1"), 5000}, {}, {}, 0, 0});
  ASSERT_TRUE(tx.has_value()) << tx.error().message();
  std::vector<std::byte> big(kMaxPayloadV4 + 1);
  auto r = tx->send(big);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  std::span<const std::byte> one(big);
  auto rb = tx->send_batch(std::span(&one, 1));
  EXPECT_FALSE(rb.has_value());
}

TEST(Receiver, RejectsMixedFamiliesAndBadSources) {
  ReceiverConfig c;
  c.groups = {ip("239.1.1.1"), ip("ff05::1")};
  auto mixed = Receiver::open(c);
  ASSERT_FALSE(mixed.has_value());
  EXPECT_NE(mixed.error().message().find("different address families"), std::string::npos);
  c.groups = {ip("239.1.1.1")};
  c.sources = {ip("ff05::1")};
  EXPECT_FALSE(Receiver::open(c).has_value());
  c.sources.clear();
  c.groups.clear();
  EXPECT_FALSE(Receiver::open(c).has_value());
}

// DatagramReader over plain unicast UDP on loopback: batching, packet info, timestamps
// and truncation reporting.
TEST(DatagramReader, BatchesAndReportsTruncation) {
  auto rx = open_udp_socket(Family::kV4);
  auto tx = open_udp_socket(Family::kV4);
  ASSERT_TRUE(rx && tx);
  ASSERT_TRUE(enable_packet_info(rx->get(), Family::kV4));
  Endpoint local{ip("127.0.0.1"), 0};
  sockaddr_storage ss{};
  socklen_t len = local.to_sockaddr(ss);
  ASSERT_EQ(::bind(rx->get(), reinterpret_cast<sockaddr*>(&ss), len), 0);
  len = sizeof ss;
  ASSERT_EQ(getsockname(rx->get(), reinterpret_cast<sockaddr*>(&ss), &len), 0);

  const std::string small = "hello";
  const std::string big(2000, 'x');
  const std::string binary("\x00\xff\x01", 3);
  for (const auto* p : {&small, &big, &binary})
    ASSERT_EQ(::sendto(tx->get(), p->data(), p->size(), 0, reinterpret_cast<sockaddr*>(&ss), len),
              static_cast<ssize_t>(p->size()));

  DatagramReader reader(1000, 8);
  auto batch = reader.read(rx->get());
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ(batch->size(), 3u);
  const Datagram& a = (*batch)[0];
  EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(a.payload.data()), a.payload.size()),
            "hello");
  EXPECT_FALSE(a.truncated);
  EXPECT_EQ(a.destination, ip("127.0.0.1"));
  EXPECT_EQ(a.ifindex, 1u);
  EXPECT_GT(a.rx_time_ns, 0);
  EXPECT_EQ(a.source.address, ip("127.0.0.1"));
  const Datagram& b = (*batch)[1];
  EXPECT_TRUE(b.truncated);
  EXPECT_EQ(b.size, 2000u);
  EXPECT_EQ(b.payload.size(), 1000u);
  const Datagram& c = (*batch)[2];
  EXPECT_EQ(c.size, 3u);
  EXPECT_EQ(static_cast<unsigned>(c.payload[1]), 0xffu);

  auto empty = reader.read(rx->get());  // non-blocking: nothing waiting
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

TEST(Hear, ReplyWordingAndLimit) {
  auto from = *Endpoint::parse("10.0.0.1:4242");
  EXPECT_EQ(hear_reply("hello", from, ip("239.1.1.2"), 65507),
            "HEAR [ HELLO SAID ('10.0.0.1', 4242) ] from 239.1.1.2");
  auto cut = hear_reply(std::string(100, 'a'), from, ip("239.1.1.2"), 60);
  EXPECT_LE(cut.size(), 60u);
  EXPECT_TRUE(cut.ends_with("] from 239.1.1.2"));
}

}  // namespace
}  // namespace flowmark::mcast
