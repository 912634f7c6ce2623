// flowd-go's conf.yaml → flowmarkd's TOML: the fixtures of tests/data/flowd_go/ (flowd-go's
// sample conf.yaml with every section on, its man page's example, configs modelled on its
// test data) translate to exactly the expected TOML; bad keys, types and values are refused
// naming the key's path and place.
#include "daemon/flowd_go/flowd_go_config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <toml++/toml.h>

namespace flowmark::daemon {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::string data(const std::string& name) {
  return std::string(FLOWMARK_TEST_DATA) + "/flowd_go/" + name;
}

FlowdGoTranslation translate_ok(std::string_view yaml, std::string_view name = "conf.yaml") {
  auto out = translate_flowd_go_config(yaml, name);
  EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message());
  return out ? *out : FlowdGoTranslation{};
}

std::string translate_error(std::string_view yaml) {
  auto out = translate_flowd_go_config(yaml, "conf.yaml");
  if (out) return "(translated)\n" + out->toml;
  EXPECT_EQ(out.error().code(), Errc::kInvalidArgument);
  return out.error().message();
}

// The warnings' paths, in order: "backends.prometheus.skopsPort" from
// "conf.yaml:3:5: backends.prometheus.skopsPort: not opened ...".
std::vector<std::string> warned_paths(const FlowdGoTranslation& t) {
  std::vector<std::string> out;
  for (const auto& w : t.warnings) {
    const auto a = w.find(": ");
    const auto b = w.find(": ", a + 2);
    out.push_back(w.substr(a + 2, b - a - 2));
  }
  return out;
}

class Fixture : public ::testing::TestWithParam<const char*> {};

TEST_P(Fixture, TranslatesToTheExpectedToml) {
  const std::string yaml_path = data(std::string(GetParam()) + ".yaml");
  std::string expected = read_file(data(std::string(GetParam()) + ".toml"));
  expected.replace(expected.find("@FILE@"), 6, yaml_path);
  const auto out = translate_ok(read_file(yaml_path), yaml_path);
  EXPECT_EQ(out.toml, expected);
  // Valid TOML, whatever the keys.
  EXPECT_NO_THROW((void)toml::parse(out.toml));
}

INSTANTIATE_TEST_SUITE_P(FlowdGo, Fixture,
                         ::testing::Values("conf", "manpage_example", "pipe_collector",
                                           "perfsonar"));

TEST(FlowdGoTranslate, EverySectionOfTheSampleExplainsWhatItDoesNotUse) {
  const std::string path = data("conf.yaml");
  const auto out = translate_ok(read_file(path), path);
  EXPECT_EQ(
      warned_paths(out),
      (std::vector<std::string>{"pidPath", "workDir", "enrichers.skops",
                                "plugins.namedPipe.maxReaders", "plugins.iperf3.minDestinationPort",
                                "plugins.iperf3.debugMode", "backends.prometheus.skopsPort"}));
  for (const auto& w : out.warnings) EXPECT_TRUE(w.starts_with(path + ":")) << w;
  // The place: line and column of the key's value.
  EXPECT_NE(out.warnings[0].find("conf.yaml:5:10: pidPath: not written"), std::string::npos)
      << out.warnings[0];
}

TEST(FlowdGoTranslate, ManPageExampleAndTestDataGiveNoWarnings) {
  for (const char* name : {"manpage_example", "pipe_collector", "perfsonar"}) {
    const auto out = translate_ok(read_file(data(std::string(name) + ".yaml")));
    EXPECT_TRUE(out.warnings.empty()) << name << ": " << out.warnings.front();
  }
}

