#include "flowmark/mcast/stream.hpp"

#include <gtest/gtest.h>

#include <array>

namespace flowmark::mcast {
namespace {

TEST(StreamHeader, RoundTripAndLayout) {
  std::array<std::byte, kStreamHeaderSize + 3> buf{};
  encode_stream_header(buf, {0x01020304, 0x1122334455667788ull, 42});
  EXPECT_EQ(static_cast<char>(buf[0]), 'F');
  EXPECT_EQ(static_cast<char>(buf[3]), '1');
  EXPECT_EQ(static_cast<int>(buf[4]), 0x01);  // network byte order
  EXPECT_EQ(static_cast<int>(buf[8]), 0x11);
  auto h = decode_stream_header(buf);
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->stream, 0x01020304u);
  EXPECT_EQ(h->sequence, 0x1122334455667788ull);
  EXPECT_EQ(h->sent_ns, 42u);
}

TEST(StreamHeader, PlainPayloadsAreNotHeaders) {
  std::array<std::byte, kStreamHeaderSize> buf{};
  EXPECT_FALSE(decode_stream_header(buf).has_value());
  encode_stream_header(buf, {1, 2, 3});
  EXPECT_FALSE(decode_stream_header(std::span(buf).first(kStreamHeaderSize - 1)).has_value());
}

TEST(StreamStats, CountsLossDuplicatesAndReordering) {
  StreamStats s;
  // 0 1 2 4 3 3 7 : 5 and 6 lost, 3 late, one duplicate of 3.
  for (std::uint64_t seq : {0, 1, 2, 4, 3, 3, 7}) s.add(seq, 100);
  EXPECT_EQ(s.received(), 7u);
  EXPECT_EQ(s.unique(), 6u);
  EXPECT_EQ(s.duplicates(), 1u);
  EXPECT_EQ(s.reordered(), 1u);
  EXPECT_EQ(s.expected(), 8u);
  EXPECT_EQ(s.lost(), 2u);
  EXPECT_EQ(s.delay_min_ns(), 100);
  EXPECT_EQ(s.delay_avg_ns(), 100);
}

TEST(StreamStats, EveryTenthDropped) {
  StreamStats s;
  for (std::uint64_t seq = 0; seq < 1000; ++seq)
    if (seq % 10 != 5) s.add(seq, static_cast<std::int64_t>(seq));
  EXPECT_EQ(s.expected(), 1000u);
  EXPECT_EQ(s.lost(), 100u);
  EXPECT_EQ(s.duplicates(), 0u);
  EXPECT_EQ(s.reordered(), 0u);
  EXPECT_EQ(s.delay_min_ns(), 0);
  EXPECT_EQ(s.delay_max_ns(), 999);
}

TEST(StreamStats, WindowReusedAfterLongRuns) {
  StreamStats s;
  const std::uint64_t n = 3 * StreamStats::kWindow + 17;
  for (std::uint64_t seq = 0; seq < n; ++seq) s.add(seq, 1);
  EXPECT_EQ(s.unique(), n);
  EXPECT_EQ(s.duplicates(), 0u);
  s.add(n - 5, 1);  // a recent duplicate is still recognised
  EXPECT_EQ(s.duplicates(), 1u);
  s.add(n + 2 * StreamStats::kWindow, 1);         // a jump past the whole window
  EXPECT_EQ(s.lost(), 2 * StreamStats::kWindow);  // n .. n + 2W - 1 never came
}

TEST(StatsTable, JsonPerStream) {
  StatsTable t;
  StatsTable::Key k{*Endpoint::parse("10.0.0.1:4000"), *IpAddress::parse("239.1.1.1"), 7};
  t.add(k, 0, 1000);
  t.add(k, 2, 3000);
  t.add_plain();
  auto json = t.to_json();
  EXPECT_NE(json.find(R"("source":"10.0.0.1","sport":4000,"group":"239.1.1.1","stream":7)"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("lost":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("plain":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("avg":2.0)"), std::string::npos) << json;
}

}  // namespace
}  // namespace flowmark::mcast

namespace flowmark::mcast {
namespace {
// Found by fuzz_stream: a sequence of 2^64-1 never ended the window-clearing loop.
TEST(StreamStats, LargestSequenceTerminates) {
  StreamStats s;
  s.add(UINT64_MAX - 3, 0);
  s.add(UINT64_MAX, 0);
  EXPECT_EQ(s.lost(), 2u);
  s.add(0, 0);
  EXPECT_EQ(s.expected(), UINT64_MAX);  // saturates rather than wrapping to zero
}
}  // namespace
}  // namespace flowmark::mcast

namespace flowmark::mcast {
namespace {
// Found by fuzz_stream under UBSan: send times off the wire overflowed the delay arithmetic.
TEST(StreamStats, HostileSendTimesSaturate) {
  EXPECT_EQ(one_way_delay_ns(1'000, 400), 600);
  EXPECT_EQ(one_way_delay_ns(0, UINT64_MAX), -(std::int64_t{1} << 61));
  EXPECT_EQ(one_way_delay_ns(INT64_MAX, 0), std::int64_t{1} << 61);
  StreamStats s;
  s.add(0, INT64_MAX);
  s.add(1, INT64_MIN);
  s.add(2, INT64_MAX);
  EXPECT_EQ(s.unique(), 3u);
  EXPECT_GT(s.jitter_ns(), 0);
}
}  // namespace
}  // namespace flowmark::mcast
