#include "flowmark/core/network.hpp"

#include <gtest/gtest.h>

namespace flowmark {
namespace {

TEST(Network, ParsesAndContains) {
  auto n = Network::parse("10.0.0.0/8");
  ASSERT_TRUE(n.has_value());
  EXPECT_TRUE(n->contains(*IpAddress::parse("10.255.0.1")));
  EXPECT_FALSE(n->contains(*IpAddress::parse("11.0.0.1")));
  EXPECT_FALSE(n->contains(*IpAddress::parse("::ffff:10.0.0.1")));
  auto v6 = Network::parse("2001:db8:8000::/33");
  ASSERT_TRUE(v6.has_value());
  EXPECT_TRUE(v6->contains(*IpAddress::parse("2001:db8:ffff::1")));
  EXPECT_FALSE(v6->contains(*IpAddress::parse("2001:db8:7fff::1")));
  auto host = Network::parse("192.0.2.7");
  ASSERT_TRUE(host.has_value());
  EXPECT_EQ(host->prefix, 32);
  EXPECT_EQ(Network::parse("0.0.0.0/0")->contains(*IpAddress::parse("1.2.3.4")), true);
}

TEST(Network, RejectsBadTextWithAHint) {
  auto e = Network::parse("10.0.0.1/8");
  ASSERT_FALSE(e.has_value());
  EXPECT_NE(e.error().message().find("did you mean 10.0.0.0/8"), std::string::npos);
  EXPECT_FALSE(Network::parse("10.0.0.0/33").has_value());
  EXPECT_FALSE(Network::parse("10.0.0.0/").has_value());
  EXPECT_FALSE(Network::parse("10.0.0.0/x").has_value());
  EXPECT_FALSE(Network::parse("::/129").has_value());
}

}  // namespace
}  // namespace flowmark
