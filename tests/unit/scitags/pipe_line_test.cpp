#include "flowmark/scitags/pipe_line.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace flowmark::scitags {
namespace {

const Registry& reg() { return Registry::builtin(); }

FlowEvent expected_v4(std::uint32_t exp = 1, std::uint32_t act = 2) {
  FlowEvent e;
  e.state = FlowState::kStart;
  e.protocol = Protocol::kTcp;
  e.src = *Endpoint::parse("192.168.0.1:2345");
  e.dst = *Endpoint::parse("192.168.0.2:5777");
  e.experiment = exp;
  e.activity = act;
  return e;
}

TEST(PipeLine, SpecExampleWithSingleSpaces) {
  auto e = parse_pipe_line("start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2", reg());
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(*e, expected_v4());
  EXPECT_EQ(e->start_time, 0);  // the caller stamps times
}

TEST(PipeLine, AnyWhitespaceAndLineEndings) {
  for (const char* line : {"start\ttcp\t192.168.0.1\t2345\t192.168.0.2\t5777\t1\t2",
                           "start   tcp  192.168.0.1 \t 2345    192.168.0.2 5777 1     2",
                           "  start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2  ",
                           "start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2\r\n",
                           "start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2\n"}) {
    auto e = parse_pipe_line(line, reg());
    ASSERT_TRUE(e.has_value()) << line << ": " << e.error().message;
    EXPECT_EQ(*e, expected_v4()) << line;
  }
}

// The tokenizer (eight bytes at a time where it can) splits exactly where a byte-by-byte split
// on isspace's characters does: lines of tokens of every length up to 20 (control characters,
// bytes of 0x80 and more, '!' and ' '-neighbours inside them), separated by every whitespace.
TEST(PipeLine, TokensSplitExactlyAtWhitespace) {
  auto reference = [](std::string_view line) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    auto space = [](char c) {
      return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
    };
    while (true) {
      while (i < line.size() && space(line[i])) ++i;
      if (i == line.size()) break;
      const std::size_t start = i;
      while (i < line.size() && !space(line[i])) ++i;
      out.push_back(line.substr(start, i - start));
    }
    return out;
  };
  const std::string fillers[] = {"a", "\x01", "\x1f", "!", "\x80", "\xff", "\x7f", "0", "\x20\x21"};
  const std::string seps[] = {" ", "\t", "\n", "\v", "\f", "\r", "  \t"};
  const std::vector<std::string> valid = {"start",       "tcp",  "192.168.0.1", "2345",
                                          "192.168.0.2", "5777", "1",           "2"};
  std::uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1103515245 + 12345, (seed >> 16) & 0x7fff; };
  for (int round = 0; round < 3000; ++round) {
    std::string line;
    const bool use_valid = round % 3 == 0;
    const std::size_t count = use_valid ? 8 : 6 + next() % 4;
    if (next() % 2) line += seps[next() % std::size(seps)];
    for (std::size_t t = 0; t < count; ++t) {
      if (t > 0) line += seps[next() % std::size(seps)];
      if (use_valid) {
        line += valid[t];
      } else {
        const std::size_t len = 1 + next() % 20;
        for (std::size_t k = 0; k < len; ++k) line += fillers[next() % std::size(fillers)];
      }
    }
    if (next() % 2) line += seps[next() % std::size(seps)];
    const auto want = reference(line);
    auto got = parse_pipe_line(line, reg());
    if (want.size() != kPipeLineTokens) {
      ASSERT_FALSE(got.has_value()) << round;
      EXPECT_EQ(got.error().reason, PipeReject::kTokenCount) << round;
      continue;
    }
    auto by_reference = parse_pipe_tokens(want, reg());
    ASSERT_EQ(got.has_value(), by_reference.has_value()) << round;
    if (got) {
      EXPECT_EQ(*got, *by_reference) << round;
    } else {
      EXPECT_EQ(got.error().reason, by_reference.error().reason) << round;
      EXPECT_EQ(got.error().message, by_reference.error().message) << round;
    }
  }
}

