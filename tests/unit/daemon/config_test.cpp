// The service configuration: sections, rules, public addresses, and the errors that name
// the key, the value and what is allowed.
#include "flowmark/daemon/config.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "flowmark/daemon/service.hpp"

namespace flowmark::daemon {
namespace {

const scitags::Registry& reg() { return scitags::Registry::builtin(); }

constexpr std::string_view kMinimal = R"(
[source.pipe]
type = "named-pipe"
path = "/tmp/x"
[backend.out]
type = "records"
path = "/tmp/y"
)";

Result<ServiceConfig> load(std::string_view extra) {
  std::string text = std::string(kMinimal) + std::string(extra);
  FM_TRY(auto doc, ConfigDocument::parse_toml(text, "t.toml"));
  return ServiceConfig::from(doc, reg());
}

std::string error_of(std::string_view extra) {
  auto c = load(extra);
  return c ? std::string("(no error)") : c.error().message();
}

TEST(Config, Defaults) {
  auto c = load("");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->registry, "builtin");
  EXPECT_EQ(c->flow_timeout, 86400);
  ASSERT_EQ(c->sources.size(), 1u);
  EXPECT_EQ(c->sources[0].name, "pipe");
  EXPECT_EQ(c->sources[0].type, "named-pipe");
  ASSERT_EQ(c->backends.size(), 1u);
  EXPECT_EQ(c->backends[0].type, "records");
}

TEST(Config, RulesByNameOrIdWithNetworksPortsAndProtocol) {
  auto c = load(R"(
[[rule]]
dst = ["192.0.2.0/24", "2001:db8::/32"]
dst_ports = [1094, "20000-20100"]
protocol = "tcp"
experiment = "atlas"
activity = "perfSONAR"
[[rule]]
src = "10.0.0.0/8"
experiment = 3
activity = 1
)");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  ASSERT_EQ(c->rules.size(), 2u);
  EXPECT_EQ(c->rules[0].experiment, 2u);
  EXPECT_EQ(c->rules[0].activity, 2u);
  EXPECT_EQ(c->rules[0].dst_ports.size(), 2u);
  scitags::FlowEvent e;
  e.src = *Endpoint::parse("10.1.1.1:5");
  e.dst = *Endpoint::parse("192.0.2.5:20050");
  EXPECT_TRUE(c->rules[0].matches(e));
  e.protocol = scitags::Protocol::kUdp;
  EXPECT_FALSE(c->rules[0].matches(e));
  EXPECT_TRUE(c->rules[1].matches(e));
}

TEST(Config, PublicAddresses) {
  auto c = load(R"(
[public_address]
ipv4 = "203.0.113.5"
[public_address.map]
"10.0.0.5" = "198.51.100.5"
)");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->public_address.ipv4->to_string(), "203.0.113.5");
  ASSERT_EQ(c->public_address.map.size(), 1u);
}

TEST(Config, ErrorsNameTheKeyTheValueAndWhatIsAllowed) {
  EXPECT_EQ(error_of("[service]\nqueue_size = 3\n"),
            "[service] queue_size: 3 is out of range 16..16777216 (line 9)");
  EXPECT_EQ(error_of("[service]\nlog_level = \"loud\"\n"),
            "[service] log_level: 'loud' is not one of: debug, info, warning, error, off "
            "(line 9)");
  EXPECT_NE(error_of("[service]\nregistery = \"x\"\n").find("unknown key registery (line 9)"),
            std::string::npos);
  EXPECT_NE(error_of("[sevice]\n").find("unknown table or key 'sevice'"), std::string::npos);
  EXPECT_NE(
      error_of("[[rule]]\nexperiment = \"nosuch\"\nactivity = 1\n").find("[[rule]] #1 experiment:"),
      std::string::npos);
  EXPECT_NE(error_of("[[rule]]\nexperiment = 2\n").find("activity: missing"), std::string::npos);
  EXPECT_NE(error_of("[[rule]]\nexperiment = 2\nactivity = 1\ndst = \"10.0.0.1/8\"\n")
                .find("did you mean 10.0.0.0/8"),
            std::string::npos);
  EXPECT_NE(error_of("[[rule]]\nexperiment = 2\nactivity = 1\ndst_ports = \"9-3\"\n")
                .find("the range is empty"),
            std::string::npos);
  EXPECT_NE(error_of("[public_address]\nipv4 = \"2001:db8::1\"\n").find("is not an IPv4"),
            std::string::npos);
  auto bad = ConfigDocument::parse_toml("[source.x\n", "bad.toml");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message().rfind("bad.toml:1:", 0), 0u) << bad.error().message();
}

TEST(Config, NoSourceOrNoBackendIsAnError) {
  auto doc = ConfigDocument::parse_toml("[backend.out]\ntype = \"records\"\n", "t.toml");
  ASSERT_TRUE(doc.has_value());
  auto c = ServiceConfig::from(*doc, reg());
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find("no [source.NAME] table"), std::string::npos);
}

// perfSONAR mode: a flowlabel backend with rules marks in the kernel by itself.
TEST(Config, AFlowlabelBackendWithRulesNeedsNoSource) {
  auto doc = ConfigDocument::parse_toml(
      "[backend.m]\ntype = \"flowlabel\"\n[[backend.m.rule]]\nexperiment = 2\nactivity = 2\n",
      "t.toml");
  ASSERT_TRUE(doc.has_value());
  auto c = ServiceConfig::from(*doc, reg());
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_TRUE(c->sources.empty());
  // Without rules it still needs one.
  doc = ConfigDocument::parse_toml("[backend.m]\ntype = \"flowlabel\"\n", "t.toml");
  ASSERT_TRUE(doc.has_value());
  c = ServiceConfig::from(*doc, reg());
  ASSERT_FALSE(c.has_value());
  EXPECT_NE(c.error().message().find("no [source.NAME] table"), std::string::npos);
}

