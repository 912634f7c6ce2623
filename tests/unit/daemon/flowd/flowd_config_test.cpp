#include "flowmark/daemon/flowd/flowd_config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <toml++/toml.h>

namespace flowmark::daemon {
namespace {

// ---- the parser ------------------------------------------------------------------------

FlowdConfig parse_ok(std::string_view text) {
  auto cfg = parse_flowd_config(text, "flowd.cfg");
  EXPECT_TRUE(cfg.has_value()) << (cfg ? "" : cfg.error().message());
  return cfg ? *cfg : FlowdConfig{};
}

FlowdValue value_of(std::string_view text) {
  const FlowdConfig cfg = parse_ok(text);
  EXPECT_EQ(cfg.entries.size(), 1u) << text;
  return cfg.entries.empty() ? FlowdValue{} : cfg.entries.front().value;
}

std::string parse_error(std::string_view text) {
  auto cfg = parse_flowd_config(text, "flowd.cfg");
  if (cfg) return "(parsed)";
  EXPECT_EQ(cfg.error().code(), Errc::kMalformed);
  return cfg.error().message();
}

FlowdList list(std::vector<FlowdScalar> items, bool tuple) { return {std::move(items), tuple}; }

TEST(FlowdParse, Strings) {
  EXPECT_EQ(value_of("K='netstat'"), FlowdValue(std::string("netstat")));
  EXPECT_EQ(value_of("K = \"netstat\""), FlowdValue(std::string("netstat")));
  EXPECT_EQ(value_of("K=''"), FlowdValue(std::string()));
  EXPECT_EQ(value_of(R"(K='it\'s "x" \\ \n\t\x41\101\u00e9\U0001F600')"),
            FlowdValue(std::string("it's \"x\" \\ \n\tAA\xC3\xA9\xF0\x9F\x98\x80")));
  EXPECT_EQ(value_of(R"(K="a'b")"), FlowdValue(std::string("a'b")));
  // Python keeps unknown escapes as written; raw strings keep every backslash.
  EXPECT_EQ(value_of(R"(K='C:\dir')"), FlowdValue(std::string("C:\\dir")));
  EXPECT_EQ(value_of(R"(K=r'\d+\'')"), FlowdValue(std::string("\\d+\\'")));
  EXPECT_EQ(value_of("K=u'x'"), FlowdValue(std::string("x")));
  EXPECT_EQ(value_of("K='a # not a comment' # a comment"),
            FlowdValue(std::string("a # not a comment")));
  EXPECT_EQ(value_of("K='one \\\ntwo'"), FlowdValue(std::string("one two")));
}

TEST(FlowdParse, Numbers) {
  EXPECT_EQ(value_of("K=10514"), FlowdValue(std::int64_t{10514}));
  EXPECT_EQ(value_of("K=-3"), FlowdValue(std::int64_t{-3}));
  EXPECT_EQ(value_of("K=+7"), FlowdValue(std::int64_t{7}));
  EXPECT_EQ(value_of("K=0"), FlowdValue(std::int64_t{0}));
  EXPECT_EQ(value_of("K=10_514"), FlowdValue(std::int64_t{10514}));
  EXPECT_EQ(value_of("K=0x2A"), FlowdValue(std::int64_t{42}));
  EXPECT_EQ(value_of("K=0o17"), FlowdValue(std::int64_t{15}));
  EXPECT_EQ(value_of("K=0b101"), FlowdValue(std::int64_t{5}));
  EXPECT_EQ(value_of("K=9223372036854775807"), FlowdValue(std::int64_t{9223372036854775807}));
  EXPECT_EQ(value_of("K=-9223372036854775808"),
            FlowdValue(std::numeric_limits<std::int64_t>::min()));
  EXPECT_EQ(value_of("K=2.0"), FlowdValue(2.0));
  EXPECT_EQ(value_of("K=.5"), FlowdValue(0.5));
  EXPECT_EQ(value_of("K=-1.5e3"), FlowdValue(-1500.0));
  EXPECT_EQ(value_of("K=1E-2"), FlowdValue(0.01));
}

TEST(FlowdParse, Keywords) {
  EXPECT_EQ(value_of("K=True"), FlowdValue(true));
  EXPECT_EQ(value_of("K=False"), FlowdValue(false));
  EXPECT_EQ(value_of("K=None"), FlowdValue(FlowdNone{}));
}

TEST(FlowdParse, TuplesAndLists) {
  EXPECT_EQ(value_of("K=('a', 'b')"), FlowdValue(list({"a", "b"}, true)));
  EXPECT_EQ(value_of("K=['a', 2, 3.5, True, None]"),
            FlowdValue(list({"a", std::int64_t{2}, 3.5, true, FlowdNone{}}, false)));
  EXPECT_EQ(value_of("K=('a',)"), FlowdValue(list({"a"}, true)));
  EXPECT_EQ(value_of("K=('192.168.0.0/16', )"), FlowdValue(list({"192.168.0.0/16"}, true)));
  EXPECT_EQ(value_of("K=['a',]"), FlowdValue(list({"a"}, false)));
  EXPECT_EQ(value_of("K=()"), FlowdValue(list({}, true)));
  EXPECT_EQ(value_of("K=[ ]"), FlowdValue(list({}, false)));
  // Parentheses alone make no tuple: ('a') is the string 'a', as in Python.
  EXPECT_EQ(value_of("K=('a')"), FlowdValue(std::string("a")));
  EXPECT_EQ(value_of("K=(5)"), FlowdValue(std::int64_t{5}));
  // Across lines, with comments and a trailing comma.
  EXPECT_EQ(value_of("K = [\n  'a',  # first\n\n  # a whole-line comment\n  'b',\n]\n"),
            FlowdValue(list({"a", "b"}, false)));
}

TEST(FlowdParse, LinesCommentsAndPositions) {
  const FlowdConfig cfg = parse_ok(
      "\xEF\xBB\xBF# flowd config\r\n"
      "\r\n"
      "PLUGIN='netstat'\r\n"
      "   BACKEND  =  'udp_firefly'   # trailing comment\n"
      "NETSTAT_INTERNAL_NETWORKS = (\n"
      "  '10.0.0.0/8',\n"
      ")\n"
      "A=\\\n  5\n");
  ASSERT_EQ(cfg.entries.size(), 4u);
  EXPECT_EQ(cfg.file_name, "flowd.cfg");
  EXPECT_EQ(cfg.entries[0].key, "PLUGIN");
  EXPECT_EQ(cfg.entries[0].line, 3);
  EXPECT_EQ(cfg.entries[0].column, 1);
  EXPECT_EQ(cfg.entries[1].key, "BACKEND");
  EXPECT_EQ(cfg.entries[1].line, 4);
  EXPECT_EQ(cfg.entries[1].column, 4);
  EXPECT_EQ(cfg.entries[1].value, FlowdValue(std::string("udp_firefly")));
  EXPECT_EQ(cfg.entries[2].line, 5);
  EXPECT_EQ(cfg.entries[3].key, "A");  // a `\` continues the line
  EXPECT_EQ(cfg.entries[3].line, 8);
  EXPECT_EQ(cfg.entries[3].value, FlowdValue(std::int64_t{5}));
  EXPECT_TRUE(parse_ok("").entries.empty());
  EXPECT_TRUE(parse_ok("# only\n\n   \n# comments").entries.empty());
}

TEST(FlowdParse, DuplicatesLastWins) {
  const FlowdConfig cfg = parse_ok("A=1\nB=2\nA=3\nA=4\n");
  ASSERT_EQ(cfg.entries.size(), 4u);  // every assignment is kept
  ASSERT_NE(cfg.find("A"), nullptr);
  EXPECT_EQ(cfg.find("A")->value, FlowdValue(std::int64_t{4}));
  EXPECT_EQ(cfg.find("A")->line, 4);
  EXPECT_EQ(cfg.find("C"), nullptr);
  const auto dups = cfg.duplicates();
  ASSERT_EQ(dups.size(), 1u);
  EXPECT_EQ(dups[0].key, "A");
  EXPECT_EQ(dups[0].lines, (std::vector<int>{1, 3, 4}));
}

TEST(FlowdParse, ErrorsNameFileLineColumn) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"PLUGIN='netstat'\nBACKEND='udp_firefly\n", "flowd.cfg:2:9: unterminated string"},
      {"A='x'\n\n\n\n\n\nFLOW_MAP_API='http://x", "flowd.cfg:7:14: unterminated string"},
      {"A='x\\", "flowd.cfg:1:3: unterminated string"},
      {"A='''x'''", "flowd.cfg:1:3: triple-quoted strings are not supported"},
      {"A=b'x'", "flowd.cfg:1:3: bytes and f-strings are not supported; use a plain quoted string"},
      {"A='\\x4'", "flowd.cfg:1:4: invalid \\x escape: expected 2 hex digits"},
      {"A='\\ud800'", "flowd.cfg:1:4: invalid \\u escape: U+D800 is not a character"},
      {"A='\\N{DASH}'", "flowd.cfg:1:4: \\N{...} escapes are not supported"},
      {"'A'=1", "flowd.cfg:1:1: expected KEY = value, found '''"},
      {"  = 1", "flowd.cfg:1:3: expected KEY = value, found '='"},
      {"A 1", "flowd.cfg:1:3: expected '=' after A, found '1'"},
      {"A == 1", "flowd.cfg:1:3: expected '=' after A, found '='"},
      {"A\n=1", "flowd.cfg:1:2: expected '=' after A, found the end of the line"},
      {"A=",
       "flowd.cfg:1:3: expected a value for A (a quoted string, a number, True, False, "
       "None, a tuple or a list), found the end of the file"},
      {"A=\nB=1",
       "flowd.cfg:1:3: expected a value for A (a quoted string, a number, True, "
       "False, None, a tuple or a list), found the end of the line"},
      {"A=true",
       "flowd.cfg:1:3: expected a value for A: a quoted string, a number, True, False "
       "or None, not the name true (Python spells it True)"},
      {"A=netstat",
       "flowd.cfg:1:3: expected a value for A: a quoted string, a number, True, "
       "False or None, not the name netstat"},
      {"A=1 2", "flowd.cfg:1:5: expected the end of the line after the value of A, found '2'"},
      {"A=1; B=2",
       "flowd.cfg:1:4: expected the end of the line after the value of A, found ';' "
       "(one KEY = value per line)"},
      {"A='a' 'b'", "flowd.cfg:1:7: expected the end of the line after the value of A, found '''"},
      {"A=012",
       "flowd.cfg:1:3: invalid number '012': Python does not allow leading zeros "
       "(write 0o12 for octal)"},
      {"A=1_", "flowd.cfg:1:3: invalid number: '_' must sit between digits"},
      {"A=1__0", "flowd.cfg:1:3: invalid number: '_' must sit between digits"},
      {"A=12ab", "flowd.cfg:1:3: invalid number: 'a' cannot follow the digits"},
      {"A=-", "flowd.cfg:1:3: expected digits after the sign or prefix"},
      {"A=0x", "flowd.cfg:1:3: expected digits after the sign or prefix"},
      {"A=0b12", "flowd.cfg:1:3: invalid base-2 number '12'"},
      {"A=1.2.3", "flowd.cfg:1:3: invalid number '1.2.3'"},
      {"A=1e999", "flowd.cfg:1:3: number out of range"},
      {"A=9223372036854775808", "flowd.cfg:1:3: integer out of range (64-bit)"},
      {"A=('a', 'b'\nB=1", "flowd.cfg:2:1: expected ',' or ')', found 'B'"},
      {"A=('a',\n 'b',\n", "flowd.cfg:1:3: '(' is never closed (expected ')')"},
      {"A=['a'", "flowd.cfg:1:3: '[' is never closed (expected ']')"},
      {"A=('a', ['b'])",
       "flowd.cfg:1:9: nested tuples and lists are not supported (flowd's keys "
       "take a flat list of strings or numbers)"},
      {"A=(,)",
       "flowd.cfg:1:4: expected a value (a quoted string, a number, True, False, None, a "
       "tuple or a list), found ','"},
      {"A=('a',,)",
       "flowd.cfg:1:8: expected a value (a quoted string, a number, True, False, "
       "None, a tuple or a list), found ','"},
      {"A=\x01",
       "flowd.cfg:1:3: expected a value for A (a quoted string, a number, True, False, "
       "None, a tuple or a list), found byte 0x01"},
      {"# caf\xE9\nA=1",
       "flowd.cfg:1:6: byte 0xe9 is not UTF-8 (flowd reads its config as "
       "UTF-8 text)"},
      {"A='\xC3\xA9\xF0\x9F'",
       "flowd.cfg:1:6: byte 0xf0 is not UTF-8 (flowd reads its "
       "config as UTF-8 text)"},
      {"A='\xED\xA0\x80'",
       "flowd.cfg:1:4: byte 0xed is not UTF-8 (flowd reads its config as "
       "UTF-8 text)"},
  };
  for (const auto& [text, message] : cases) {
    EXPECT_EQ(parse_error(text), message) << text;
  }
}

TEST(FlowdParse, ToPython) {
  EXPECT_EQ(to_python(FlowdValue(std::string("it's"))), "\"it's\"");
  EXPECT_EQ(to_python(FlowdValue(std::string("a\nb"))), "'a\\nb'");
  EXPECT_EQ(to_python(FlowdValue(std::int64_t{-2})), "-2");
  EXPECT_EQ(to_python(FlowdValue(2.0)), "2.0");
  EXPECT_EQ(to_python(FlowdValue(0.25)), "0.25");
  EXPECT_EQ(to_python(FlowdValue(true)), "True");
  EXPECT_EQ(to_python(FlowdValue(FlowdNone{})), "None");
  EXPECT_EQ(to_python(FlowdValue(list({"a"}, true))), "('a',)");
  EXPECT_EQ(to_python(FlowdValue(list({"a", std::int64_t{1}}, false))), "['a', 1]");
  EXPECT_EQ(to_python(FlowdValue(list({}, true))), "()");
}

TEST(FlowdDetect, FlowdLinesVersusToml) {
  EXPECT_TRUE(looks_like_flowd_config("PLUGIN='netstat'\n"));
  EXPECT_TRUE(looks_like_flowd_config("# flowd\n\n  BACKEND = 'udp_firefly'\n[x]\n"));
  EXPECT_TRUE(looks_like_flowd_config("\xEF\xBB\xBFNETSTAT_EXPERIMENT=2"));
  EXPECT_TRUE(looks_like_flowd_config("A2_B\t=\t1"));
  EXPECT_FALSE(looks_like_flowd_config("[service]\nregistry = \"builtin\"\n"));
  EXPECT_FALSE(looks_like_flowd_config("# comment\n[source.pipe]\ntype = \"named-pipe\"\n"));
  EXPECT_FALSE(looks_like_flowd_config("service.registry = \"builtin\"\n"));
  EXPECT_FALSE(looks_like_flowd_config("registry = 'x'\n"));
  EXPECT_FALSE(looks_like_flowd_config("PLUGIN == 'x'"));
  EXPECT_FALSE(looks_like_flowd_config("PLUGIN"));
  EXPECT_FALSE(looks_like_flowd_config("Plugin = 'x'"));
  EXPECT_FALSE(looks_like_flowd_config(""));
  EXPECT_FALSE(looks_like_flowd_config("# only a comment\n"));
}

// ---- the translation -------------------------------------------------------------------

struct Translated {
  toml::table doc;
  std::vector<std::string> warnings;
  std::string text;
};

Translated translate(std::string_view text) {
  auto cfg = parse_flowd_config(text, "flowd.cfg");
  EXPECT_TRUE(cfg.has_value()) << (cfg ? "" : cfg.error().message());
  if (!cfg) return {};
  auto out = translate_flowd_config(*cfg);
  EXPECT_TRUE(out.has_value()) << (out ? "" : out.error().message());
  if (!out) return {};
  Translated t;
  t.doc = toml::parse(out->toml);
  t.warnings = out->warnings;
  t.text = out->toml;
  return t;
}

std::string translate_error(std::string_view text) {
  auto cfg = parse_flowd_config(text, "flowd.cfg");
  EXPECT_TRUE(cfg.has_value()) << (cfg ? "" : cfg.error().message());
  if (!cfg) return {};
  auto out = translate_flowd_config(*cfg);
  if (out) return "(translated)";
  EXPECT_EQ(out.error().code(), Errc::kInvalidArgument);
  return out.error().message();
}

std::vector<std::string> strings(const toml::node_view<toml::node>& node) {
  std::vector<std::string> out;
  const toml::array* a = node.as_array();
  EXPECT_NE(a, nullptr);
  if (a == nullptr) return out;
  for (const auto& e : *a) out.push_back(e.value_or(std::string("<not a string>")));
  return out;
}

std::string fmt_line(std::string_view head, std::string_view value) {
  return std::string(head) + std::string(value);
}

constexpr std::string_view kNetstat =
    "PLUGIN='netstat'\nNETSTAT_EXPERIMENT=2\nNETSTAT_ACTIVITY=9\n";

TEST(FlowdTranslate, PluginNamesAndSources) {
  auto np = translate("PLUGIN='np_api'");
  EXPECT_EQ(np.doc["source"]["np_api"]["type"].value_or(""), std::string("named-pipe"));
  EXPECT_EQ(np.doc["source"]["np_api"]["path"].value_or(""), std::string("/var/run/flowd"));
  EXPECT_EQ(np.doc["source"].as_table()->size(), 1u);

  auto ff = translate("PLUGIN='firefly'");
  EXPECT_EQ(ff.doc["source"]["firefly"]["type"].value_or(""), std::string("firefly"));
  EXPECT_EQ(ff.doc["source"]["firefly"]["bind"].value_or(""), std::string("0.0.0.0"));
  EXPECT_EQ(ff.doc["source"]["firefly"]["port"].value_or(0), 10514);

  auto ns = translate(kNetstat);
  EXPECT_EQ(ns.doc["source"]["netstat"]["type"].value_or(""), std::string("sockets"));
  EXPECT_EQ(ns.doc["source"]["netstat"]["period"].value_or(0.0), 2.0);
  EXPECT_EQ(strings(ns.doc["source"]["netstat"]["protocols"]), (std::vector<std::string>{"tcp"}));

  auto nl = translate("PLUGIN='netlink'\nNETLINK_EXPERIMENT=3\nNETLINK_ACTIVITY=4");
  EXPECT_EQ(nl.doc["source"]["netlink"]["type"].value_or(""), std::string("sockets"));

  auto ip = translate("PLUGIN = ' iperf '");
  EXPECT_EQ(ip.doc["source"]["iperf"]["type"].value_or(""), std::string("sockets"));
  EXPECT_EQ(ip.doc["source"]["iperf"]["preset"].value_or(""), std::string("iperf"));
  EXPECT_FALSE(ip.doc["source"]["iperf"]["experiment"]);  // the preset's pairs, as in flowd

  EXPECT_EQ(translate_error("PLUGIN='iperf_rr'"),
            "flowd.cfg:1: PLUGIN = 'iperf_rr': unknown plugin 'iperf_rr'; flowd runs exactly one "
            "of: firefly, iperf, netlink, netstat, np_api");
  EXPECT_EQ(translate_error("PLUGIN='np_api,firefly'"),
            "flowd.cfg:1: PLUGIN = 'np_api,firefly': unknown plugin 'np_api,firefly'; flowd runs "
            "exactly one of: firefly, iperf, netlink, netstat, np_api");
  EXPECT_EQ(translate_error("PLUGIN=('np_api',)"),
            "flowd.cfg:1: PLUGIN = ('np_api',): expected one plugin name in quotes");
  EXPECT_EQ(translate_error("BACKEND='udp_firefly'"),
            "flowd.cfg: PLUGIN is not set; flowd needs one plugin: firefly, iperf, netlink, "
            "netstat, np_api");
}

TEST(FlowdTranslate, Backend) {
  auto def = translate("PLUGIN='np_api'");  // flowd's default backend
  ASSERT_TRUE(def.doc["backend"].as_table());
  EXPECT_EQ(def.doc["backend"].as_table()->size(), 1u);
  EXPECT_EQ(def.doc["backend"]["udp_firefly"]["type"].value_or(""), std::string("firefly"));
  EXPECT_EQ(def.doc["backend"]["udp_firefly"]["to_destination"].value_or(false), true);

  auto all = translate(
      "PLUGIN='np_api'\nBACKEND=' ebpf ,prometheus, udp_firefly'\nNETWORK_INTERFACE='eth0'");
  EXPECT_EQ(all.doc["backend"].as_table()->size(), 3u);
  EXPECT_EQ(all.doc["backend"]["ebpf"]["type"].value_or(""), std::string("flowlabel"));
  EXPECT_EQ(all.doc["backend"]["prometheus"]["type"].value_or(""), std::string("prometheus"));
  EXPECT_EQ(all.doc["backend"]["udp_firefly"]["type"].value_or(""), std::string("firefly"));

  auto twice = translate("PLUGIN='np_api'\nBACKEND='udp_firefly,udp_firefly'");
  EXPECT_EQ(twice.doc["backend"].as_table()->size(), 1u);
  EXPECT_EQ(
      twice.warnings,
      (std::vector<std::string>{"flowd.cfg:2: BACKEND names udp_firefly twice; it runs once"}));

  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND='udp_firefly,kafka'"),
            "flowd.cfg:2: BACKEND = 'udp_firefly,kafka': unknown backend 'kafka'; known: ebpf, "
            "prometheus, udp_firefly");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND=''"),
            "flowd.cfg:2: BACKEND = '': expected at least one backend of: ebpf, prometheus, "
            "udp_firefly");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND=1"),
            "flowd.cfg:2: BACKEND = 1: expected backend names in quotes, or a tuple or list of "
            "them");
}