TEST(PipeLine, StatesProtocolsAndIpv6) {
  auto e = parse_pipe_line("end udp 2001:db8::1 40000 2001:db8:1::2 443 3 1", reg());
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(e->state, FlowState::kEnd);
  EXPECT_EQ(e->protocol, Protocol::kUdp);
  EXPECT_EQ(e->src.to_string(), "[2001:db8::1]:40000");
  EXPECT_EQ(e->dst.to_string(), "[2001:db8:1::2]:443");
  auto o = parse_pipe_line("ongoing tcp 10.0.0.1 1 10.0.0.2 65535 2 1", reg());
  ASSERT_TRUE(o.has_value()) << o.error().message;
  EXPECT_EQ(o->state, FlowState::kOngoing);
  EXPECT_EQ(o->dst.port, 65535);
}

// flowd-go reads the state and the protocol in any case; so do we. Names stay case-sensitive.
TEST(PipeLine, StateAndProtocolInAnyCase) {
  for (const char* line : {"START TCP 192.168.0.1 2345 192.168.0.2 5777 1 2",
                           "Start Tcp 192.168.0.1 2345 192.168.0.2 5777 1 2",
                           "sTaRt tCp 192.168.0.1 2345 192.168.0.2 5777 1 2"}) {
    auto e = parse_pipe_line(line, reg());
    ASSERT_TRUE(e.has_value()) << line << ": " << e.error().message;
    EXPECT_EQ(*e, expected_v4()) << line;
  }
  auto end = parse_pipe_line("END UDP 2001:db8::1 40000 2001:db8:1::2 443 3 1", reg());
  ASSERT_TRUE(end.has_value()) << end.error().message;
  EXPECT_EQ(end->state, FlowState::kEnd);
  EXPECT_EQ(end->protocol, Protocol::kUdp);
  auto ongoing = parse_pipe_line("OnGoing tcp 10.0.0.1 1 10.0.0.2 65535 2 1", reg());
  ASSERT_TRUE(ongoing.has_value()) << ongoing.error().message;
  EXPECT_EQ(ongoing->state, FlowState::kOngoing);
}

TEST(PipeLine, RegistryNames) {
  auto e = parse_pipe_line("start tcp 192.168.0.1 2345 192.168.0.2 5777 atlas perfSONAR", reg());
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(e->experiment, 2u);
  EXPECT_EQ(e->activity, 2u);
  // A name and an id mixed; an id the registry does not list is still a valid scitag id.
  auto m = parse_pipe_line("start tcp 192.168.0.1 2345 192.168.0.2 5777 cms 1", reg());
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->experiment, 3u);
  auto n = parse_pipe_line("start tcp 192.168.0.1 2345 192.168.0.2 5777 1000 63", reg());
  ASSERT_TRUE(n.has_value()) << n.error().message;
  EXPECT_EQ(n->experiment, 1000u);
  EXPECT_EQ(n->activity, 63u);
}

TEST(PipeLine, TokensFromTheCommandLine) {
  const std::vector<std::string_view> t = {"start",       "tcp",  "192.168.0.1", "2345",
                                           "192.168.0.2", "5777", "1",           "2"};
  auto e = parse_pipe_tokens(t, reg());
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(*e, expected_v4());
  auto few = parse_pipe_tokens(std::span(t).first(7), reg());
  ASSERT_FALSE(few.has_value());
  EXPECT_EQ(few.error().reason, PipeReject::kTokenCount);
}

struct Bad {
  const char* line;
  PipeReject reason;
  std::size_t token;
  const char* mentions;  // text the message must contain
};

class PipeLineErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(PipeLineErrors, NameTheTokenAndTheReason) {
  const Bad& b = GetParam();
  auto e = parse_pipe_line(b.line, reg());
  ASSERT_FALSE(e.has_value()) << b.line;
  EXPECT_EQ(e.error().reason, b.reason) << b.line << ": " << e.error().message;
  EXPECT_EQ(e.error().token, b.token) << e.error().message;
  EXPECT_NE(e.error().message.find(b.mentions), std::string::npos)
      << "'" << e.error().message << "' does not mention '" << b.mentions << "'";
  if (b.token > 0) {
    const std::string prefix =
        "token " + std::to_string(b.token) + " (" + std::string(pipe_token_name(b.token)) + "): ";
    EXPECT_EQ(e.error().message.rfind(prefix, 0), 0u) << e.error().message;
  }
}

