// Capture files: the pcap / pcapng parser behind `flowmark observe -r`. The first input byte
// picks the batch size (1..64), the rest is the file, which ends exactly where libFuzzer's
// buffer does, so ASan reports any read past it. Every frame handed out must lie inside the
// file, and the parser must stop (end or error) after a bounded number of calls.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "flowmark/capture/file_parser.hpp"

using namespace flowmark;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t per = 1 + data[0] % 64;
  const std::span<const std::byte> file(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  auto parser = capture::CaptureParser::open(file, "fuzz");
  if (!parser) return 0;
  std::array<observe::FrameRef, 64> frames;
  std::array<std::uint32_t, 64> wire;
  std::uint64_t sum = 0;
  // Each call that returns frames consumes at least 12 bytes (a block or record header).
  for (std::size_t calls = 0; calls <= file.size(); ++calls) {
    observe::LinkType link;
    auto n = parser->next_batch(std::span(frames).first(per), link, wire);
    if (!n || *n == 0) return 0;
    if (*n > per) std::abort();
    for (std::size_t i = 0; i < *n; ++i) {
      const auto& f = frames[i].frame;
      if (f.data() < file.data() || f.data() + f.size() > file.data() + file.size()) std::abort();
      for (const std::byte b : f) sum += static_cast<std::uint8_t>(b);
    }
    if (parser->offset() > file.size()) std::abort();
  }
  std::abort();  // no progress: the parser loops
  (void)sum;
}