TEST(FlowdTranslate, FlowMapApi) {
  EXPECT_EQ(translate("PLUGIN='np_api'").doc["service"]["registry"].value_or(""),
            std::string("builtin"));
  EXPECT_EQ(translate("PLUGIN='np_api'\nFLOW_MAP_API='https://www.scitags.org/api.json'")
                .doc["service"]["registry"]
                .value_or(""),
            std::string("https://www.scitags.org/api.json"));
  EXPECT_EQ(translate("PLUGIN='np_api'\nFLOW_MAP_API='/etc/flowd/api.json'")
                .doc["service"]["registry"]
                .value_or(""),
            std::string("/etc/flowd/api.json"));
  EXPECT_EQ(translate("PLUGIN='np_api'\nFLOW_MAP_API='file:///etc/flowd/api.json'")
                .doc["service"]["registry"]
                .value_or(""),
            std::string("/etc/flowd/api.json"));
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nFLOW_MAP_API='ftp://x/api.json'"),
            "flowd.cfg:2: FLOW_MAP_API = 'ftp://x/api.json': expected an http:// or https:// URL "
            "or a file path");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nFLOW_MAP_API=None"),
            "flowd.cfg:2: FLOW_MAP_API = None: expected an http(s):// URL or a file path in "
            "quotes");
}

