// flowmark::mcast — sequenced streams: the header SAY --count/--interval puts in front of
// each payload, and the statistics RECV --stats computes from it.
//
// Header, 24 bytes, network byte order:
//   0  "FMS1"          magic
//   4  stream id       u32, random per SAY run (a restarted sender is a new stream)
//   8  sequence        u64, 0, 1, 2 …
//  16  send time       u64, nanoseconds since the Unix epoch (CLOCK_REALTIME)
// The message follows. Payloads that do not start with the magic are plain datagrams.
//
//   std::array<std::byte, kStreamHeaderSize> h;
//   encode_stream_header(h, {.stream = id, .sequence = n, .sent_ns = now});
//   if (auto hdr = decode_stream_header(payload)) use(hdr->sequence);
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "flowmark/core/address.hpp"

namespace flowmark::mcast {

inline constexpr std::size_t kStreamHeaderSize = 24;

struct StreamHeader {
  std::uint32_t stream = 0;
  std::uint64_t sequence = 0;
  std::uint64_t sent_ns = 0;
};

// Writes the header into the first kStreamHeaderSize bytes of out (which must be large
// enough).
void encode_stream_header(std::span<std::byte> out, const StreamHeader& h) noexcept;
// The header, if payload starts with one.
std::optional<StreamHeader> decode_stream_header(std::span<const std::byte> payload) noexcept;

// Receive time minus send time, saturated to ±2^61 ns (the send time comes off the wire
// and may be anything).
std::int64_t one_way_delay_ns(std::int64_t rx_ns, std::uint64_t sent_ns) noexcept;

// Loss, duplicates, reordering and one-way delay of one stream (one sender, one group).
// Duplicates are recognised within the last kWindow sequence numbers.
class StreamStats {
 public:
  static constexpr std::uint64_t kWindow = 1 << 16;

  // delay_ns: receive time minus send time (meaningful when both clocks agree).
  void add(std::uint64_t sequence, std::int64_t delay_ns) noexcept;

  std::uint64_t received() const noexcept { return received_; }  // every datagram
  std::uint64_t unique() const noexcept { return unique_; }      // distinct sequences
  std::uint64_t duplicates() const noexcept { return duplicates_; }
  std::uint64_t reordered() const noexcept { return reordered_; }  // arrived after a later one
  // Sequences between the lowest and highest seen that never arrived.
  std::uint64_t expected() const noexcept {
    if (received_ == 0) return 0;
    const std::uint64_t span = highest_ - lowest_;
    return span == UINT64_MAX ? span : span + 1;  // saturates instead of wrapping to 0
  }
  std::uint64_t lost() const noexcept { return expected() - unique_; }
  std::uint64_t first_sequence() const noexcept { return lowest_; }
  std::uint64_t last_sequence() const noexcept { return highest_; }
  std::int64_t delay_min_ns() const noexcept { return delay_min_; }
  std::int64_t delay_max_ns() const noexcept { return delay_max_; }
  std::int64_t delay_avg_ns() const noexcept;
  std::int64_t jitter_ns() const noexcept { return jitter_; }  // RFC 3550 estimator

 private:
  bool seen(std::uint64_t seq) const noexcept;
  void mark(std::uint64_t seq) noexcept;

  std::vector<std::uint64_t> window_ = std::vector<std::uint64_t>(kWindow / 64);
  std::uint64_t received_ = 0, unique_ = 0, duplicates_ = 0, reordered_ = 0;
  std::uint64_t lowest_ = 0, highest_ = 0;
  std::int64_t delay_min_ = 0, delay_max_ = 0, last_delay_ = 0, jitter_ = 0;
  double delay_sum_ = 0;
};

// Statistics of every stream a receiver saw, keyed by sender, group and stream id.
class StatsTable {
 public:
  struct Key {
    Endpoint sender;
    IpAddress group;
    std::uint32_t stream;
    auto operator<=>(const Key&) const = default;
  };
  void add(const Key& key, std::uint64_t sequence, std::int64_t delay_ns) {
    table_[key].add(sequence, delay_ns);
  }
  void add_plain() noexcept { ++plain_; }
  void add_truncated() noexcept { ++truncated_; }
  // One JSON object: {"type":"stats","streams":[...],"plain":N,"truncated":N}.
  std::string to_json() const;
  const std::map<Key, StreamStats>& streams() const noexcept { return table_; }

 private:
  std::map<Key, StreamStats> table_;
  std::uint64_t plain_ = 0, truncated_ = 0;
};

}  // namespace flowmark::mcast
