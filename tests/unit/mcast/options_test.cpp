#include "flowmark/mcast/options.hpp"

#include <gtest/gtest.h>

#include <map>

#include "flowmark/mcast/defaults.hpp"

namespace flowmark::mcast {
namespace {

// An environment of our own, so tests never depend on the caller's.
struct FakeEnv {
  std::map<std::string, std::string, std::less<>> vars;
  EnvLookup lookup() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      auto it = vars.find(name);
      if (it == vars.end()) return std::nullopt;
      return it->second;
    };
  }
};

RawOptions say(std::string msg) {
  RawOptions r;
  r.message = {std::move(msg)};
  return r;
}

TEST(Options, SeedDefaults) {
  FakeEnv env;
  auto o = resolve_say(say("hi"), env.lookup());
  ASSERT_TRUE(o.has_value()) << o.error().message();
  EXPECT_EQ(o->group.to_string(), "224.0.0.1");
  EXPECT_EQ(o->port, 59559);
  EXPECT_EQ(o->ttl, 1);
  EXPECT_TRUE(o->loop);
  EXPECT_FALSE(o->sequence);
  EXPECT_EQ(o->count, 1u);
  EXPECT_EQ(o->message, "hi");
}

TEST(Options, FlagBeatsEnvironmentBeatsDefault) {
  FakeEnv env{{{"MULTICAST_PORT", "5353"},
               {"MULTICAST_GROUP", "239.1.1.2"},
               {"MULTICAST_TTL", "4"},
               {"MULTICAST_BUFFER_SIZE", "1316"}}};
  RawOptions raw;
  auto from_env = resolve_recv(raw, env.lookup());
  ASSERT_TRUE(from_env.has_value()) << from_env.error().message();
  EXPECT_EQ(from_env->port, 5353);
  EXPECT_EQ(from_env->group.to_string(), "239.1.1.2");
  EXPECT_EQ(from_env->ttl, 4);
  EXPECT_EQ(from_env->buffer_size, 1316u);
  ASSERT_EQ(from_env->groups.size(), 1u);
  EXPECT_EQ(from_env->groups[0].to_string(), "239.1.1.2");

  raw.port = "6000";
  raw.group = "239.9.9.9";
  raw.ttl = "8";
  auto from_flags = resolve_recv(raw, env.lookup());
  ASSERT_TRUE(from_flags.has_value());
  EXPECT_EQ(from_flags->port, 6000);
  EXPECT_EQ(from_flags->group.to_string(), "239.9.9.9");
  EXPECT_EQ(from_flags->ttl, 8);
}

TEST(Options, EmptyEnvironmentValueMeansUnset) {
  FakeEnv env{{{"MULTICAST_PORT", ""}}};
  auto o = resolve_say(say("x"), env.lookup());
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->port, kDefaultPort);
}

struct BadCase {
  const char* what;
  RawOptions raw;
  std::map<std::string, std::string, std::less<>> env;
  int exit_code;
  const char* message_part;
};

TEST(Options, BadValuesGiveClearErrorsAndExitCodes) {
  auto with = [](auto f) {
    RawOptions r = say("x");
    f(r);
    return r;
  };
  const BadCase cases[] = {
      {"unicast group",
       with([](RawOptions& r) { r.group = "10.1.2.3"; }),
       {},
       kExitUsage,
       "not a multicast group"},
      {"garbage group",
       with([](RawOptions& r) { r.group = "239.1"; }),
       {},
       kExitUsage,
       "--group 239.1"},
      {"port too high",
       with([](RawOptions& r) { r.port = "70000"; }),
       {},
       kExitUsage,
       "out of range"},
      {"port in env", say("x"), {{"MULTICAST_PORT", "0"}}, kExitUsage, "MULTICAST_PORT=0"},
      {"ttl", with([](RawOptions& r) { r.ttl = "256"; }), {}, kExitUsage, "--ttl 256"},
      {"ttl env", say("x"), {{"MULTICAST_TTL", "-1"}}, kExitUsage, "MULTICAST_TTL=-1"},
      {"interface",
       with([](RawOptions& r) { r.iface = "nosuch0"; }),
       {},
       kExitNoInterface,
       "no interface named 'nosuch0'"},
      {"link-local without interface",
       with([](RawOptions& r) { r.group = "ff02::77"; }),
       {},
       kExitUsage,
       "name the interface"},
      {"interval",
       with([](RawOptions& r) { r.interval = "soon"; }),
       {},
       kExitUsage,
       "--interval soon"},
      {"count zero", with([](RawOptions& r) { r.count = "0"; }), {}, kExitUsage, "--count 0"},
      {"message and pipe", with([](RawOptions& r) { r.pipe = true; }), {}, kExitUsage, "not both"},
      {"binary without pipe",
       with([](RawOptions& r) { r.binary = true; }),
       {},
       kExitUsage,
       "--pipe"},
      {"oversized message", say(std::string(70000, 'x')), {}, kExitUsage, "at most 65507"},
      {"no message", RawOptions{}, {}, kExitUsage, "needs a message"},
      {"bad bind", with([](RawOptions& r) { r.bind = "local"; }), {}, kExitUsage, "--bind"},
      {"buffer size",
       with([](RawOptions& r) { r.buffer_size = "0"; }),
       {},
       kExitUsage,
       "--buffer-size 0"},
  };
  for (const auto& c : cases) {
    FakeEnv env{c.env};
    auto o = resolve_say(c.raw, env.lookup());
    ASSERT_FALSE(o.has_value()) << c.what;
    EXPECT_EQ(exit_code_for(o.error()), c.exit_code) << c.what << ": " << o.error().message();
    EXPECT_NE(o.error().message().find(c.message_part), std::string::npos)
        << c.what << ": " << o.error().message();
  }
}

