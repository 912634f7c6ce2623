// Datagrams from the network: the stream header, statistics, and what RECV/HEAR print.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "flowmark/core/json.hpp"
#include "flowmark/mcast/commands.hpp"
#include "flowmark/mcast/stream.hpp"

using namespace flowmark;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto bytes = std::as_bytes(std::span(data, size));
  static mcast::StreamStats stats;  // lives across inputs, like a long-running receiver
  // The input as a series of datagrams: each at most 64 bytes.
  for (std::size_t off = 0; off < size; off += 64) {
    auto one = bytes.subspan(off, std::min<std::size_t>(64, size - off));
    if (auto h = mcast::decode_stream_header(one))
      stats.add(h->sequence, static_cast<std::int64_t>(h->sent_ns));
  }
  if (stats.unique() > stats.expected() && stats.received() > 0) __builtin_trap();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string out;
  if (is_valid_utf8(text)) append_json_string(out, text);
  append_base64(out, text);
  auto reply = mcast::hear_reply(text, Endpoint{IpAddress::v4(0x0a000001), 1},
                                 IpAddress::v4(0xef010101), 200);
  if (reply.size() > 200) __builtin_trap();
  return 0;
}