TEST(FlowdTranslate, IpDiscoveryEnabled) {
  EXPECT_EQ(translate("PLUGIN='np_api'").doc["public_address"]["discover"].value_or(true), false);
  for (const char* v : {"True", "1", "'true'", "'True'"}) {
    EXPECT_EQ(translate(fmt_line("PLUGIN='np_api'\nIP_DISCOVERY_ENABLED=", v))
                  .doc["public_address"]["discover"]
                  .value_or(false),
              true)
        << v;
  }
  for (const char* v : {"False", "0", "None", "'FALSE'"}) {
    EXPECT_EQ(translate(fmt_line("PLUGIN='np_api'\nIP_DISCOVERY_ENABLED=", v))
                  .doc["public_address"]["discover"]
                  .value_or(true),
              false)
        << v;
  }
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nIP_DISCOVERY_ENABLED='no'"),
            "flowd.cfg:2: IP_DISCOVERY_ENABLED = 'no': expected True or False (or 1/0)");
  auto t = translate("PLUGIN='np_api'");
  EXPECT_EQ(strings(t.doc["public_address"]["stun_servers"]), std::vector<std::string>{});
  EXPECT_EQ(t.doc["service"]["hostname"].value_or("x"), std::string());
}

TEST(FlowdTranslate, NetstatExperimentActivityNetworks) {
  auto t = translate(std::string(kNetstat) +
                     "NETSTAT_INTERNAL_NETWORKS=('192.168.0.0/16', '2001:db8::/32', '10.1.2.3')");
  const auto src = t.doc["source"]["netstat"];
  EXPECT_EQ(src["experiment"].value_or(0), 2);
  EXPECT_EQ(src["activity"].value_or(0), 9);
  EXPECT_EQ(strings(src["internal_networks"]),
            (std::vector<std::string>{"192.168.0.0/16", "2001:db8::/32", "10.1.2.3"}));
  EXPECT_TRUE(t.warnings.empty());

  // As flowd takes them: numbers in quotes, registry names, and ('net') — a plain string.
  auto s = translate(
      "PLUGIN='netstat'\nNETSTAT_EXPERIMENT='atlas'\nNETSTAT_ACTIVITY='9'\n"
      "NETSTAT_INTERNAL_NETWORKS=('192.168.0.0/16')");
  EXPECT_EQ(s.doc["source"]["netstat"]["experiment"].value_or(""), std::string("atlas"));
  EXPECT_EQ(s.doc["source"]["netstat"]["activity"].value_or(0), 9);
  EXPECT_EQ(strings(s.doc["source"]["netstat"]["internal_networks"]),
            (std::vector<std::string>{"192.168.0.0/16"}));
  EXPECT_EQ(strings(translate(kNetstat).doc["source"]["netstat"]["internal_networks"]),
            std::vector<std::string>{});

  EXPECT_EQ(translate_error("PLUGIN='netstat'\nNETSTAT_EXPERIMENT=2"),
            "flowd.cfg: PLUGIN 'netstat' needs NETSTAT_EXPERIMENT and NETSTAT_ACTIVITY (the ids "
            "given to every connection it reports)");
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETSTAT_EXPERIMENT=1024"),
            "flowd.cfg:4: NETSTAT_EXPERIMENT = 1024: expected an experiment id 1..1023 or its "
            "name in the registry ('atlas')");
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETSTAT_ACTIVITY=[9]"),
            "flowd.cfg:4: NETSTAT_ACTIVITY = [9]: expected an activity id 0..63 or its name in "
            "the registry ('atlas')");
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETSTAT_ACTIVITY=64"),
            "flowd.cfg:4: NETSTAT_ACTIVITY = 64: expected an activity id 0..63 or its name in the "
            "registry ('atlas')");
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETSTAT_INTERNAL_NETWORKS=('10.0.0.0/33',)"),
            "flowd.cfg:4: NETSTAT_INTERNAL_NETWORKS = ('10.0.0.0/33',): '10.0.0.0/33' is not a "
            "network; expected address/prefix-length such as '192.168.0.0/16' or "
            "'2001:db8::/32'");
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETSTAT_INTERNAL_NETWORKS=[10]"),
            "flowd.cfg:4: NETSTAT_INTERNAL_NETWORKS = [10]: every element must be a network "
            "('192.168.0.0/16') in quotes");
}

