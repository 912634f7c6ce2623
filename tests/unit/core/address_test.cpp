#include "flowmark/core/address.hpp"

#include <arpa/inet.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace flowmark {
namespace {

TEST(IpAddress, ParsesIpv4) {
  auto a = IpAddress::parse("239.1.2.3");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->is_v4());
  EXPECT_TRUE(a->is_multicast());
  EXPECT_FALSE(a->is_ssm());
  EXPECT_EQ(a->to_string(), "239.1.2.3");
  EXPECT_EQ(*a, IpAddress::v4(0xef010203));
}

// IPv4 text is read without inet_pton where it is a plain dotted quad: whatever the text, the
// answer (accepted or not, and the address) is inet_pton's.
TEST(IpAddress, Ipv4AcceptedExactlyAsInetPton) {
  std::vector<std::string> texts = {
      "0.0.0.0",    "255.255.255.255", "10.0.0.1",         "1.2.3.4",
      "01.2.3.4",   "1.2.3.04",        "1.2.3.00",         "1.2.3.256",
      "256.1.1.1",  "1.2.3",           "1.2.3.4.5",        "1..2.3",
      ".1.2.3",     "1.2.3.",          "1.2.3.4 ",         " 1.2.3.4",
      "1.2.3.4x",   "1.2.3.-4",        "1.2.3.+4",         "1.2.3.0x4",
      "0000.1.2.3", "1.2.3.1000",      "100.200.250.199",  "99.99.99.99",
      "9.9.9.9",    "1.2.3.4%eth0",    "123.123.123.1234", "1.2.3.255",
      "1.2.3.0255", "1.2.3.4\n",       "1.2.3.a",          "a.b.c.d",
      "::1",        "::ffff:1.2.3.4",  "1e1.2.3.4",        "11.22.33.44",
      "0.0.0.00",   "00.0.0.0"};
  for (unsigned a = 0; a < 300; a += 37) {
    for (unsigned b : {0u, 9u, 10u, 99u, 100u, 255u, 256u, 999u}) {
      texts.push_back(std::to_string(a) + "." + std::to_string(b) + ".1." + std::to_string(b));
    }
  }
  std::uint32_t seed = 7;  // and strings of digits and dots of every length up to 16
  for (int k = 0; k < 20000; ++k) {
    std::string t;
    seed = seed * 1103515245 + 12345;
    const std::size_t len = 1 + (seed >> 16) % 16;
    for (std::size_t i = 0; i < len; ++i) {
      seed = seed * 1103515245 + 12345;
      const unsigned r = (seed >> 16) % 13;
      t += r < 10 ? static_cast<char>('0' + r) : (r == 10 ? 'x' : '.');
    }
    texts.push_back(t);
  }
  for (const auto& t : texts) {
    in_addr in{};
    const bool ok = t.find('%') == std::string::npos && inet_pton(AF_INET, t.c_str(), &in) == 1;
    auto parsed = IpAddress::parse(t);
    if (ok) {
      ASSERT_TRUE(parsed.has_value()) << t;
      EXPECT_EQ(*parsed, IpAddress::v4(in)) << t;
    } else if (parsed) {
      EXPECT_FALSE(parsed->is_v4()) << t << " accepted as IPv4, inet_pton refuses it";
    }
  }
}

TEST(IpAddress, ParsesIpv6WithNumericScope) {
  auto a = IpAddress::parse("ff02::1:77%1");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->is_v6());
  EXPECT_TRUE(a->is_multicast());
  EXPECT_TRUE(a->is_link_scoped_multicast());
  EXPECT_EQ(a->scope_id(), 1u);
  EXPECT_EQ(a->to_string(), "ff02::1:77");
  EXPECT_EQ(a->to_string_scoped(), "ff02::1:77%lo");  // index 1 is lo in every namespace
}

TEST(IpAddress, ParsesScopeByInterfaceName) {
  auto a = IpAddress::parse("fe80::1%lo");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->scope_id(), 1u);
}

TEST(IpAddress, RejectsWithReason) {
  auto bad = IpAddress::parse("239.1.2");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("239.1.2"), std::string::npos);
  EXPECT_FALSE(IpAddress::parse("").has_value());
  EXPECT_FALSE(IpAddress::parse("ff02::1%").has_value());
  EXPECT_FALSE(IpAddress::parse("10.0.0.1%lo").has_value());
  EXPECT_FALSE(IpAddress::parse("1:2:3:4:5:6:7:8:9").has_value());
  auto noif = IpAddress::parse("ff02::1%nosuchif0");
  ASSERT_FALSE(noif.has_value());
  EXPECT_EQ(noif.error().code(), Errc::kNotFound);
  EXPECT_FALSE(IpAddress::parse(std::string(200, '1')).has_value());
}

