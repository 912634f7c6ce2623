// The named-pipe source's line reassembly: lines split across reads, over-long lines and
// their tails, a writer gone mid-line, blank lines passed on.
#include "daemon/sources/named_pipe/line_assembler.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flowmark::daemon {
namespace {

// Feeds the chunks in order; "<too long>" marks each over-long line in the output.
struct Feeder {
  explicit Feeder(std::size_t max_line) : lines(max_line) {}
  LineAssembler lines;
  std::vector<std::string> out;
  void feed(std::string_view data) {
    lines.feed(
        data, [&](std::string_view l) { out.emplace_back(l); },
        [&] { out.emplace_back("<too long>"); });
  }
};

using Lines = std::vector<std::string>;

TEST(LineAssembler, WholeLinesInOneRead) {
  Feeder r(64);
  r.feed("start a\nend b\n");
  EXPECT_EQ(r.out, (Lines{"start a", "end b"}));
  EXPECT_EQ(r.lines.pending(), 0u);
  EXPECT_FALSE(r.lines.finish());
}

TEST(LineAssembler, LineSplitAcrossReadsAtEveryByte) {
  const std::string text = "start tcp 10.0.0.1 1 10.0.0.2 2 2 1\nend x\n";
  for (std::size_t cut = 0; cut <= text.size(); ++cut) {
    Feeder r(64);
    r.feed(std::string_view(text).substr(0, cut));
    r.feed(std::string_view(text).substr(cut));
    EXPECT_EQ(r.out, (Lines{"start tcp 10.0.0.1 1 10.0.0.2 2 2 1", "end x"})) << "cut " << cut;
  }
}

TEST(LineAssembler, OneByteReads) {
  Feeder r(16);
  for (char c : std::string("ab\n\ncd\n")) r.feed(std::string_view(&c, 1));
  EXPECT_EQ(r.out, (Lines{"ab", "", "cd"}));  // the blank line is the caller's to skip
}

TEST(LineAssembler, LineOfExactlyMaxLineIsKept) {
  Feeder r(4);
  r.feed("abcd\nab");
  r.feed("cd\n");
  EXPECT_EQ(r.out, (Lines{"abcd", "abcd"}));
}

TEST(LineAssembler, OverLongLineInOneReadIsRejectedAndTheNextKept) {
  Feeder r(4);
  r.feed("abcde\nok\n");
  EXPECT_EQ(r.out, (Lines{"<too long>", "ok"}));
}

TEST(LineAssembler, OverLongPartialDropsItsTailUpToTheNewline) {
  Feeder r(4);
  r.feed("abc");
  r.feed("defgh");  // over the limit with no newline yet: rejected now, once
  r.feed("ijk");    // still the same line: dropped silently
  r.feed("lm\nok\n");
  EXPECT_EQ(r.out, (Lines{"<too long>", "ok"}));
  EXPECT_FALSE(r.lines.finish());
}

TEST(LineAssembler, PartialThatGrowsTooLongAtItsNewline) {
  Feeder r(4);
  r.feed("abc");
  r.feed("de\nxy\n");
  EXPECT_EQ(r.out, (Lines{"<too long>", "xy"}));
}

TEST(LineAssembler, WriterGoneMidLineIsHandedBackOnce) {
  Feeder r(64);
  r.feed("start tcp 10.0.0.1 1 10.");
  EXPECT_EQ(r.lines.pending(), 24u);
  auto rest = r.lines.finish();
  ASSERT_TRUE(rest);
  EXPECT_EQ(*rest, "start tcp 10.0.0.1 1 10.");
  EXPECT_FALSE(r.lines.finish());
  // The next writer's first line is not glued to it.
  r.feed("end b\n");
  EXPECT_EQ(r.out, (Lines{"end b"}));
}

TEST(LineAssembler, WriterGoneInsideAnOverLongLineIsNotIncompleteToo) {
  Feeder r(4);
  r.feed("abcdefgh");
  EXPECT_FALSE(r.lines.finish());  // already counted as too long
  r.feed("ok\n");                  // a new stream: not the old line's tail
  EXPECT_EQ(r.out, (Lines{"<too long>", "ok"}));
}

TEST(LineAssembler, CarriageReturnsStayForTheParser) {
  Feeder r(64);
  r.feed("a b\r\n");
  EXPECT_EQ(r.out, (Lines{"a b\r"}));
}

}  // namespace
}  // namespace flowmark::daemon
