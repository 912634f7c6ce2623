// Test helper: big-endian fields appended to a byte buffer, for the tests that build frames
// and messages by hand (observe, daemon/sources/observer).
#pragma once

#include <cstdint>
#include <vector>

namespace flowmark::testing {

using Bytes = std::vector<std::uint8_t>;

inline void put16(Bytes& b, unsigned v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
inline void put32(Bytes& b, std::uint32_t v) {
  put16(b, v >> 16);
  put16(b, v & 0xffff);
}

}  // namespace flowmark::testing
