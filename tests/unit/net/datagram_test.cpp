#include "flowmark/net/datagram.hpp"

#include <sys/socket.h>

#include <gtest/gtest.h>

#include <string>

#include "flowmark/net/socket.hpp"

namespace flowmark::net {
namespace {

IpAddress ip(const char* s) { return *IpAddress::parse(s); }

// DatagramReader over plain unicast UDP on loopback: batching, packet info, timestamps
// and truncation reporting.
TEST(DatagramReader, BatchesAndReportsTruncation) {
  auto rx = open_udp_socket(Family::kV4);
  auto tx = open_udp_socket(Family::kV4);
  ASSERT_TRUE(rx && tx);
  ASSERT_TRUE(enable_packet_info(rx->get(), Family::kV4));
  ASSERT_TRUE(bind_to(rx->get(), {ip("127.0.0.1"), 0}));
  auto local = local_endpoint(rx->get());
  ASSERT_TRUE(local.has_value()) << local.error().message();
  sockaddr_storage ss{};
  const socklen_t len = local->to_sockaddr(ss);

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

}  // namespace
}  // namespace flowmark::net
