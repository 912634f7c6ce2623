// scitags::run_firefly, the one runner `flowmark firefly` calls: the arguments as given are
// checked and resolved, those that do not resolve return their exit code, and a resolved
// command runs.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "flowmark/scitags/firefly_commands.hpp"
#include "../testing/temp_files.hpp"

namespace flowmark {
namespace {

using Files = testing::TempFiles;

TEST(RunFirefly, DecodeRunsOnTheResolvedArguments) {
  Files f;
  scitags::FireflyArgs args;
  args.decode.files = {std::string(FLOWMARK_TEST_DATA) + "/fireflies/bare_start.json"};
  EXPECT_EQ(scitags::run_firefly(scitags::FireflyVerb::kDecode, args, f.in, f.out), kExitOk);
  EXPECT_NE(f.output().find("\"flow-lifecycle\""), std::string::npos) << f.output();
  args.decode.files = {std::string(FLOWMARK_TEST_DATA) + "/fireflies/no-such-file"};
  EXPECT_EQ(scitags::run_firefly(scitags::FireflyVerb::kDecode, args, f.in, f.out), kExitNoInput);
}

TEST(RunFirefly, ArgumentsThatDoNotResolveReturnTheirCode) {
  Files f;
  scitags::FireflyArgs args;
  args.send.flow = {"start", "tcp", "192.0.2.1", "2345", "192.0.2.2", "5777", "2", "1"};
  args.send.ttl = "256";
  EXPECT_EQ(scitags::run_firefly(scitags::FireflyVerb::kSend, args, f.in, f.out), kExitUsage);
  args.listen.iface = "no-such-if0";
  args.listen.group = "239.1.1.1";
  EXPECT_EQ(scitags::run_firefly(scitags::FireflyVerb::kListen, args, f.in, f.out),
            kExitNoInterface);
}

}  // namespace
}  // namespace flowmark
