// CaptureParser and the file captures (memory-mapped, and read(2) in windows): pcap in both byte
// orders and both time precisions, pcapng (section headers, interfaces with their own link type and
// time resolution, enhanced / simple / obsolete packet blocks, skipped blocks, a byte-order change
// between sections), batches, filters, and corrupt files (error with the offset, frames before the
// damage still delivered). The files are written byte by byte here.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "flowmark/capture/capture.hpp"
#include "flowmark/capture/file_parser.hpp"

namespace flowmark::capture {
namespace {

using observe::FrameRef;
using observe::LinkType;

// Writes integers in a chosen byte order.
struct Writer {
  bool big = false;
  std::vector<std::uint8_t> out;
  void u8(std::uint8_t v) { out.push_back(v); }
  void u16(std::uint16_t v) {
    if (big) {
      u8(static_cast<std::uint8_t>(v >> 8));
      u8(static_cast<std::uint8_t>(v));
    } else {
      u8(static_cast<std::uint8_t>(v));
      u8(static_cast<std::uint8_t>(v >> 8));
    }
  }
  void u32(std::uint32_t v) {
    if (big) {
      u16(static_cast<std::uint16_t>(v >> 16));
      u16(static_cast<std::uint16_t>(v));
    } else {
      u16(static_cast<std::uint16_t>(v));
      u16(static_cast<std::uint16_t>(v >> 16));
    }
  }
  void u64(std::uint64_t v) {
    if (big) {
      u32(static_cast<std::uint32_t>(v >> 32));
      u32(static_cast<std::uint32_t>(v));
    } else {
      u32(static_cast<std::uint32_t>(v));
      u32(static_cast<std::uint32_t>(v >> 32));
    }
  }
  void bytes(const std::vector<std::uint8_t>& b) { out.insert(out.end(), b.begin(), b.end()); }
  void pad4() {
    while (out.size() % 4 != 0) u8(0);
  }
};

// A frame whose bytes say which one it is: n repeated `len` times.
std::vector<std::uint8_t> frame(std::uint8_t n, std::size_t len) {
  return std::vector<std::uint8_t>(len, n);
}

std::vector<std::uint8_t> pcap_file(
    bool big, bool nano, std::uint32_t link,
    const std::vector<std::pair<std::uint64_t, std::size_t>>& recs) {
  Writer w{big, {}};
  w.u32(nano ? 0xa1b23c4d : 0xa1b2c3d4);
  w.u16(2);
  w.u16(4);
  w.u32(0);
  w.u32(0);
  w.u32(65535);
  w.u32(link);
  std::uint8_t n = 1;
  for (const auto& [ts, len] : recs) {
    w.u32(static_cast<std::uint32_t>(ts / 1'000'000'000));
    const std::uint64_t frac = ts % 1'000'000'000;
    w.u32(static_cast<std::uint32_t>(nano ? frac : frac / 1000));
    w.u32(static_cast<std::uint32_t>(len));
    w.u32(static_cast<std::uint32_t>(len + 100));
    w.bytes(frame(n++, len));
  }
  return w.out;
}

// pcapng blocks.
void shb(Writer& w) {
  w.u32(0x0A0D0D0A);
  w.u32(28);
  w.u32(0x1A2B3C4D);
  w.u16(1);
  w.u16(0);
  w.u64(~std::uint64_t{0});
  w.u32(28);
}
// tsresol < 0: no option (microseconds).
void idb(Writer& w, std::uint16_t link, int tsresol, std::int64_t tsoffset = 0) {
  const std::uint32_t len = 20 + (tsresol >= 0 ? 8 : 0) + (tsoffset != 0 ? 12 : 0) + 4;
  w.u32(1);
  w.u32(len);
  w.u16(link);
  w.u16(0);
  w.u32(0);  // snaplen: none
  if (tsresol >= 0) {
    w.u16(9);
    w.u16(1);
    w.u8(static_cast<std::uint8_t>(tsresol));
    w.pad4();
  }
  if (tsoffset != 0) {
    w.u16(14);
    w.u16(8);
    w.u64(static_cast<std::uint64_t>(tsoffset));
  }
  w.u16(0);
  w.u16(0);
  w.u32(len);
}
void epb(Writer& w, std::uint32_t ifid, std::uint64_t ticks, const std::vector<std::uint8_t>& data,
         std::uint32_t origlen) {
  const std::uint32_t len = 32 + static_cast<std::uint32_t>((data.size() + 3) & ~std::size_t{3});
  w.u32(6);
  w.u32(len);
  w.u32(ifid);
  w.u32(static_cast<std::uint32_t>(ticks >> 32));
  w.u32(static_cast<std::uint32_t>(ticks));
  w.u32(static_cast<std::uint32_t>(data.size()));
  w.u32(origlen);
  w.bytes(data);
  w.pad4();
  w.u32(len);
}
void spb(Writer& w, const std::vector<std::uint8_t>& data) {
  const std::uint32_t len = 16 + static_cast<std::uint32_t>((data.size() + 3) & ~std::size_t{3});
  w.u32(3);
  w.u32(len);
  w.u32(static_cast<std::uint32_t>(data.size()));
  w.bytes(data);
  w.pad4();
  w.u32(len);
}
void other_block(Writer& w, std::uint32_t type) {  // e.g. name resolution, statistics
  w.u32(type);
  w.u32(20);
  w.u64(0x1122334455667788);
  w.u32(20);
}

std::span<const std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size()};
}

struct Got {
  LinkType link;
  std::int64_t ts;
  std::uint8_t first_byte;
  std::size_t len;
  std::uint32_t wire;
};

// Everything the parser yields, batch by batch (batch size `per`); the error if any.
std::vector<Got> read_all(const std::vector<std::uint8_t>& file, std::size_t per,
                          std::string* error = nullptr, std::vector<std::size_t>* sizes = nullptr) {
  auto p = CaptureParser::open(as_bytes(file), "test.cap");
  EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message());
  std::vector<Got> got;
  if (!p) return got;
  std::vector<FrameRef> batch(per);
  std::vector<std::uint32_t> wire(per);
  for (;;) {
    LinkType link{};
    auto n = p->next_batch(batch, link, wire);
    if (!n) {
      if (error) *error = n.error().message();
      break;
    }
    if (*n == 0) break;
    if (sizes) sizes->push_back(*n);
    for (std::size_t i = 0; i < *n; ++i)
      got.push_back(
          {link, batch[i].ts_ns,
           batch[i].frame.empty() ? std::uint8_t{0} : static_cast<std::uint8_t>(batch[i].frame[0]),
           batch[i].frame.size(), wire[i]});
  }
  return got;
}

constexpr std::uint64_t kT0 = 1'700'000'000'123'456'789;  // ns

TEST(CaptureParser, PcapBothByteOrdersAndPrecisions) {
  for (const bool big : {false, true}) {
    for (const bool nano : {false, true}) {
      const auto file = pcap_file(big, nano, 101, {{kT0, 60}, {kT0 + 1'000, 1514}, {kT0 + 2, 0}});
      const auto got = read_all(file, 2);
      ASSERT_EQ(got.size(), 3u) << big << nano;
      const std::int64_t unit = nano ? 1 : 1000;
      const auto t0 = static_cast<std::int64_t>(kT0);
      EXPECT_EQ(got[0].ts, t0 / unit * unit);
      EXPECT_EQ(got[1].ts, (t0 + 1'000) / unit * unit);
      EXPECT_EQ(got[2].ts, (t0 + 2) / unit * unit);
      EXPECT_EQ(got[0].link, LinkType::kRaw);
      EXPECT_EQ(got[0].first_byte, 1);
      EXPECT_EQ(got[0].len, 60u);
      EXPECT_EQ(got[0].wire, 160u);
      EXPECT_EQ(got[1].first_byte, 2);
      EXPECT_EQ(got[1].len, 1514u);
      EXPECT_EQ(got[2].len, 0u);
    }
  }
}

TEST(CaptureParser, PcapLinkTypeFcsBitsAndOldRawValue) {
  auto got = read_all(pcap_file(false, false, 1u | (1u << 28) | (4u << 29), {{kT0, 20}}), 8);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, LinkType::kEthernet);
  got = read_all(pcap_file(false, false, 12, {{kT0, 20}}), 8);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].link, LinkType::kRaw);
}

TEST(CaptureParser, PcapngInterfacesResolutionsAndBlocks) {
  for (const bool big : {false, true}) {
    Writer w{big, {}};
    shb(w);
    idb(w, 1, -1);                // 0: Ethernet, microseconds
    idb(w, 101, 9);               // 1: raw IP, nanoseconds
    idb(w, 113, 0x80 | 20, 100);  // 2: Linux SLL, 2^-20 s, offset 100 s
    other_block(w, 4);            // name resolution: skipped
    epb(w, 0, kT0 / 1000, frame(1, 60), 60);
    epb(w, 0, kT0 / 1000 + 1, frame(2, 61), 61);
    spb(w, frame(3, 62));  // interface 0, the previous frame's time
    epb(w, 1, kT0, frame(4, 63), 1000);
    other_block(w, 5);  // interface statistics: skipped
    epb(w, 2, std::uint64_t{3} << 20 | (std::uint64_t{1} << 19), frame(5, 64), 64);
    epb(w, 0, kT0 / 1000 + 2, frame(6, 65), 65);
    std::vector<std::size_t> sizes;
    const auto got = read_all(w.out, 16, nullptr, &sizes);
    ASSERT_EQ(got.size(), 6u) << big;
    // A batch holds one link type: Ethernet x3, raw, SLL, Ethernet.
    EXPECT_EQ(sizes, (std::vector<std::size_t>{3, 1, 1, 1}));
    const auto us = static_cast<std::int64_t>(kT0 / 1000 * 1000);
    EXPECT_EQ(got[0].ts, us);
    EXPECT_EQ(got[1].ts, us + 1000);
    EXPECT_EQ(got[2].ts, us + 1000);
    EXPECT_EQ(got[2].link, LinkType::kEthernet);
    EXPECT_EQ(got[2].first_byte, 3);
    EXPECT_EQ(got[2].len, 62u);
    EXPECT_EQ(got[3].ts, static_cast<std::int64_t>(kT0));
    EXPECT_EQ(got[3].link, LinkType::kRaw);
    EXPECT_EQ(got[3].wire, 1000u);
    EXPECT_EQ(got[4].ts, (3 + 100) * std::int64_t{1'000'000'000} + 500'000'000);
    EXPECT_EQ(got[4].link, LinkType::kLinuxSll);
    EXPECT_EQ(got[4].first_byte, 5);
    EXPECT_EQ(got[5].ts, us + 2000);
    EXPECT_EQ(got[5].first_byte, 6);
  }
}

TEST(CaptureParser, PcapngSecondSectionChangesByteOrderAndInterfaces) {
  Writer w{false, {}};
  shb(w);
  idb(w, 1, 9);
  epb(w, 0, kT0, frame(1, 40), 40);
  w.big = true;
  shb(w);
  idb(w, 101, 6);
  epb(w, 0, kT0 / 1000, frame(2, 41), 41);
  const auto got = read_all(w.out, 1);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].link, LinkType::kEthernet);
  EXPECT_EQ(got[1].link, LinkType::kRaw);
  EXPECT_EQ(got[1].ts, static_cast<std::int64_t>(kT0 / 1000 * 1000));
  EXPECT_EQ(got[1].len, 41u);
}

TEST(CaptureParser, OpenRejectsWhatIsNoCapture) {
  std::vector<std::uint8_t> junk(64, 0x5a);
  auto p = CaptureParser::open(as_bytes(junk), "junk.bin");
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message().find("junk.bin"), std::string::npos);
  EXPECT_EQ(p.error().code(), make_error_code(Errc::kMalformed));
  std::vector<std::uint8_t> shortpcap = pcap_file(false, false, 1, {});
  shortpcap.resize(20);
  EXPECT_FALSE(CaptureParser::open(as_bytes(shortpcap), "x"));
  EXPECT_FALSE(CaptureParser::open({}, "empty"));
  Writer w{false, {}};
  shb(w);
  w.out[8] = 0x99;  // byte-order magic
  EXPECT_FALSE(CaptureParser::open(as_bytes(w.out), "x"));
}

// The offset in an error message.
std::size_t offset_in(const std::string& msg) {
  const auto at = msg.find("offset ");
  if (at == std::string::npos) return ~std::size_t{0};
  return std::stoul(msg.substr(at + 7));
}

TEST(CaptureParser, PcapTruncatedRecordsGiveTheFramesBeforeThenTheError) {
  const auto whole = pcap_file(false, false, 1, {{kT0, 100}, {kT0 + 1000, 100}, {kT0 + 2000, 100}});
  const std::size_t third = 24 + 2 * 116;
  for (const std::size_t cut : {third + 7, third + 16 + 50}) {
    auto file = whole;
    file.resize(cut);
    std::string err;
    const auto got = read_all(file, 256, &err);
    EXPECT_EQ(got.size(), 2u) << cut;
    EXPECT_NE(err.find("test.cap"), std::string::npos) << err;
    EXPECT_EQ(offset_in(err), third) << err;
  }
  // A garbage record header: a length no frame has.
  auto file = whole;
  file[24 + 116 + 8] = 0xff;
  file[24 + 116 + 11] = 0x7f;
  std::string err;
  const auto got = read_all(file, 1, &err);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(offset_in(err), 24u + 116) << err;
}

// Captures of `count` frames of 1..1600 bytes, 1 µs apart, big enough for the reader's
// look-ahead to walk many segments, with where each frame starts and its time as written.
// With `decoys`, every frame is made of fake record headers (pcap: a plausible time and a
// random length; pcapng: whole fake packet blocks, trailer included): the look-ahead starts
// chains on them. The tests read the frames back from what was written, not through the
// parser.
struct BigCapture {
  std::vector<std::uint8_t> bytes;
  std::vector<std::size_t> lens, offsets;
  std::vector<std::int64_t> times;
};
struct Lcg {
  std::uint32_t x;
  std::uint32_t operator()() { return x = x * 1664525u + 1013904223u; }
};

BigCapture big_pcap(bool big, std::size_t count, bool decoys, std::uint32_t seed,
                    bool nano = false) {
  BigCapture f;
  std::vector<std::pair<std::uint64_t, std::size_t>> recs;
  Lcg rnd{seed};
  std::size_t at = 24;
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t len = 1 + (rnd() >> 8) % 1600;
    recs.emplace_back(kT0 + i * 1000, len);
    f.lens.push_back(len);
    f.offsets.push_back(at + 16);
    f.times.push_back(static_cast<std::int64_t>((nano ? kT0 : kT0 / 1000 * 1000) + i * 1000));
    at += 16 + len;
  }
  f.bytes = pcap_file(big, nano, 1, recs);
  if (decoys) {
    for (std::size_t i = 0; i < count; ++i) {
      for (std::size_t d = 0; d + 16 <= f.lens[i]; d += 16) {
        Writer w{big, {}};
        w.u32(static_cast<std::uint32_t>(kT0 / 1'000'000'000));
        w.u32(rnd() % (nano ? 1'000'000'000 : 1'000'000));
        const std::uint32_t fake = 1 + (rnd() >> 8) % 2000;
        w.u32(fake);
        w.u32(fake + 4);
        std::memcpy(f.bytes.data() + f.offsets[i] + d, w.out.data(), 16);
      }
    }
  }
  return f;
}

BigCapture big_pcapng(bool big, std::size_t count, bool decoys, std::uint32_t seed) {
  BigCapture f;
  Lcg rnd{seed};
  Writer w{big, {}};
  shb(w);
  idb(w, 1, -1);  // microseconds
  for (std::size_t i = 0; i < count; ++i) {
    const std::size_t len = 1 + (rnd() >> 8) % 1600;
    std::vector<std::uint8_t> data = frame(static_cast<std::uint8_t>(i), len);
    if (decoys) {  // fake packet blocks of 32..60 bytes, back to back
      Writer fake{big, {}};
      for (std::uint32_t d = 0, size = 32 + 4 * (rnd() % 8); d + size <= len;
           d += size, size = 32 + 4 * (rnd() % 8)) {
        fake.out.clear();
        fake.u32(6);
        fake.u32(size);
        fake.u32(0);
        fake.u64(rnd());
        fake.u32(0);
        fake.u32(0);
        fake.out.resize(size - 4);
        fake.u32(size);
        std::memcpy(data.data() + d, fake.out.data(), size);
      }
    }
    const std::uint64_t ticks = kT0 / 1000 + i;
    f.lens.push_back(len);
    f.offsets.push_back(w.out.size() + 28);
    f.times.push_back(static_cast<std::int64_t>(ticks * 1000));
    epb(w, 0, ticks, data, static_cast<std::uint32_t>(len));
  }
  f.bytes = std::move(w.out);
  return f;
}

// Reads f back in batches of 256: every frame where and when it was written, nothing else.
// Returns the parser's look-ahead misses.
std::uint64_t expect_reads_back(const BigCapture& f, const char* what) {
  auto p = CaptureParser::open(as_bytes(f.bytes), "big");
  EXPECT_TRUE(p);
  if (!p) return 0;
  std::array<FrameRef, 256> batch;
  std::size_t i = 0;
  for (;;) {
    LinkType link{};
    auto n = p->next_batch(batch, link);
    EXPECT_TRUE(n) << what << ": " << n.error().message();
    if (!n || *n == 0) break;
    for (std::size_t j = 0; j < *n; ++j, ++i) {
      const bool same = i < f.lens.size() && batch[j].frame.size() == f.lens[i] &&
                        batch[j].frame.data() == as_bytes(f.bytes).data() + f.offsets[i] &&
                        batch[j].ts_ns == f.times[i];
      if (!same) {
        ADD_FAILURE() << what << ": frame " << i << " differs";
        return 0;
      }
    }
  }
  EXPECT_EQ(i, f.lens.size()) << what;
  EXPECT_EQ(p->offset(), f.bytes.size()) << what;
  return p->lookahead_misses();
}

TEST(CaptureParser, PcapLookAheadNeverChangesWhatIsRead) {
  for (const bool big : {false, true}) {  // big-endian files with nanosecond times
    for (const bool decoys : {false, true}) {
      const auto misses = expect_reads_back(big_pcap(big, 12'000, decoys, big ? 7u : 11u, big),
                                            decoys ? "pcap with decoys" : "pcap");  // ~10 MB
      // Real frames do not fool it; frames full of fake headers do, and cost nothing else.
      if (decoys)
        EXPECT_GT(misses, 0u) << big;
      else
        EXPECT_EQ(misses, 0u) << big;
    }
  }
}

TEST(CaptureParser, PcapngLookAheadNeverChangesWhatIsRead) {
  for (const bool big : {false, true}) {
    for (const bool decoys : {false, true}) {
      const auto misses = expect_reads_back(big_pcapng(big, 12'000, decoys, big ? 5u : 13u),
                                            decoys ? "pcapng with decoys" : "pcapng");
      if (decoys)
        EXPECT_GT(misses, 0u) << big;
      else
        EXPECT_EQ(misses, 0u) << big;
    }
  }
}

TEST(CaptureParser, PcapCorruptRecordFarIntoTheFile) {
  BigCapture f = big_pcap(false, 20'000, false, 5);
  const std::size_t at = f.offsets[15'000] - 16;
  f.bytes[at + 8] = 0xff;  // record 15,000's length: 0x??ffffff
  f.bytes[at + 11] = 0x7f;
  std::string err;
  const auto got = read_all(f.bytes, 256, &err);
  EXPECT_EQ(got.size(), 15'000u);
  EXPECT_EQ(offset_in(err), at) << err;
}

TEST(CaptureParser, PcapngCorruptBlockFarIntoTheFile) {
  BigCapture f = big_pcapng(false, 20'000, false, 3);
  const std::size_t at = f.offsets[15'000] - 28;
  f.bytes[at + 4] = 0x0d;  // block 15,000's length: no longer a multiple of 4
  std::string err;
  const auto got = read_all(f.bytes, 256, &err);
  EXPECT_EQ(got.size(), 15'000u);
  EXPECT_EQ(offset_in(err), at) << err;
  EXPECT_NE(err.find("bad block length"), std::string::npos) << err;
}

TEST(CaptureParser, PcapngCorruptBlocks) {
  Writer w{false, {}};
  shb(w);
  idb(w, 1, -1);
  epb(w, 0, 1, frame(1, 60), 60);
  const std::size_t second = w.out.size();
  epb(w, 0, 2, frame(2, 60), 60);
  const auto whole = w.out;
  struct Case {
    const char* what;
    std::size_t at;
    std::uint8_t value;
    std::size_t resize;
  };
  for (const Case c :
       {Case{"bad length", second + 4, 13, 0}, Case{"huge length", second + 7, 0x40, 0},
        Case{"trailer", whole.size() - 4, 0x10, 0}, Case{"unknown interface", second + 8, 7, 0},
        Case{"caplen overruns", second + 21, 0x10, 0}, Case{"truncated", 0, 0, whole.size() - 10},
        Case{"truncated header", 0, 0, second + 6}}) {
    auto file = whole;
    if (c.resize != 0)
      file.resize(c.resize);
    else
      file[c.at] = c.value;
    std::string err;
    const auto got = read_all(file, 256, &err);
    EXPECT_EQ(got.size(), 1u) << c.what;
    EXPECT_EQ(offset_in(err), second) << c.what << ": " << err;
  }
}

// The mapped reader on a real file, with and without a filter.
class TempFile {
 public:
  explicit TempFile(const std::vector<std::uint8_t>& bytes) {
    char tmpl[] = "/tmp/fm_parser_test.XXXXXX";
    const int fd = mkstemp(tmpl);
    path_ = tmpl;
    EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Ethernet + IPv4 + UDP or TCP, minimal.
std::vector<std::uint8_t> eth_ip(std::uint8_t proto) {
  std::vector<std::uint8_t> f(14 + 20 + 20, 0);
  f[12] = 0x08;
  f[14] = 0x45;
  f[17] = 40;
  f[14 + 8] = 64;
  f[14 + 9] = proto;
  f[14 + 12] = 10;
  f[14 + 15] = 1;
  f[14 + 16] = 10;
  f[14 + 19] = 2;
  f[34] = 0x30;
  f[36] = 0x00;
  f[37] = 53;
  f[38 + 0] = 0;
  f[39] = proto == 17 ? 8 : 0x50;
  return f;
}

TEST(MappedFile, ReadsAndFilters) {
  Writer w{true, {}};
  shb(w);
  idb(w, 1, 9);
  for (int i = 0; i < 10; ++i) epb(w, 0, kT0 + i, eth_ip(i % 2 == 0 ? 17 : 6), 54);
  TempFile f(w.out);
  for (const auto open : {&open_file_capture, &open_read_file})
    for (const char* filter : {"", "udp", "tcp and port 53"}) {
      auto cap = open(f.path(), filter);
      ASSERT_TRUE(cap) << cap.error().message();
      std::array<FrameRef, 3> batch;
      LinkType link{};
      std::size_t total = 0;
      for (;;) {
        auto n = (*cap)->next_batch(batch, link);
        ASSERT_TRUE(n) << n.error().message();
        if (*n == 0) break;
        total += *n;
        EXPECT_EQ(link, LinkType::kEthernet);
      }
      EXPECT_EQ(total, std::string(filter).empty() ? 10u : 5u) << filter;
      EXPECT_EQ((*cap)->offset(), w.out.size());
    }
  auto bad = open_file_capture(f.path(), "udp and (");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), make_error_code(Errc::kInvalidArgument));
}

// Every frame of a capture through a file capture (batches of 256, the frames' bytes copied:
// the read reader's are valid until the next batch only); the error, if any.
struct Read {
  std::vector<std::int64_t> times;
  std::vector<std::vector<std::uint8_t>> frames;
  std::string error;
  std::uint64_t offset = 0;
};
Read read_capture(Capture& cap) {
  Read r;
  std::array<FrameRef, 256> batch;
  for (;;) {
    LinkType link{};
    auto n = cap.next_batch(batch, link);
    if (!n) {
      r.error = n.error().message();
      break;
    }
    if (*n == 0) break;
    for (std::size_t i = 0; i < *n; ++i) {
      const auto* b = reinterpret_cast<const std::uint8_t*>(batch[i].frame.data());
      r.times.push_back(batch[i].ts_ns);
      r.frames.emplace_back(b, b + batch[i].frame.size());
    }
  }
  r.offset = cap.offset();
  return r;
}

// The read(2) reader takes the file in windows of 256 KiB: records cut by a window's end, a
// record larger than the window (the buffer grows), pcapng sections changing the byte order
// past the first window, and corruption far into the file give what the whole file gives.
TEST(ReadFile, WindowsGiveWhatTheWholeFileGives) {
  std::vector<std::pair<const char*, std::vector<std::uint8_t>>> files;
  files.emplace_back("pcap", big_pcap(false, 3'000, true, 3u).bytes);  // ~2.4 MB
  files.emplace_back("pcap big-endian nano", big_pcap(true, 3'000, false, 9u, true).bytes);
  files.emplace_back("pcapng", big_pcapng(false, 3'000, true, 21u).bytes);
  {  // frames larger than the window, between ordinary ones
    std::vector<std::pair<std::uint64_t, std::size_t>> recs;
    for (std::size_t i = 0; i < 40; ++i)
      recs.emplace_back(kT0 + i * 1000, i % 10 == 3 ? 700'000 : 1500);
    files.emplace_back("pcap, 700 kB frames", pcap_file(false, false, 1, recs));
  }
  {  // pcapng: a second section (other byte order) and interfaces past the first window
    Writer a{false, {}};
    shb(a);
    idb(a, 1, -1);
    for (std::size_t i = 0; i < 400; ++i) epb(a, 0, kT0 / 1000 + i, frame(1, 1000), 1000);
    Writer b{true, {}};
    shb(b);
    idb(b, 101, 9);
    for (std::size_t i = 0; i < 400; ++i) epb(b, 0, kT0 + i, frame(2, 900), 900);
    a.bytes(b.out);
    files.emplace_back("pcapng, two sections", a.out);
  }
  {  // a record damaged far into the file; one truncated at the end
    BigCapture f = big_pcap(false, 3'000, false, 5);
    f.bytes[f.offsets[2'500] - 16 + 8] = 0xff;
    f.bytes[f.offsets[2'500] - 16 + 11] = 0x7f;
    files.emplace_back("pcap, corrupt record", f.bytes);
    BigCapture g = big_pcapng(false, 3'000, false, 8);
    g.bytes.resize(g.bytes.size() - 10);
    files.emplace_back("pcapng, truncated", g.bytes);
  }
  for (const auto& [what, bytes] : files) {
    TempFile f(bytes);
    auto mapped = open_mapped_file(f.path());
    auto read = open_read_file(f.path());
    ASSERT_TRUE(mapped && read) << what;
    EXPECT_FALSE((*read)->frames_outlive_batch());
    const Read m = read_capture(**mapped), r = read_capture(**read);
    EXPECT_GT(m.frames.size(), 0u) << what;
    EXPECT_EQ(r.frames.size(), m.frames.size()) << what;
    EXPECT_TRUE(r.frames == m.frames) << what;
    EXPECT_TRUE(r.times == m.times) << what;
    EXPECT_EQ(r.error, m.error) << what;
    EXPECT_EQ(r.offset, m.offset) << what;
  }
  // The expected errors are there (the comparison above says both readers give them).
  TempFile corrupt(files[5].second);
  auto c = open_read_file(corrupt.path());
  ASSERT_TRUE(c);
  const Read r = read_capture(**c);
  EXPECT_EQ(r.frames.size(), 2'500u);
  EXPECT_NE(r.error.find("not plausible"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace flowmark::capture