TEST(Options, ReceiverGroupsSourcesAndCount) {
  FakeEnv env;
  RawOptions raw;
  raw.groups = {"239.1.1.1", "239.1.1.2"};
  raw.sources = {"10.0.0.1"};
  raw.count = "5";
  auto o = resolve_recv(raw, env.lookup());
  ASSERT_TRUE(o.has_value()) << o.error().message();
  EXPECT_EQ(o->groups.size(), 2u);
  EXPECT_EQ(o->sources.size(), 1u);
  EXPECT_TRUE(o->daemon);  // --count implies a loop
  EXPECT_EQ(o->count.value_or(0), 5u);
  EXPECT_EQ(o->rcvbuf, kDefaultReceiveBuffer);  // 32 MiB, as for firefly listen

  raw.sources = {"239.0.0.1"};
  auto bad_source = resolve_recv(raw, env.lookup());
  ASSERT_FALSE(bad_source.has_value());
  EXPECT_EQ(exit_code_for(bad_source.error()), kExitUsage);

  RawOptions unicast;
  unicast.groups = {"239.1.1.1", "192.0.2.1"};
  auto bad_group = resolve_recv(unicast, env.lookup());
  ASSERT_FALSE(bad_group.has_value());
  EXPECT_NE(bad_group.error().message().find("--groups 192.0.2.1"), std::string::npos);
}

TEST(Options, HearStopWord) {
  FakeEnv env;
  RawOptions raw;
  auto none = resolve_recv(raw, env.lookup());
  ASSERT_TRUE(none.has_value()) << none.error().message();
  EXPECT_EQ(none->stop_word, "");  // flowmark mcast hear: no stop word unless asked
  raw.allow_stop = true;
  EXPECT_EQ(resolve_recv(raw, env.lookup())->stop_word, "STOP");
  raw.stop_word = "QUIT";  // --stop-word beats --allow-stop
  EXPECT_EQ(resolve_recv(raw, env.lookup())->stop_word, "QUIT");
  raw.stop_word = "";
  auto empty = resolve_recv(raw, env.lookup());
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(exit_code_for(empty.error()), kExitUsage);
  EXPECT_NE(empty.error().message().find("--stop-word"), std::string::npos);
}

TEST(Options, SequencingAndPipe) {
  FakeEnv env;
  RawOptions raw = say("x");
  raw.count = "10";
  raw.interval = "0.001";
  auto o = resolve_say(raw, env.lookup());
  ASSERT_TRUE(o.has_value());
  EXPECT_TRUE(o->sequence);
  EXPECT_EQ(o->interval, std::chrono::microseconds(1000));

  RawOptions dash = say("-");  // --message - reads standard input, as in the seed
  auto p = resolve_say(dash, env.lookup());
  ASSERT_TRUE(p.has_value());
  EXPECT_TRUE(p->pipe);

  RawOptions words;
  words.message = {"Hello", "World!"};
  EXPECT_EQ(resolve_say(words, env.lookup())->message, "Hello World!");

  RawOptions tiny = say("x");
  tiny.count = "2";
  tiny.size = "10";
  EXPECT_FALSE(resolve_say(tiny, env.lookup()).has_value());
}

TEST(ExitCodes, Mapping) {
  EXPECT_EQ(exit_code_for(Error(make_error_code(Errc::kInvalidArgument), "")), kExitUsage);
  EXPECT_EQ(exit_code_for(Error(make_error_code(Errc::kNotFound), "")), kExitNoInterface);
  EXPECT_EQ(exit_code_for(Error(make_error_code(Errc::kRefused), "")), kExitUnavailable);
  EXPECT_EQ(exit_code_for(Error(std::error_code(EPERM, std::system_category()), "")),
            kExitNoPermission);
  EXPECT_EQ(exit_code_for(Error(std::error_code(EADDRINUSE, std::system_category()), "")),
            kExitUnavailable);
  EXPECT_EQ(exit_code_for(Error(std::error_code(EIO, std::system_category()), "")), kExitSoftware);
  EXPECT_NE(exit_code_help().find("130"), std::string_view::npos);
}

}  // namespace
}  // namespace flowmark::mcast