TEST(FlowdTranslate, NetlinkExperimentActivityNetworks) {
  auto t = translate(
      "PLUGIN='netlink'\nNETLINK_EXPERIMENT=5\nNETLINK_ACTIVITY=14\n"
      "NETLINK_INTERNAL_NETWORKS=['10.0.0.0/8']");
  const auto src = t.doc["source"]["netlink"];
  EXPECT_EQ(src["experiment"].value_or(0), 5);
  EXPECT_EQ(src["activity"].value_or(0), 14);
  EXPECT_EQ(strings(src["internal_networks"]), (std::vector<std::string>{"10.0.0.0/8"}));
  EXPECT_EQ(translate_error("PLUGIN='netlink'\nNETLINK_ACTIVITY=2"),
            "flowd.cfg: PLUGIN 'netlink' needs NETLINK_EXPERIMENT and NETLINK_ACTIVITY (the ids "
            "given to every connection it reports)");
  // The other scanner's keys are checked, then ignored with a warning.
  auto w = translate(std::string(kNetstat) + "NETLINK_EXPERIMENT=3");
  EXPECT_EQ(w.warnings, (std::vector<std::string>{
                            "flowd.cfg:4: NETLINK_EXPERIMENT is ignored: only PLUGIN 'netlink' "
                            "uses it, and PLUGIN is 'netstat'"}));
  EXPECT_EQ(translate_error(std::string(kNetstat) + "NETLINK_EXPERIMENT=0"),
            "flowd.cfg:4: NETLINK_EXPERIMENT = 0: expected an experiment id 1..1023 or its name "
            "in the registry ('atlas')");
}

