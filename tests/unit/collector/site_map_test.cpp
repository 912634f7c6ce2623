// The site map: longest prefix wins, both families, conflicts named, the JSON form and its
// errors.
#include "flowmark/collector/site_map.hpp"

#include <gtest/gtest.h>

namespace flowmark::collector {
namespace {

IpAddress ip(std::string_view t) { return *IpAddress::parse(t); }
Network net(std::string_view t) { return *Network::parse(t); }

TEST(SiteMap, LongestPrefixWinsInBothFamilies) {
  SiteMap m;
  ASSERT_TRUE(m.add("WIDE", net("10.0.0.0/8")));
  ASSERT_TRUE(m.add("NARROW", net("10.1.0.0/16")));
  ASSERT_TRUE(m.add("HOST", net("10.1.2.3/32")));
  ASSERT_TRUE(m.add("V6", net("2001:db8::/32")));
  ASSERT_TRUE(m.add("V6-SUB", net("2001:db8:1:2::/64")));
  ASSERT_TRUE(m.add("V6-ODD", net("2001:db8:ff00::/41")));
  EXPECT_EQ(m.lookup(ip("10.200.0.1")), "WIDE");
  EXPECT_EQ(m.lookup(ip("10.1.9.9")), "NARROW");
  EXPECT_EQ(m.lookup(ip("10.1.2.3")), "HOST");
  EXPECT_EQ(m.lookup(ip("10.1.2.4")), "NARROW");
  EXPECT_EQ(m.lookup(ip("11.0.0.1")), std::nullopt);
  EXPECT_EQ(m.lookup(ip("2001:db8::1")), "V6");
  EXPECT_EQ(m.lookup(ip("2001:db8:1:2::99")), "V6-SUB");
  EXPECT_EQ(m.lookup(ip("2001:db8:1:3::99")), "V6");
  EXPECT_EQ(m.lookup(ip("2001:db8:ff7f::1")), "V6-ODD");
  EXPECT_EQ(m.lookup(ip("2001:db8:fe00::1")), "V6");
  EXPECT_EQ(m.lookup(ip("2001:db9::1")), std::nullopt);
  // An IPv4 network never answers for an IPv6 address and the other way round.
  EXPECT_EQ(m.lookup(ip("::ffff:10.1.2.3")), std::nullopt);
  EXPECT_EQ(m.networks(), 6u);
  EXPECT_EQ(m.sites().size(), 6u);
}

TEST(SiteMap, DefaultRouteAndConflicts) {
  SiteMap m;
  ASSERT_TRUE(m.add("ANY", net("0.0.0.0/0")));
  EXPECT_EQ(m.lookup(ip("192.0.2.1")), "ANY");
  EXPECT_TRUE(m.add("ANY", net("0.0.0.0/0")));  // the same again: accepted once
  EXPECT_EQ(m.networks(), 1u);
  auto r = m.add("OTHER", net("0.0.0.0/0"));
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("two sites: ANY and OTHER"), std::string::npos);
  EXPECT_FALSE(m.add("", net("10.0.0.0/8")));
}

TEST(SiteMap, JsonFormsAndMerge) {
  auto a = SiteMap::parse_json(
      R"([{"name":"CERN-PROD","networks":["128.142.0.0/16","2001:1458::/32"]},
          {"name":"BNL-ATLAS","networks":["130.199.0.0/16"]}])",
      "sites.json");
  ASSERT_TRUE(a) << a.error().message();
  EXPECT_EQ(a->lookup(ip("128.142.1.2")), "CERN-PROD");
  EXPECT_EQ(a->lookup(ip("2001:1458::5")), "CERN-PROD");
  auto b =
      SiteMap::parse_json(R"({"sites":[{"name":"FNAL","networks":["131.225.0.0/16"]}]})", "b.json");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE(a->merge(*b));
  EXPECT_EQ(a->lookup(ip("131.225.9.9")), "FNAL");
  EXPECT_EQ(a->lookup(ip("130.199.0.1")), "BNL-ATLAS");
  EXPECT_EQ(a->networks(), 4u);
}

TEST(SiteMap, JsonErrorsNameTheElement) {
  auto check = [](std::string_view text, std::string_view want) {
    auto r = SiteMap::parse_json(text, "sites.json");
    ASSERT_FALSE(r) << text;
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
  };
  check("not json", "sites.json: not valid JSON");
  check("42", "expected an array of sites");
  check(R"([{"networks":["10.0.0.0/8"]}])", "[0].name");
  check(R"([{"name":"A","networks":"10.0.0.0/8"}])", "[0].networks");
  check(R"([{"name":"A","networks":["10.0.0.1/8"]}])", "[0].networks[0]: ");
  check(R"([{"name":"A","networks":[7]}])", "[0].networks[0]: expected a string");
  check(R"([{"name":"A","networks":[],"tier":1}])", "unknown key \"tier\"");
  check(R"([{"name":"A","networks":["10.0.0.0/8"]},{"name":"B","networks":["10.0.0.0/8"]}])",
        "[1].networks[0]: network 10.0.0.0/8 is given to two sites: A and B");
  auto missing = SiteMap::load_json("/nonexistent/sites.json");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("cannot read the site map /nonexistent/sites.json"),
            std::string::npos);
}

TEST(SiteMapHandle, SwapIsSeenByHolders) {
  auto h = std::make_shared<SiteMapHandle>();
  auto before = h->get();
  EXPECT_EQ(before->lookup(ip("10.0.0.1")), std::nullopt);
  SiteMap m;
  ASSERT_TRUE(m.add("A", net("10.0.0.0/8")));
  h->set(std::move(m));
  EXPECT_EQ(h->get()->lookup(ip("10.0.0.1")), "A");
  EXPECT_EQ(before->lookup(ip("10.0.0.1")), std::nullopt);  // a snapshot stays as it was
}

}  // namespace
}  // namespace flowmark::collector
