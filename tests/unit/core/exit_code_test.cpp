// The one exit-code table: one meaning per code, the multicast tool's numbers, the mapping
// of set-up errors, and the --help rendering.
#include "flowmark/core/exit_code.hpp"

#include <cerrno>
#include <csignal>
#include <set>
#include <string>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "flowmark/core/option_value.hpp"

namespace flowmark {
namespace {

TEST(ExitCode, EachCodeHasOneMeaningAndTheMulticastNumbersStay) {
  std::set<int> codes;
  std::set<std::string_view> meanings;
  for (ExitCode c : all_exit_codes()) {
    EXPECT_TRUE(codes.insert(c).second) << c;
    EXPECT_TRUE(meanings.insert(exit_code_meaning(c)).second) << exit_code_meaning(c);
    EXPECT_NE(exit_code_meaning(c), "unknown exit code") << c;
  }
  // The numbers the multicast tool documents (flowmark-mcast(1)).
  EXPECT_EQ(kExitOk, 0);
  EXPECT_EQ(kExitNothing, 1);
  EXPECT_EQ(kExitUsage, 2);
  EXPECT_EQ(kExitNoInterface, 68);
  EXPECT_EQ(kExitUnavailable, 69);
  EXPECT_EQ(kExitSoftware, 70);
  EXPECT_EQ(kExitNoPermission, 77);
  EXPECT_EQ(kExitInterrupted, 130);
  EXPECT_EQ(kExitTerminated, 143);
}

TEST(ExitCode, SetUpErrorsMapToTheirCode) {
  auto ours = [](Errc e) { return exit_code_for(Error(make_error_code(e), "")); };
  auto sys = [](int e) {
    return exit_code_for(Error(std::error_code(e, std::system_category()), ""));
  };
  EXPECT_EQ(ours(Errc::kInvalidArgument), kExitUsage);
  EXPECT_EQ(ours(Errc::kNotFound), kExitNoInterface);
  EXPECT_EQ(ours(Errc::kRefused), kExitUnavailable);
  EXPECT_EQ(sys(EPERM), kExitNoPermission);
  EXPECT_EQ(sys(EACCES), kExitNoPermission);
  EXPECT_EQ(sys(EADDRINUSE), kExitUnavailable);
  EXPECT_EQ(sys(EIO), kExitSoftware);
  EXPECT_EQ(exit_code_for_signal(SIGINT), kExitInterrupted);
  EXPECT_EQ(exit_code_for_signal(SIGTERM), kExitTerminated);
}

TEST(ExitCode, HelpListsTheCodesWithMeaningAndWhen) {
  const std::string help =
      exit_code_help({{kExitOk}, {kExitNothing, "nothing received"}});
  EXPECT_EQ(help.rfind("Exit codes:\n  0    success\n  1    ", 0), 0u) << help;
  EXPECT_NE(help.find("(a warning says why): nothing received\n"), std::string::npos) << help;
  EXPECT_EQ(help.find("68"), std::string::npos) << help;
  for (std::size_t start = 0, nl; (nl = help.find('\n', start)) != std::string::npos;
       start = nl + 1)
    EXPECT_LE(nl - start, 92u) << help.substr(start, nl - start);
  const std::string table = exit_code_table();
  for (ExitCode c : all_exit_codes())
    EXPECT_NE(table.find(fmt::format("  {:<4} {}", static_cast<int>(c), exit_code_meaning(c))),
              std::string::npos)
        << c;
}

TEST(OptionValue, SharedOptionsAreCheckedOneWay) {
  EXPECT_EQ(parse_ttl(OptionValue::flag("--ttl", "255")).value_or(-1), 255);
  auto ttl = parse_ttl(OptionValue::flag("--ttl", "256"));
  ASSERT_FALSE(ttl);
  EXPECT_EQ(ttl.error().message(), "--ttl 256: out of range (0..255)");
  EXPECT_EQ(exit_code_for(ttl.error()), kExitUsage);
  EXPECT_EQ(parse_rcvbuf(OptionValue::flag("--rcvbuf", "0")).value_or(-1), 0);
  EXPECT_FALSE(parse_rcvbuf(OptionValue::flag("--rcvbuf", "2000000000")));
  auto t = parse_seconds(OptionValue{"0", "MULTICAST_X=0"});
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message().find("MULTICAST_X=0"), std::string::npos);
  EXPECT_EQ(parse_seconds(OptionValue::flag("--timeout", "0.25")).value_or(std::chrono::seconds(9)),
            std::chrono::milliseconds(250));
  EXPECT_FALSE(parse_group(OptionValue::flag("--group", "192.0.2.1")));
  EXPECT_TRUE(parse_group(OptionValue::flag("--group", "ff02::1")));
  EXPECT_FALSE(parse_source(OptionValue::flag("--source", "239.1.1.1")));
  EXPECT_TRUE(parse_source(OptionValue::flag("--source", "192.0.2.1")));
  auto ifc = parse_iface(OptionValue::flag("--iface", "nosuch0"));
  ASSERT_FALSE(ifc);
  EXPECT_EQ(exit_code_for(ifc.error()), kExitNoInterface);
}

}  // namespace
}  // namespace flowmark