TEST(FlowdTranslate, IperfReadsNetstatNetworks) {
  auto t = translate(
      "PLUGIN='iperf'\nNETSTAT_INTERNAL_NETWORKS=('10.0.0.0/8',)\n"
      "NETSTAT_EXPERIMENT=2");
  EXPECT_EQ(strings(t.doc["source"]["iperf"]["internal_networks"]),
            (std::vector<std::string>{"10.0.0.0/8"}));
  EXPECT_EQ(t.warnings, (std::vector<std::string>{
                            "flowd.cfg:3: NETSTAT_EXPERIMENT is ignored: only PLUGIN 'netstat' "
                            "uses it, and PLUGIN is 'iperf'"}));
}

TEST(FlowdTranslate, FireflyListenerHostAndPort) {
  auto t = translate(
      "PLUGIN='firefly'\nFIREFLY_LISTENER_HOST='192.0.2.1'\n"
      "FIREFLY_LISTENER_PORT=10600");
  EXPECT_EQ(t.doc["source"]["firefly"]["bind"].value_or(""), std::string("192.0.2.1"));
  EXPECT_EQ(t.doc["source"]["firefly"]["port"].value_or(0), 10600);
  // Python binds '' to every address; ports may be strings.
  auto s = translate("PLUGIN='firefly'\nFIREFLY_LISTENER_HOST=''\nFIREFLY_LISTENER_PORT='10514'");
  EXPECT_EQ(s.doc["source"]["firefly"]["bind"].value_or(""), std::string("0.0.0.0"));
  EXPECT_EQ(s.doc["source"]["firefly"]["port"].value_or(0), 10514);
  const std::string allowed = "expected a port number 1..65535 (10514 or '10514')";
  for (const char* bad : {"0", "70000", "'x'", "10514.0", "(10514,)", "None"}) {
    auto cfg = parse_flowd_config(fmt_line("PLUGIN='firefly'\nFIREFLY_LISTENER_PORT=", bad), "f");
    ASSERT_TRUE(cfg) << bad;
    auto out = translate_flowd_config(*cfg);
    ASSERT_FALSE(out) << bad;
    EXPECT_EQ(out.error().message(), "f:2: FIREFLY_LISTENER_PORT = " +
                                         to_python(cfg->find("FIREFLY_LISTENER_PORT")->value) +
                                         ": " + allowed);
  }
  EXPECT_EQ(translate_error("PLUGIN='firefly'\nFIREFLY_LISTENER_HOST=0"),
            "flowd.cfg:2: FIREFLY_LISTENER_HOST = 0: expected an address to listen on in quotes");
  auto w = translate("PLUGIN='np_api'\nFIREFLY_LISTENER_PORT=1");
  EXPECT_EQ(w.warnings,
            (std::vector<std::string>{"flowd.cfg:2: FIREFLY_LISTENER_PORT is ignored: only PLUGIN "
                                      "'firefly' uses it, and PLUGIN is 'np_api'"}));
}