TEST(FlowdGoTranslate, Detection) {
  EXPECT_TRUE(looks_like_flowd_go_config("/etc/flowd-go/conf.yaml", ""));
  EXPECT_TRUE(looks_like_flowd_go_config("x.yml", "[service]\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("x.toml", "plugins:\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("flowd.cfg", "plugins:\n"));
  EXPECT_TRUE(looks_like_flowd_go_config("conf", "# c\n\n---\nplugins:\n  api: {}\n"));
  EXPECT_TRUE(looks_like_flowd_go_config("conf", "  backends :\n"));
  EXPECT_TRUE(looks_like_flowd_go_config("conf", "pidPath: /run/x.pid\r\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("conf", "[source.pipe]\ntype = \"named-pipe\"\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("conf", "PLUGIN='np_api'\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("conf", "plugins = 3\n"));
  EXPECT_FALSE(looks_like_flowd_go_config("conf", "# only a comment\n"));
}

TEST(FlowdGoTranslate, BothSpellingsOfPerfsonarIds) {
  const auto a = translate_ok(
      "plugins:\n  perfsonar: {experimentId: 7, activityId: 1}\nbackends:\n  marker: {}\n");
  const auto b = translate_ok(
      "plugins:\n  perfsonar: {experimentID: 7, activityID: 1}\nbackends:\n  marker: {}\n");
  EXPECT_EQ(a.toml, b.toml);
  EXPECT_NE(a.toml.find("experiment = 7\nactivity = 1\n"), std::string::npos) << a.toml;
  EXPECT_EQ(translate_error("plugins:\n  perfsonar: {experimentId: 7, experimentID: 7, "
                            "activityId: 1}\nbackends:\n  marker: {}\n"),
            "conf.yaml:2:46: plugins.perfsonar.experimentID: given together with "
            "experimentId: write one of them");
}

TEST(FlowdGoTranslate, UnknownKeysAreErrorsNamingTheirPath) {
  EXPECT_EQ(translate_error("plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n    stun:\n"
                            "      httpResolution: true\n"),
            "conf.yaml:6:7: backends.firefly.stun.httpResolution: unknown key (flowd-go does "
            "not read it); known here: manualMapping, stunServers");
  // The sample conf.yaml's stray quote, uncommented as it is.
  EXPECT_NE(translate_error("workDir\": \"/var/cache/flowd-go\"\n")
                .find("conf.yaml:1:1: workDir\": unknown key"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  np: {}\n")
                .find("conf.yaml:2:3: plugins.np: unknown "
                      "key (flowd-go does not read it); "
                      "known here: namedPipe, firefly"),
            std::string::npos);
  EXPECT_NE(translate_error("enrichers:\n  netlink:\n    cacheCapacity: 0\n")
                .find("conf.yaml:3:5: enrichers.netlink.cacheCapacity: unknown key"),
            std::string::npos);
  EXPECT_NE(translate_error("stunServers: [a]\n").find("conf.yaml:1:1: stunServers: unknown"),
            std::string::npos);
  EXPECT_EQ(translate_error("plugins:\n  api: {}\n  api: {}\n"),
            "conf.yaml:3:3: plugins.api: given twice");
}

TEST(FlowdGoTranslate, WrongTypesAreErrorsNamingTheirPath) {
  EXPECT_EQ(translate_error("plugins:\n  api:\n    bindPort: seven\n"),
            "conf.yaml:3:15: plugins.api.bindPort: 'seven' is not an integer: expected an "
            "integer 0..65535");
  EXPECT_EQ(translate_error("plugins:\n  api:\n    bindPort: \"7777\"\n"),
            "conf.yaml:3:15: plugins.api.bindPort: '7777' is not a number: expected an integer "
            "0..65535");
  EXPECT_EQ(translate_error("plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n"
                            "    prependSyslog: yes please\n"),
            "conf.yaml:5:20: backends.firefly.prependSyslog: 'yes please' is not a boolean: "
            "expected true or false");
  EXPECT_EQ(translate_error("backends:\n  marker:\n    targetInterfaces: eth0\n"),
            "conf.yaml:3:23: backends.marker.targetInterfaces: expected a list ([a, b] or - "
            "lines)");
  EXPECT_EQ(translate_error("plugins: [api]\n"),
            "conf.yaml:1:10: plugins: expected a mapping (or {} for the defaults)");
  EXPECT_EQ(translate_error("plugins:\n  iperf3:\n    experimentIDs: [1, x]\n"
                            "    activityIDs: [1, 2]\n"),
            "conf.yaml:3:24: plugins.iperf3.experimentIDs[1]: 'x' is not an integer: expected "
            "an integer 0..1023");
  EXPECT_NE(translate_error("plugins:\n  api: {\n").find("conf.yaml:"), std::string::npos);
}

TEST(FlowdGoTranslate, BadValuesAreErrorsNamingTheirPath) {
  EXPECT_EQ(translate_error("backends:\n  marker:\n    markingStrategy: sideways\n"),
            "conf.yaml:3:22: backends.marker.markingStrategy: 'sideways' is not one of: label, "
            "hopByHop, destination, hopByHopDestination");
  EXPECT_EQ(translate_error("plugins:\n  api:\n    bindPort: 70000\n"),
            "conf.yaml:3:15: plugins.api.bindPort: 70000 is out of range: expected an integer "
            "0..65535");
  EXPECT_EQ(translate_error("plugins:\n  api:\n    bindAddress: localhost\n"),
            "conf.yaml:3:18: plugins.api.bindAddress: 'localhost' is not an IP address "
            "(flowd-go binds an address, not a host name)");
  EXPECT_EQ(translate_error("plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n"
                            "    enrichmentMode: verbose\n"),
            "conf.yaml:5:21: backends.firefly.enrichmentMode: 'verbose' is not one of: "
            "\"lean\", \"compatible\", \"\" (everything)");
  EXPECT_EQ(translate_error("plugins:\n  firefly:\n    bufferSize: 1024\n"),
            "conf.yaml:3:17: plugins.firefly.bufferSize: 1024: below 2048, which flowd-go "
            "refuses too");
  EXPECT_NE(translate_error("plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n    stun:\n"
                            "      manualMapping:\n        10.0.0.1: \"2001:db8::1\"\n")
                .find("conf.yaml:7:19: backends.firefly.stun.manualMapping.10.0.0.1: '10.0.0.1' "
                      "and '2001:db8::1' are of different families"),
            std::string::npos);
}

TEST(FlowdGoTranslate, RefusedWithTheReason) {
  // matchAll alone: flowd-go marks with the entry only perfsonar inserts, i.e. nothing.
  EXPECT_NE(translate_error("plugins:\n  namedPipe: {}\nbackends:\n  marker:\n    matchAll: true\n")
                .find("conf.yaml:5:15: backends.marker.matchAll: true without plugins.perfsonar"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  perfsonar: {experimentId: 3}\n")
                .find("plugins.perfsonar: the perfsonar plugin only feeds the marker backend"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  perfsonar: {}\nbackends:\n  marker: {}\n")
                .find("conf.yaml:2:14: plugins.perfsonar.experimentId: 0 (flowd-go's default): "
                      "an experiment id 1..511 is needed"),
            std::string::npos);
  EXPECT_NE(translate_error("backends:\n  marker:\n    programPath: /opt/m.o\n")
                .find("conf.yaml:3:18: backends.marker.programPath: '/opt/m.o': flowmarkd loads "
                      "its own eBPF program"),
            std::string::npos);
  EXPECT_NE(translate_error("enrichers:\n  skops:\n    strategy: transition\n")
                .find("conf.yaml:3:15: enrichers.skops.strategy: 'transition'"),
            std::string::npos);
  EXPECT_NE(translate_error("enrichers:\n  netlink:\n    protocol: 17\n")
                .find("conf.yaml:3:15: enrichers.netlink.protocol: 17: flowmarkd's TCP"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  iperf3:\n    minSourcePort: 1000\n"
                            "    maxDestinationPort: 6000\n    experimentIDs: [1]\n"
                            "    activityIDs: [1]\n")
                .find("plugins.iperf3.minDestinationPort: a source and a destination port "
                      "range together cannot be expressed"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  iperf3: {}\n")
                .find("plugins.iperf3.experimentIDs: absent: flowd-go's default [0, 1, 2] starts "
                      "with experiment 0"),
            std::string::npos);
  EXPECT_NE(translate_error("plugins:\n  iperf3:\n    experimentIDs: [1, 2]\n"
                            "    activityIDs: [1]\n")
                .find("2 experiment ids and 1 activity ids"),
            std::string::npos);
  EXPECT_NE(translate_error("backends:\n  prometheus: {netlinkPort: 0, skopsPort: 0}\n")
                .find("backends.prometheus.netlinkPort: 0, and skopsPort 0"),
            std::string::npos);
  EXPECT_NE(translate_error("# every section commented out\n")
                .find("conf.yaml: no plugin and no backend"),
            std::string::npos);
  EXPECT_NE(translate_error("pidPath: /run/x.pid\n").find("conf.yaml: no plugin and no backend"),
            std::string::npos);
}

TEST(FlowdGoTranslate, SectionDetails) {
  // discoverInterfaces: interfaces = "auto"; targetInterfaces then unused, as in flowd-go.
  auto t = translate_ok(
      "backends:\n  marker:\n    discoverInterfaces: true\n    targetInterfaces: [eth0]\n");
  EXPECT_NE(t.toml.find("interfaces = \"auto\"  # discoverInterfaces\n"), std::string::npos);
  EXPECT_EQ(warned_paths(t), std::vector<std::string>{"backends.marker.targetInterfaces"});
  // flowd-go compares marking strategies without case; ours are written as flowd-go's names.
  t = translate_ok("backends:\n  marker: {markingStrategy: HOPBYHOP}\n");
  EXPECT_NE(t.toml.find("strategy = \"hopByHop\"\n"), std::string::npos) << t.toml;
  // enrich without an enricher: flowd-go sends no periodic firefly, nor do we.
  t = translate_ok("plugins:\n  namedPipe: {}\nbackends:\n  firefly: {enrich: true}\n");
  EXPECT_NE(t.toml.find("ongoing_interval = 0\n"), std::string::npos);
  EXPECT_EQ(warned_paths(t), std::vector<std::string>{"backends.firefly.enrich"});
  // enrich with the netlink enricher at its default period; "" is flowd-go's "everything".
  t = translate_ok(
      "plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n    enrich: true\n"
      "    enrichmentMode: \"\"\nenrichers:\n  netlink: {}\n");
  EXPECT_NE(t.toml.find("ongoing_interval = 1.0  # enrichers.period, 1000 ms\n"
                        "ongoing_shape = \"flowmark\"\n"),
            std::string::npos)
      << t.toml;
  EXPECT_TRUE(t.warnings.empty());
  // Enrichers nothing uses.
  t = translate_ok("plugins:\n  namedPipe: {}\nenrichers:\n  period: 10\n  netlink: {}\n");
  EXPECT_EQ(warned_paths(t), std::vector<std::string>{"enrichers"});
  // The collector's address and port only count with sendToCollector.
  t = translate_ok(
      "plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n"
      "    collectorAddress: 192.0.2.1\n");
  EXPECT_NE(t.toml.find("collectors = []\n"), std::string::npos);
  EXPECT_EQ(warned_paths(t), std::vector<std::string>{"backends.firefly.collectorAddress"});
  t = translate_ok(
      "plugins:\n  namedPipe: {}\nbackends:\n  firefly:\n"
      "    sendToCollector: true\n    collectorAddress: collector.example.org\n");
  EXPECT_NE(t.toml.find("collectors = [\"collector.example.org:10514\"]\n"), std::string::npos);
  // A null section is absent to flowd-go: said.
  t = translate_ok("plugins:\n  namedPipe:\n  api: {}\n");
  EXPECT_EQ(t.toml.find("[source.namedPipe]"), std::string::npos);
  EXPECT_EQ(warned_paths(t), std::vector<std::string>{"plugins.namedPipe"});
  // Prometheus with only the skops port: served there.
  t = translate_ok("backends:\n  prometheus: {netlinkPort: 0, bindAddress: \"::1\"}\n");
  EXPECT_NE(t.toml.find("listen = \"[::1]:8081\"\nflow_metrics = false"), std::string::npos)
      << t.toml;
  // iperf3 without port bounds: every TCP connection.
  t = translate_ok("plugins:\n  iperf3: {experimentIDs: [5], activityIDs: [0], randomIDs: true}\n");
  EXPECT_NE(t.toml.find("ports = [\"1-65535\"]\nchoices = [\"5:0\"]\n"), std::string::npos)
      << t.toml;
  EXPECT_TRUE(t.warnings.empty());
}

}  // namespace
}  // namespace flowmark::daemon
