#include "flowmark/net/resolve.hpp"

#include <gtest/gtest.h>

namespace flowmark::net {
namespace {

constexpr std::uint16_t kPort = 10514;

TEST(ResolveEndpoint, LiteralsNamesAndDefaults) {
  auto a = resolve_endpoint("192.0.2.1", kPort);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->to_string(), "192.0.2.1:10514");
  auto b = resolve_endpoint("[2001:db8::1]:9000", kPort);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->to_string(), "[2001:db8::1]:9000");
  auto c = resolve_endpoint("2001:db8::1", kPort);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->port, kPort);
  auto d = resolve_endpoint("localhost:7", kPort);
  ASSERT_TRUE(d.has_value()) << d.error().message();
  EXPECT_TRUE(d->address.is_loopback());
  EXPECT_EQ(d->port, 7);
  EXPECT_FALSE(resolve_endpoint("192.0.2.300", kPort).has_value());
  EXPECT_FALSE(resolve_endpoint("192.0.2.1:0", kPort).has_value());
}

TEST(ResolveEndpoint, ABracketedOrNumericTextIsNotLookedUp) {
  // Malformed literals fail as literals (the address parser's error), with no DNS query.
  auto r = resolve_endpoint("[2001:db8::1", kPort);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message().find("host name"), std::string::npos) << r.error().message();
  EXPECT_FALSE(resolve_endpoint("10.0.0.256:80", kPort).has_value());
  EXPECT_FALSE(resolve_endpoint("localhost:99999", kPort).has_value());
}

}  // namespace
}  // namespace flowmark::net