TEST(FlowdTranslate, UdpFireflySources) {
  auto t = translate(
      "PLUGIN='np_api'\nUDP_FIREFLY_IP4_SRC='192.0.2.7'\n"
      "UDP_FIREFLY_IP6_SRC='2001:db8::7'");
  EXPECT_EQ(t.doc["public_address"]["ipv4"].value_or(""), std::string("192.0.2.7"));
  EXPECT_EQ(t.doc["public_address"]["ipv6"].value_or(""), std::string("2001:db8::7"));
  auto none = translate("PLUGIN='np_api'");
  EXPECT_EQ(none.doc["public_address"]["ipv4"].value_or("x"), std::string());
  EXPECT_EQ(none.doc["public_address"]["ipv6"].value_or("x"), std::string());
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nUDP_FIREFLY_IP4_SRC='2001:db8::7'"),
            "flowd.cfg:2: UDP_FIREFLY_IP4_SRC = '2001:db8::7': expected an IPv4 address");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nUDP_FIREFLY_IP6_SRC='host.example.org'"),
            "flowd.cfg:2: UDP_FIREFLY_IP6_SRC = 'host.example.org': expected an IPv6 address");
}

TEST(FlowdTranslate, UdpFireflyDst) {
  auto one = translate("PLUGIN='np_api'\nUDP_FIREFLY_DST='localhost'");
  EXPECT_EQ(strings(one.doc["backend"]["udp_firefly"]["collectors"]),
            (std::vector<std::string>{"localhost"}));
  auto many =
      translate("PLUGIN='np_api'\nUDP_FIREFLY_DST=('a.example.org', '[2001:db8::1]:10514')");
  EXPECT_EQ(strings(many.doc["backend"]["udp_firefly"]["collectors"]),
            (std::vector<std::string>{"a.example.org", "[2001:db8::1]:10514"}));
  auto none = translate("PLUGIN='np_api'");
  EXPECT_EQ(strings(none.doc["backend"]["udp_firefly"]["collectors"]), std::vector<std::string>{});
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nUDP_FIREFLY_DST=True"),
            "flowd.cfg:2: UDP_FIREFLY_DST = True: expected a collector host[:port] in quotes, or a "
            "tuple or list of them");
  auto w = translate("PLUGIN='np_api'\nBACKEND='prometheus'\nUDP_FIREFLY_DST='x'");
  EXPECT_EQ(w.warnings.at(1),
            "flowd.cfg:3: UDP_FIREFLY_DST is ignored: only BACKEND "
            "'udp_firefly' uses it, and BACKEND is 'prometheus'");
}