INSTANTIATE_TEST_SUITE_P(
    All, PipeLineErrors,
    ::testing::Values(
        Bad{"", PipeReject::kTokenCount, 0, "got 0"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 1", PipeReject::kTokenCount, 0,
            "expected 8 tokens"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 1 2 3", PipeReject::kTokenCount, 0,
            "got more"},
        Bad{"begin tcp 192.168.0.1 2345 192.168.0.2 5777 1 2", PipeReject::kBadState, 1,
            "'begin' is not start, ongoing or end"},
        Bad{"Begin tcp 192.168.0.1 2345 192.168.0.2 5777 1 2", PipeReject::kBadState, 1,
            "'Begin' is not"},
        Bad{"START TPC 192.168.0.1 2345 192.168.0.2 5777 1 2", PipeReject::kBadProtocol, 2,
            "'TPC' is not tcp or udp"},
        Bad{"start tpc 192.168.0.1 2345 192.168.0.2 5777 1 2", PipeReject::kBadProtocol, 2,
            "'tpc' is not tcp or udp"},
        Bad{"start tcp 192.168.0.300 2345 192.168.0.2 5777 1 2", PipeReject::kBadAddress, 3,
            "192.168.0.300"},
        Bad{"start tcp 192.168.0.1 2345 host.example 5777 1 2", PipeReject::kBadAddress, 5,
            "host.example"},
        Bad{"start tcp fe80::1%lo 2345 fe80::2 5777 1 2", PipeReject::kBadAddress, 3, "zone"},
        Bad{"start tcp 192.168.0.1 0 192.168.0.2 5777 1 2", PipeReject::kBadPort, 4,
            "out of range"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 70000 1 2", PipeReject::kBadPort, 6, "70000"},
        Bad{"start tcp 192.168.0.1 23x 192.168.0.2 5777 1 2", PipeReject::kBadPort, 4,
            "not a number"},
        Bad{"start tcp 192.168.0.1 2345 2001:db8::2 5777 1 2", PipeReject::kFamilyMismatch, 5,
            "IPv6"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 nosuchexp 2",
            PipeReject::kUnknownExperiment, 7, "unknown experiment 'nosuchexp'"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 atlas nosuchact",
            PipeReject::kUnknownActivity, 8, "nosuchact"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 0 2", PipeReject::kBadId, 7,
            "out of range 1..1023"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 1024 2", PipeReject::kBadId, 7, "1024"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 2 64", PipeReject::kBadId, 8, "1..63"},
        Bad{"start tcp 192.168.0.1 2345 192.168.0.2 5777 -1 2", PipeReject::kBadId, 7, "-1"}));

TEST(PipeLine, LongAndControlTokensAreShownSafely) {
  std::string line = "start tcp 192.168.0.1 2345 192.168.0.2 5777 ";
  line += std::string(500, 'x') + " 2";
  auto e = parse_pipe_line(line, reg());
  ASSERT_FALSE(e.has_value());
  EXPECT_LT(e.error().message.size(), 400u) << e.error().message;
  auto c = parse_pipe_line(std::string("st\x01rt tcp 1.2.3.4 1 1.2.3.5 2 1 2"), reg());
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().message.find('\x01'), std::string::npos);
}

TEST(PipeLine, BlankLines) {
  EXPECT_TRUE(is_blank_line(""));
  EXPECT_TRUE(is_blank_line(" \t\r\n"));
  EXPECT_FALSE(is_blank_line(" x "));
  // Exactly isspace's characters in the C locale separate tokens and make a line blank.
  for (int c = -128; c < 128; ++c) {
    const char ch = static_cast<char>(c);
    const bool space =
        ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' || ch == '\r';
    EXPECT_EQ(is_blank_line(std::string_view(&ch, 1)), space) << c;
  }
}

TEST(PipeLine, ReasonNames) {
  EXPECT_EQ(to_string(PipeReject::kTokenCount), "token_count");
  EXPECT_EQ(to_string(PipeReject::kUnknownActivity), "unknown_activity");
  EXPECT_EQ(pipe_token_name(1), "state");
  EXPECT_EQ(pipe_token_name(8), "activity");
}

}  // namespace
}  // namespace flowmark::scitags