TEST(IpAddress, Classification) {
  EXPECT_TRUE(IpAddress::parse("232.1.1.1")->is_ssm());
  EXPECT_TRUE(IpAddress::parse("ff3e::8000:1")->is_ssm());
  EXPECT_FALSE(IpAddress::parse("ff0e::1")->is_ssm());
  EXPECT_FALSE(IpAddress::parse("ff05::1")->is_link_scoped_multicast());
  EXPECT_TRUE(IpAddress::parse("ff01::1")->is_link_scoped_multicast());
  EXPECT_FALSE(IpAddress::parse("10.0.0.1")->is_multicast());
  EXPECT_FALSE(IpAddress::parse("2001:db8::1")->is_multicast());
  EXPECT_TRUE(IpAddress::parse("127.0.0.1")->is_loopback());
  EXPECT_TRUE(IpAddress::parse("::1")->is_loopback());
  EXPECT_TRUE(IpAddress::parse("::")->is_unspecified());
  EXPECT_TRUE(IpAddress::parse("0.0.0.0")->is_unspecified());
}

TEST(IpAddress, GlobalMeansReachableFromOutside) {
  auto global = [](std::string_view text) {
    auto a = IpAddress::parse(text);
    EXPECT_TRUE(a.has_value()) << text;
    return a && a->is_global();
  };
  for (auto text : {"8.8.8.8", "198.51.100.7", "100.63.255.255", "100.128.0.1", "172.15.0.1",
                    "172.32.0.1", "192.169.0.1", "2001:db8::1", "2a00:1450::1", "::ffff:8.8.8.8"})
    EXPECT_TRUE(global(text)) << text;
  for (auto text : {"0.0.0.0",         "0.1.2.3",     "10.1.2.3",    "100.64.0.1",
                    "100.127.255.255", "127.0.0.1",   "169.254.1.1", "172.16.0.1",
                    "172.31.255.255",  "192.168.1.1", "224.0.0.1",   "240.0.0.1",
                    "255.255.255.255", "::",          "::1",         "fc00::1",
                    "fd12::1",         "fe80::1",     "febf::1",     "ff0e::1",
                    "::ffff:10.0.0.1"})
    EXPECT_FALSE(global(text)) << text;
}

TEST(IpAddress, OrdersByFamilyThenBytes) {
  auto a = *IpAddress::parse("10.0.0.1");
  auto b = *IpAddress::parse("10.0.0.2");
  auto c = *IpAddress::parse("::1");
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
}

TEST(Endpoint, ParsesForms) {
  auto e = Endpoint::parse("192.0.2.1:10514");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->port, 10514);
  EXPECT_EQ(e->to_string(), "192.0.2.1:10514");
  auto v6 = Endpoint::parse("[2001:db8::1]:80");
  ASSERT_TRUE(v6.has_value());
  EXPECT_EQ(v6->address.to_string(), "2001:db8::1");
  EXPECT_EQ(v6->to_string(), "[2001:db8::1]:80");
  auto bare6 = Endpoint::parse("2001:db8::1", 10514);
  ASSERT_TRUE(bare6.has_value());
  EXPECT_EQ(bare6->port, 10514);
  EXPECT_FALSE(Endpoint::parse("192.0.2.1").has_value());  // port required
  EXPECT_FALSE(Endpoint::parse("192.0.2.1:0").has_value());
  EXPECT_FALSE(Endpoint::parse("192.0.2.1:65536").has_value());
  EXPECT_FALSE(Endpoint::parse("[2001:db8::1").has_value());
  EXPECT_FALSE(Endpoint::parse("[2001:db8::1]x80").has_value());
}

TEST(Endpoint, SockaddrRoundTrip) {
  for (const char* text : {"192.0.2.1:5000", "[ff02::1%1]:59559"}) {
    auto e = *Endpoint::parse(text);
    sockaddr_storage ss{};
    socklen_t len = e.to_sockaddr(ss);
    EXPECT_GT(len, 0u);
    auto back = Endpoint::from_sockaddr(ss);
    EXPECT_EQ(back, e);
    EXPECT_EQ(back.address.scope_id(), e.address.scope_id());
  }
}

TEST(Port, Range) {
  EXPECT_EQ(*parse_port("59559"), 59559);
  EXPECT_FALSE(parse_port("0").has_value());
  EXPECT_EQ(*parse_port("0", true), 0);
  EXPECT_FALSE(parse_port("65536").has_value());
  EXPECT_FALSE(parse_port("-1").has_value());
  EXPECT_FALSE(parse_port("80x").has_value());
  EXPECT_FALSE(parse_port("").has_value());
}

}  // namespace
}  // namespace flowmark

namespace flowmark {
namespace {
// Found by fuzz_address: 50 characters before a '%' overflowed the text buffer.
TEST(IpAddress, LongTextBeforeScopeIsRejected) {
  auto r = IpAddress::parse(std::string(50, '6') + "%1");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().message().find("too long"), std::string::npos);
}
}  // namespace
}  // namespace flowmark