TEST(FlowdTranslate, UdpFireflyNetlink) {
  EXPECT_EQ(translate("PLUGIN='np_api'\nUDP_FIREFLY_NETLINK=True")
                .doc["backend"]["udp_firefly"]["tcp_info"]
                .value_or(false),
            true);
  EXPECT_EQ(translate("PLUGIN='np_api'").doc["backend"]["udp_firefly"]["tcp_info"].value_or(true),
            false);
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nUDP_FIREFLY_NETLINK=2"),
            "flowd.cfg:2: UDP_FIREFLY_NETLINK = 2: expected True or False (or 1/0)");
}

TEST(FlowdTranslate, NetworkInterface) {
  auto t = translate("PLUGIN='np_api'\nBACKEND='ebpf'\nNETWORK_INTERFACE='eth0, ens1f0 ,'");
  EXPECT_EQ(strings(t.doc["backend"]["ebpf"]["interfaces"]),
            (std::vector<std::string>{"eth0", "ens1f0"}));
  auto l = translate("PLUGIN='np_api'\nBACKEND='ebpf'\nNETWORK_INTERFACE=['eth0', 'eth1']");
  EXPECT_EQ(strings(l.doc["backend"]["ebpf"]["interfaces"]),
            (std::vector<std::string>{"eth0", "eth1"}));
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND='ebpf'"),
            "flowd.cfg: BACKEND 'ebpf' needs NETWORK_INTERFACE, the interfaces whose IPv6 packets "
            "get flow labels ('eth0' or 'eth0,eth1')");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND='ebpf'\nNETWORK_INTERFACE=('eth0', '')"),
            "flowd.cfg:3: NETWORK_INTERFACE = ('eth0', ''): an element is empty; expected an "
            "interface name");
}