TEST(Config, PartsAreValidatedByTheirFactories) {
  auto check = [](std::string_view text) {
    auto doc = ConfigDocument::parse_toml(text, "t.toml");
    EXPECT_TRUE(doc.has_value());
    auto r = Service::check(*doc);
    return r ? std::string("OK") : r.error().message();
  };
  EXPECT_EQ(check(kMinimal).substr(0, 2), "OK");
  EXPECT_NE(check(std::string(kMinimal) + "[backend.ff]\ntype = \"firefly\"\nttl = 300\n")
                .find("[backend.ff] ttl: 300 is out of range 0..255"),
            std::string::npos);
  EXPECT_NE(check(std::string(kMinimal) + "[backend.ff]\ntype = \"fireflyy\"\n")
                .find("unknown backend 'fireflyy' (known: dashboard, firefly, "),
            std::string::npos);
  EXPECT_NE(check(std::string(kMinimal) + "[source.p2]\ntype = \"named-pipe\"\npth = \"x\"\n")
                .find("[source.p2] unknown key pth"),
            std::string::npos);
  EXPECT_NE(check(std::string(kMinimal) + "[source.p2]\ntype = \"named-pipe\"\nmode = \"999\"\n")
                .find("not an octal mode"),
            std::string::npos);
  // Rules the kernel's table cannot hold are found by --check, not at start: 17 port ranges
  // apply to 2001:db8::/32 (16 of its own and the ::/0 one covering it).
  std::string rules = std::string(kMinimal) + "[backend.m]\ntype = \"flowlabel\"\n";
  for (int i = 0; i < 16; ++i)
    rules += fmt::format(
        "[[backend.m.rule]]\ndestination = \"2001:db8::/32\"\nports = \"{}\"\n"
        "experiment = 2\nactivity = 2\n",
        1000 + i);
  EXPECT_EQ(check(rules).substr(0, 2), "OK");
  const std::string too_many =
      rules + "[[backend.m.rule]]\nports = \"443\"\nexperiment = 2\nactivity = 2\n";
  EXPECT_NE(check(too_many).find("destination 2001:db8::/32: 17 rules apply to it"),
            std::string::npos)
      << check(too_many);
  // The handshake map's size is checked by --check too.
  const std::string flowlabel = std::string(kMinimal) + "[backend.m]\ntype = \"flowlabel\"\n";
  EXPECT_EQ(check(flowlabel + "handshake_capacity = 64\n").substr(0, 2), "OK");
  EXPECT_NE(check(flowlabel + "handshake_capacity = 63\n")
                .find("[backend.m] handshake_capacity: 63 is out of range 64..1048576"),
            std::string::npos)
      << check(flowlabel + "handshake_capacity = 63\n");
}

}  // namespace
}  // namespace flowmark::daemon

namespace flowmark::daemon {
namespace {

TEST(Config, SitesFromTablesAndAFile) {
  const std::string path = ::testing::TempDir() + "/flowmark_sites_test.json";
  {
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(R"([{"name":"FILE-SITE","networks":["198.51.100.0/24"]}])", f);
    std::fclose(f);
  }
  auto c = load("[service]\nmax_live_flows = 1000\nsites_file = \"" + path +
                "\"\n[[site]]\nname = \"A\"\nnetworks = [\"192.0.2.0/24\", \"2001:db8:a::/48\"]\n"
                "[[site]]\nname = \"B\"\nnetworks = \"203.0.113.0/24\"\n");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->max_live_flows, 1000u);
  EXPECT_EQ(c->sites.networks(), 4u);
  EXPECT_EQ(c->sites.lookup(*IpAddress::parse("2001:db8:a::1")), "A");
  EXPECT_EQ(c->sites.lookup(*IpAddress::parse("203.0.113.9")), "B");
  EXPECT_EQ(c->sites.lookup(*IpAddress::parse("198.51.100.7")), "FILE-SITE");
  EXPECT_EQ(load("")->max_live_flows, 1'000'000u);

  EXPECT_NE(error_of("[[site]]\nnetworks = [\"10.0.0.0/8\"]\n").find("[[site]] #1 name: missing"),
            std::string::npos);
  EXPECT_NE(error_of("[[site]]\nname = \"A\"\n").find("[[site]] #1 networks: missing"),
            std::string::npos);
  EXPECT_NE(error_of("[[site]]\nname = \"A\"\nnetworks = [\"10.0.0.0/8\"]\n"
                     "[[site]]\nname = \"B\"\nnetworks = [\"10.0.0.0/8\"]\n")
                .find("is given to two sites: A and B"),
            std::string::npos);
  EXPECT_NE(error_of("[[site]]\nname = \"A\"\nnetworks = [\"10.0.0.0/8\"]\ntier = 1\n")
                .find("unknown key tier"),
            std::string::npos);
  EXPECT_NE(error_of("[service]\nsites_file = \"/nonexistent.json\"\n")
                .find("[service] sites_file: cannot read the site map /nonexistent.json"),
            std::string::npos);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace flowmark::daemon
