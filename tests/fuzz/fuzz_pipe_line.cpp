// Bytes written to the named pipe: split into lines (LineAssembler, as the named-pipe
// source reads them, in chunks chosen by the input) and each line parsed (parse_pipe_line).
//
// Input: byte 0 sets max_line (1..256), byte 1 the chunk sizes, the rest is the stream.
// Invariants:
//   - the lines do not depend on how the stream is cut into reads;
//   - no line holds '\n' or is longer than max_line;
//   - with no over-long line, the lines joined by '\n' plus the partial rest are the stream;
//   - a parsed line gives an event with both ports non-zero, one address family, scitag
//     ids in range; a rejected one names a known reason, a token 0..8 and says why.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/sources/named_pipe/line_assembler.hpp"
#include "flowmark/scitags/pipe_line.hpp"

namespace {

using flowmark::daemon::LineAssembler;
using namespace flowmark::scitags;

#define FUZZ_REQUIRE(cond)                                                                       \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "fuzz_pipe_line: invariant broken: %s (line %d)\n", #cond, __LINE__); \
      __builtin_trap();                                                                          \
    }                                                                                            \
  } while (0)

constexpr std::string_view kTooLong = "\n<too long>";  // cannot be a line: it holds '\n'

struct Split {
  std::vector<std::string> lines;
  std::string rest;
};

Split split(std::string_view stream, std::size_t max_line, std::uint8_t chunks) {
  LineAssembler a(max_line);
  Split s;
  std::size_t step = 1 + chunks % 17, i = 0;
  while (i < stream.size()) {
    const std::size_t n = std::min(step, stream.size() - i);
    a.feed(
        stream.substr(i, n), [&](std::string_view l) { s.lines.emplace_back(l); },
        [&] { s.lines.emplace_back(kTooLong); });
    i += n;
    step = 1 + (step * 7 + chunks) % 61;
  }
  if (auto rest = a.finish()) s.rest = *rest;
  FUZZ_REQUIRE(!a.finish());
  return s;
}

void check_line(std::string_view line) {
  auto e = parse_pipe_line(line, Registry::builtin());
  if (!e) {
    FUZZ_REQUIRE(static_cast<std::size_t>(e.error().reason) < kPipeRejectKinds);
    FUZZ_REQUIRE(e.error().token <= kPipeLineTokens);
    FUZZ_REQUIRE(!e.error().message.empty());
    FUZZ_REQUIRE(!is_blank_line(line) || e.error().reason == PipeReject::kTokenCount);
    return;
  }
  FUZZ_REQUIRE(!is_blank_line(line));
  FUZZ_REQUIRE(e->src.port != 0 && e->dst.port != 0);
  FUZZ_REQUIRE(e->src.address.family() == e->dst.address.family());
  FUZZ_REQUIRE(e->experiment >= 1 && e->experiment <= 1023);
  FUZZ_REQUIRE(e->activity >= 1 && e->activity <= 63);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max_line = 1 + data[0];
  const std::string_view stream(reinterpret_cast<const char*>(data + 2), size - 2);
  const Split whole = split(stream, max_line, 0xFF);  // 1 + 255 % 17 = 1: byte by byte first
  const Split cut = split(stream, max_line, data[1]);
  FUZZ_REQUIRE(whole.lines == cut.lines);
  FUZZ_REQUIRE(whole.rest == cut.rest);

  bool too_long = false;
  std::string joined;
  for (const auto& l : cut.lines) {
    if (l == kTooLong) {
      too_long = true;
      continue;
    }
    FUZZ_REQUIRE(l.find('\n') == std::string::npos);
    FUZZ_REQUIRE(l.size() <= max_line);
    joined += l;
    joined += '\n';
    check_line(l);
  }
  FUZZ_REQUIRE(cut.rest.size() <= max_line);
  if (!too_long) FUZZ_REQUIRE(joined + cut.rest == stream);
  // One read of everything, as a fast writer's burst arrives.
  LineAssembler one(max_line);
  std::vector<std::string> lines;
  one.feed(
      stream, [&](std::string_view l) { lines.emplace_back(l); },
      [&] { lines.emplace_back(kTooLong); });
  FUZZ_REQUIRE(lines == cut.lines);
  return 0;
}
