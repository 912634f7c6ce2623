#include "flowmark/mcast/stream.hpp"

#include <algorithm>
#include <cstring>

namespace flowmark::mcast {
namespace {
constexpr std::byte kMagic[4] = {std::byte{'F'}, std::byte{'M'}, std::byte{'S'}, std::byte{'1'}};

void put_be(std::byte* p, std::uint64_t v, int bytes) noexcept {
  for (int i = bytes - 1; i >= 0; --i) {
    p[i] = static_cast<std::byte>(v & 0xff);
    v >>= 8;
  }
}
std::uint64_t get_be(const std::byte* p, int bytes) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}
}  // namespace

void encode_stream_header(std::span<std::byte> out, const StreamHeader& h) noexcept {
  std::memcpy(out.data(), kMagic, 4);
  put_be(out.data() + 4, h.stream, 4);
  put_be(out.data() + 8, h.sequence, 8);
  put_be(out.data() + 16, h.sent_ns, 8);
}

std::optional<StreamHeader> decode_stream_header(std::span<const std::byte> p) noexcept {
  if (p.size() < kStreamHeaderSize || std::memcmp(p.data(), kMagic, 4) != 0) return std::nullopt;
  return StreamHeader{static_cast<std::uint32_t>(get_be(p.data() + 4, 4)), get_be(p.data() + 8, 8),
                      get_be(p.data() + 16, 8)};
}

std::int64_t one_way_delay_ns(std::int64_t rx_ns, std::uint64_t sent_ns) noexcept {
  constexpr std::int64_t kLimit = std::int64_t{1} << 61;
  const std::int64_t sent =
      sent_ns > static_cast<std::uint64_t>(kLimit) ? kLimit : static_cast<std::int64_t>(sent_ns);
  const std::int64_t rx = std::clamp(rx_ns, -kLimit, kLimit);
  return std::clamp(rx - sent, -kLimit, kLimit);
}

bool StreamStats::seen(std::uint64_t seq) const noexcept {
  const std::uint64_t bit = seq % kWindow;
  return (window_[bit / 64] >> (bit % 64)) & 1U;
}

void StreamStats::mark(std::uint64_t seq) noexcept {
  const std::uint64_t bit = seq % kWindow;
  window_[bit / 64] |= std::uint64_t{1} << (bit % 64);
}

void StreamStats::add(std::uint64_t seq, std::int64_t delay_ns) noexcept {
  // Keeps every difference below within int64 whatever the caller passes.
  delay_ns = std::clamp(delay_ns, -(std::int64_t{1} << 61), std::int64_t{1} << 61);
  if (received_ == 0) {
    lowest_ = highest_ = seq;
    delay_min_ = delay_max_ = last_delay_ = delay_ns;
    mark(seq);
    ++received_;
    ++unique_;
    delay_sum_ += static_cast<double>(delay_ns);
    return;
  }
  ++received_;
  bool duplicate = false;
  if (seq > highest_) {
    // Clear the window slots the stream moves past, so they can be reused.
    const std::uint64_t advance = seq - highest_;
    if (advance >= kWindow) {
      std::fill(window_.begin(), window_.end(), 0);
    } else {
      for (std::uint64_t i = 1; i <= advance; ++i) {
        const std::uint64_t bit = (highest_ + i) % kWindow;
        window_[bit / 64] &= ~(std::uint64_t{1} << (bit % 64));
      }
    }
    highest_ = seq;
  } else if (highest_ - seq < kWindow && seq >= lowest_ && seen(seq)) {
    duplicate = true;
  } else if (highest_ - seq >= kWindow) {
    ++reordered_;  // too old to tell a duplicate from a late arrival; count it as late
    ++unique_;
    if (seq < lowest_) lowest_ = seq;
    return;
  } else {
    ++reordered_;
  }
  if (duplicate) {
    ++duplicates_;
    return;
  }
  if (seq < lowest_) lowest_ = seq;
  mark(seq);
  ++unique_;
  delay_sum_ += static_cast<double>(delay_ns);
  if (delay_ns < delay_min_) delay_min_ = delay_ns;
  if (delay_ns > delay_max_) delay_max_ = delay_ns;
  const std::int64_t d = delay_ns > last_delay_ ? delay_ns - last_delay_ : last_delay_ - delay_ns;
  jitter_ += (d - jitter_) / 16;
  last_delay_ = delay_ns;
}

std::int64_t StreamStats::delay_avg_ns() const noexcept {
  return unique_ ? static_cast<std::int64_t>(delay_sum_ / static_cast<double>(unique_)) : 0;
}

}  // namespace flowmark::mcast