TEST(FlowdTranslate, PrometheusPortAndSsPath) {
  auto def = translate("PLUGIN='np_api'\nBACKEND='prometheus'");
  EXPECT_EQ(def.doc["backend"]["prometheus"]["listen"].value_or(""), std::string("0.0.0.0:9000"));
  EXPECT_EQ(def.warnings,
            (std::vector<std::string>{
                "flowd.cfg:2: the prometheus backend listens on 0.0.0.0:9000 (all addresses) as "
                "flowd does; to keep it local, use a TOML config with listen = "
                "\"127.0.0.1:9000\""}));
  auto t = translate(
      "PLUGIN='np_api'\nBACKEND='prometheus'\nPROMETHEUS_SRV_PORT='9101'\n"
      "PROMETHEUS_SS_PATH='/usr/sbin/ss'");
  EXPECT_EQ(t.doc["backend"]["prometheus"]["listen"].value_or(""), std::string("0.0.0.0:9101"));
  ASSERT_EQ(t.warnings.size(), 2u);
  EXPECT_EQ(t.warnings[1],
            "flowd.cfg:4: PROMETHEUS_SS_PATH is accepted and ignored: flowmarkd reads TCP "
            "statistics from netlink (INET_DIAG_INFO), not from ss");
  EXPECT_EQ(translate_error("PLUGIN='np_api'\nBACKEND='prometheus'\nPROMETHEUS_SRV_PORT=-1"),
            "flowd.cfg:3: PROMETHEUS_SRV_PORT = -1: expected a port number 1..65535 (10514 or "
            "'10514')");
}

TEST(FlowdTranslate, UnknownKeysAndRepeats) {
  EXPECT_EQ(translate_error("PLUGIN='np_api'\n# comment\nUDP_FIREFLY_WITH_NETLINK=True"),
            "flowd.cfg:3: unknown flowd key UDP_FIREFLY_WITH_NETLINK; known keys: BACKEND, "
            "FIREFLY_LISTENER_HOST, FIREFLY_LISTENER_PORT, FLOW_MAP_API, IP_DISCOVERY_ENABLED, "
            "NETLINK_ACTIVITY, NETLINK_EXPERIMENT, NETLINK_INTERNAL_NETWORKS, NETSTAT_ACTIVITY, "
            "NETSTAT_EXPERIMENT, NETSTAT_INTERNAL_NETWORKS, NETWORK_INTERFACE, PLUGIN, "
            "PROMETHEUS_SRV_PORT, PROMETHEUS_SS_PATH, UDP_FIREFLY_DST, UDP_FIREFLY_IP4_SRC, "
            "UDP_FIREFLY_IP6_SRC, UDP_FIREFLY_NETLINK");
  auto t = translate("PLUGIN='netstat'\nPLUGIN='np_api'\nBACKEND='udp_firefly'\nPLUGIN='np_api'");
  EXPECT_TRUE(t.doc["source"]["np_api"]);
  EXPECT_EQ(t.warnings, (std::vector<std::string>{"flowd.cfg:4: PLUGIN is set again (also on line "
                                                  "1, 2); the last value wins, as in flowd"}));
}

// ---- the same behaviour as the hand-written TOML -----------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "cannot read " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class FlowdDataFiles : public ::testing::TestWithParam<const char*> {};

TEST_P(FlowdDataFiles, TranslatesToTheHandWrittenToml) {
  const std::string base = std::string(FLOWMARK_TEST_DATA) + "/flowd/" + GetParam();
  const std::string text = read_file(base + ".cfg");
  ASSERT_TRUE(looks_like_flowd_config(text));
  auto cfg = parse_flowd_config(text, std::string(GetParam()) + ".cfg");
  ASSERT_TRUE(cfg) << cfg.error().message();
  auto out = translate_flowd_config(*cfg);
  ASSERT_TRUE(out) << out.error().message();
  const toml::table translated = toml::parse(out->toml);
  const std::string expected_text = read_file(base + ".toml");
  ASSERT_FALSE(looks_like_flowd_config(expected_text));
  const toml::table expected = toml::parse(expected_text);
  EXPECT_TRUE(translated == expected) << "translated:\n"
                                      << out->toml << "\nexpected (" << base << ".toml):\n"
                                      << expected;
}

INSTANTIATE_TEST_SUITE_P(Flowd, FlowdDataFiles,
                         ::testing::Values("np_api", "firefly", "netstat", "netlink", "iperf",
                                           "multi_backend"));

}  // namespace
}  // namespace flowmark::daemon
