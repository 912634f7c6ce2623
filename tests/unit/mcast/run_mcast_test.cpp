// mcast::run_mcast, the one runner `flowmark mcast` calls: the options as given are resolved
// (a flag, then the MULTICAST_* environment, then the default) and a value that does not
// resolve returns its exit code. (Resolved runs: tests/integration/test_mcast.py.)
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>

#include "flowmark/mcast/commands.hpp"
#include "../testing/temp_files.hpp"

namespace flowmark {
namespace {

mcast::EnvLookup env_of(std::map<std::string, std::string, std::less<>> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

using Files = testing::TempFiles;

TEST(RunMcast, NoopReturnsZero) {
  Files f;
  EXPECT_EQ(mcast::run_mcast(mcast::Verb::kNoop, {}, env_of({}), f.in, f.out), kExitOk);
}

TEST(RunMcast, AValueThatDoesNotResolveReturnsItsCode) {
  Files f;
  mcast::RawOptions raw;
  raw.message = {"hi"};
  // From the environment: a port out of range is a usage error, for every verb.
  const auto bad_port = env_of({{"MULTICAST_PORT", "99999"}});
  for (auto verb : {mcast::Verb::kSay, mcast::Verb::kRecv, mcast::Verb::kHear})
    EXPECT_EQ(mcast::run_mcast(verb, raw, bad_port, f.in, f.out), kExitUsage);
  // A flag beats the environment: an interface that does not exist is 68.
  raw.iface = "no-such-if0";
  EXPECT_EQ(
      mcast::run_mcast(mcast::Verb::kSay, raw, env_of({{"MULTICAST_IFACE", "lo"}}), f.in, f.out),
      kExitNoInterface);
  EXPECT_EQ(f.output(), "");
}

}  // namespace
}  // namespace flowmark
