// pcap / pcapng walked in place. Every length read from the file is checked against what is
// left before it is used: the parser is fuzzed (tests/fuzz/fuzz_capture_file.cpp).
#include "flowmark/capture/file_parser.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <memory>

#include <fmt/format.h>

namespace flowmark::capture {

namespace {

constexpr std::uint32_t kPcapMicro = 0xa1b2c3d4, kPcapNano = 0xa1b23c4d;
constexpr std::uint32_t kShb = 0x0A0D0D0A, kIdb = 1, kOpb = 2, kSpb = 3, kEpb = 6;
constexpr std::uint32_t kByteOrderMagic = 0x1A2B3C4D;
constexpr std::size_t kPcapHeader = 24, kPcapRecord = 16;
// pcapng: type + length + trailing length; an enhanced packet block without data or options.
constexpr std::size_t kBlockHeader = 12, kEpbMin = 32;
// A record claiming more than this is a garbage header, not a frame (libpcap's largest
// snap length is 256 KiB; some link types go beyond: leave room).
constexpr std::uint32_t kMaxFrame = 16u << 20;
constexpr std::uint64_t kNanosPerSecond = 1'000'000'000;
// The look-ahead walk (CaptureParser::walk_ahead): kLanes chains, each over kSegment
// bytes, started again once the reader is closer than kWalkLow to the walked end.
constexpr std::size_t kLanes = 16, kSegment = 256u << 10, kWalkLow = kLanes * kSegment / 2;
// The reader asks for the header line of the record this many places ahead of it.
constexpr std::size_t kReadAhead = 16;
// A record found by the look-ahead must carry a time within this of the reader's record.
constexpr std::uint32_t kSyncSeconds = 86'400;
__extension__ using U128 = unsigned __int128;

// A 4-byte field at byte `at` in the file's byte order, known at compile time (the hot loops
// are instantiated per byte order).
template <bool kSwap>
std::uint32_t load32(const std::uint8_t* base, std::size_t at) noexcept {
  std::uint32_t v;
  std::memcpy(&v, base + at, 4);
  return kSwap ? __builtin_bswap32(v) : v;
}

}  // namespace

observe::LinkType link_type_from_file(std::uint32_t linktype) noexcept {
  const std::uint32_t t = linktype & 0xFFFF;  // the upper bits say whether frames carry an FCS
  if (t == 12 || t == 14) return observe::LinkType::kRaw;  // DLT_RAW values in old files
  return static_cast<observe::LinkType>(t);
}

std::uint32_t CaptureParser::u32(std::size_t at) const noexcept {
  std::uint32_t v;
  std::memcpy(&v, base_ + at, 4);
  return swap_ ? __builtin_bswap32(v) : v;
}

std::uint16_t CaptureParser::u16(std::size_t at) const noexcept {
  std::uint16_t v;
  std::memcpy(&v, base_ + at, 2);
  return swap_ ? __builtin_bswap16(v) : v;
}

void CaptureParser::corrupt(std::size_t at, std::string what) {
  error_ = Error(make_error_code(Errc::kMalformed),
                 fmt::format("{}: corrupt capture at byte offset {}: {}", name_, at, what));
}

Result<CaptureParser> CaptureParser::open(std::span<const std::byte> bytes, std::string name) {
  CaptureParser p;
  p.base_ = reinterpret_cast<const std::uint8_t*>(bytes.data());
  p.size_ = bytes.size();
  p.name_ = std::move(name);
  auto not_capture = [&](std::string why) {
    return fail(Errc::kMalformed,
                fmt::format("{}: cannot read the capture: {}", p.name_, std::move(why)));
  };
  if (p.size_ < 4) return not_capture("the file is too short for a pcap or pcapng header");
  std::uint32_t magic;
  std::memcpy(&magic, p.base_, 4);
  if (magic == kShb) {
    p.pcapng_ = true;
    if (!p.section_header(0, p.size_)) return std::unexpected(std::move(*p.error_));
    // The first interface's link type, for a filter compiled before the first frame: look
    // through the blocks that precede the first packet, without consuming them.
    std::size_t at = p.pos_;
    while (p.size_ - at >= 12) {
      const std::uint32_t type = p.u32(at), len = p.u32(at + 4);
      if (len < 12 || len % 4 != 0 || len > p.size_ - at) break;
      if (type == kIdb && len >= 20) {
        p.first_link_ = link_type_from_file(p.u16(at + 8));
        break;
      }
      if (type == kEpb || type == kSpb || type == kOpb || type == kShb) break;
      at += len;
    }
    return p;
  }
  const std::uint32_t swapped = __builtin_bswap32(magic);
  if (magic == kPcapMicro || magic == kPcapNano) {
    p.swap_ = false;
  } else if (swapped == kPcapMicro || swapped == kPcapNano) {
    p.swap_ = true;
    magic = swapped;
  } else {
    return not_capture(fmt::format("unknown magic number 0x{:08x} (not pcap or pcapng)", magic));
  }
  if (p.size_ < kPcapHeader)
    return not_capture(fmt::format("truncated pcap header ({} of {} bytes)", p.size_, kPcapHeader));
  const std::uint16_t major = p.u16(4);
  if (major != 2) return not_capture(fmt::format("unsupported pcap version {}", major));
  p.frac_ns_ = magic == kPcapNano ? 1 : 1000;
  p.link_ = link_type_from_file(p.u32(20));
  p.first_link_ = p.link_;
  p.pos_ = kPcapHeader;
  return p;
}

void CaptureParser::set_window(const std::byte* data, std::uint64_t start, std::size_t len,
                               bool last) noexcept {
  base_ = reinterpret_cast<const std::uint8_t*>(reinterpret_cast<std::uintptr_t>(data) -
                                                static_cast<std::uintptr_t>(start));
  size_ = static_cast<std::size_t>(start) + len;
  last_ = last;
  lookahead_ = false;
}

Result<std::size_t> CaptureParser::next_batch(std::span<observe::FrameRef> frames,
                                              observe::LinkType& link,
                                              std::span<std::uint32_t> wire_lengths) {
  if (error_) return std::unexpected(*error_);
  std::uint32_t* wire = wire_lengths.size() >= frames.size() ? wire_lengths.data() : nullptr;
  const std::size_t n = pcapng_ ? pcapng_batch(frames, link, wire) : pcap_batch(frames, link, wire);
  if (n == 0 && error_) return std::unexpected(*error_);
  return n;
}

// Is there a plausible pcap record header at `at`? For the look-ahead only: a wrong answer
// costs time, never a frame (the reader checks every record it takes).
[[gnu::always_inline]] inline bool CaptureParser::plausible_record(
    std::size_t at, std::uint32_t ref_sec) const noexcept {
  if (size_ - at < kPcapRecord) return false;
  if (u32(at + 4) >= frac_limit()) [[likely]]
    return false;
  const std::uint32_t caplen = u32(at + 8), wire = u32(at + 12);
  if (caplen == 0 || caplen > wire || wire > kMaxFrame) return false;
  if (caplen > size_ - at - kPcapRecord) return false;
  const std::uint32_t sec = u32(at);
  return sec - ref_sec + kSyncSeconds <= 2 * kSyncSeconds;
}

namespace {

// The first place in [from, to) whose 4 bytes at +4 (a record's second fraction) are below
// `limit`: most bytes of a frame fail this test, so it is the look-ahead's first filter.
template <bool kSwap>
std::size_t scan_fraction(const std::uint8_t* base, std::size_t from, std::size_t to,
                          std::uint32_t limit) noexcept {
  for (std::size_t p = from; p < to; ++p) {
    std::uint32_t v;
    std::memcpy(&v, base + p + 4, 4);
    if (kSwap) v = __builtin_bswap32(v);
    if (v < limit) return p;
  }
  return to;
}

}  // namespace

// The first plausible record header in [from, to), or `to`.
std::size_t CaptureParser::find_record(std::size_t from, std::size_t to,
                                       std::uint32_t ref_sec) const noexcept {
  if (size_ < kPcapRecord) return to;
  const std::size_t last = std::min(to, size_ - kPcapRecord + 1);  // 16 bytes must remain
  const std::uint32_t limit = frac_limit();
  for (std::size_t p = from; p < last; ++p) {
    p = swap_ ? scan_fraction<true>(base_, p, last, limit)
              : scan_fraction<false>(base_, p, last, limit);
    if (p == last) break;
    if (plausible_record(p, ref_sec)) return p;
  }
  return to;
}

// pcapng: the first plausible enhanced packet block in [from, to), or `to`. Blocks start on
// 4-byte boundaries of the file (every block length is a multiple of 4), and a packet
// block's length is repeated in its trailer, which makes a false start rare.
std::size_t CaptureParser::find_block(std::size_t from, std::size_t to) const noexcept {
  if (size_ < kEpbMin) return to;
  const std::size_t last = std::min(to, size_ - kEpbMin + 1);
  for (std::size_t p = (from + 3) & ~std::size_t{3}; p < last; p += 4) {
    if (u32(p) != kEpb) [[likely]]
      continue;
    const std::uint32_t len = u32(p + 4);
    if (len < kEpbMin || len % 4 != 0 || len > size_ - p) continue;
    if (u32(p + 20) > len - kEpbMin || u32(p + len - 4) != len) continue;
    return p;
  }
  return to;
}

// The next record's place is known only once this one's header is read: walked one by one,
// the file is a chain of misses through memory (~100 ns each), and requesting every line
// ahead of the reader streams the whole file, payload included, through the caches.
// Instead, ahead of the reader, kLanes chains are walked side by side, each through its own
// kSegment bytes, so that kLanes misses are under way at once and only the lines holding a
// record header and the packet headers after it are fetched. Lane 0 continues the chain the
// reader is on; every other lane starts at the first plausible record header of its segment
// (a record ends where the next begins: once a lane is on the true chain, it stays on it).
// The places found are queued (ahead_) for the reader, which still checks each against the
// end of the record before it: a lane that guessed wrong costs time, never a frame.
// pcapng: the same over blocks (a lane stops at a section header: the byte order may change
// there, and the reader takes it from that place on).
void CaptureParser::walk_ahead(std::size_t pos) {
  const std::size_t end = std::min(size_, end_);
  // Lane 0 starts on the reader's record when the reader has caught up with the walk, else
  // where the last walk's chain went on (unknown: found like the other lanes' starts).
  const std::size_t from = std::max(walked_, pos);
  const std::size_t first = walked_ <= pos ? pos : walk_next_;
  constexpr std::size_t kPerLane = kSegment / kPcapRecord + 1;
  if (!lane_buf_) lane_buf_ = std::make_unique_for_overwrite<std::size_t[]>(kLanes * kPerLane);
  const std::uint32_t ref_sec = pcapng_ ? 0 : u32(pos);
  const std::size_t header = pcapng_ ? kBlockHeader : kPcapRecord;
  std::array<std::size_t, kLanes> at{}, stop{}, count{};
  std::size_t lanes = 0;
  for (std::size_t seg = from; lanes < kLanes && seg < end; seg += kSegment, ++lanes) {
    stop[lanes] = std::min(seg + kSegment, end);
    for (std::size_t l = seg; l < std::min(seg + 512, end); l += 64) __builtin_prefetch(base_ + l);
  }
  for (std::size_t k = 0; k < lanes; ++k) {
    at[k] = k == 0 && first != kNoRecord ? first
            : pcapng_                    ? find_block(from + k * kSegment, stop[k])
                                         : find_record(from + k * kSegment, stop[k], ref_sec);
  }
  // Round robin: one record per lane per turn, the loads of a turn independent of each other.
  // Instantiated per format and byte order, so that a step is a load, a check and an add.
  auto walk = [&]<bool kNg, bool kSwap>() {
    auto load = [b = base_](std::size_t o) { return load32<kSwap>(b, o); };
    std::array<std::size_t*, kLanes> out{};
    for (std::size_t k = 0; k < lanes; ++k) out[k] = lane_buf_.get() + k * kPerLane;
    for (bool busy = true; busy;) {
      busy = false;
      for (std::size_t k = 0; k < lanes; ++k) {
        const std::size_t p = at[k];
        if (p >= stop[k]) continue;
        if (end - p < header) [[unlikely]] {
          at[k] = end;
          continue;
        }
        busy = true;
        __builtin_prefetch(base_ + p + 64);
        *out[k]++ = p;
        if constexpr (kNg) {
          const std::uint32_t len = load(p + 4);
          at[k] = load(p) == kShb || len < kBlockHeader || len % 4 != 0 ? end : p + len;
        } else {
          const std::uint32_t caplen = load(p + 8);
          at[k] = caplen > kMaxFrame ? end : p + kPcapRecord + caplen;
        }
      }
    }
    for (std::size_t k = 0; k < lanes; ++k)
      count[k] = static_cast<std::size_t>(out[k] - (lane_buf_.get() + k * kPerLane));
  };
  if (pcapng_) {
    swap_ ? walk.template operator()<true, true>() : walk.template operator()<true, false>();
  } else {
    swap_ ? walk.template operator()<false, true>() : walk.template operator()<false, false>();
  }
  // The queue: what the reader has not taken yet, then the new places, then kQueuePad
  // places that match no record, so that record_at() needs no bound check.
  ahead_.resize(ahead_end_);
  ahead_.erase(ahead_.begin(), ahead_.begin() + static_cast<std::ptrdiff_t>(ahead_next_));
  ahead_next_ = 0;
  for (std::size_t k = 0; k < lanes; ++k)
    ahead_.insert(ahead_.end(), lane_buf_.get() + k * kPerLane,
                  lane_buf_.get() + k * kPerLane + count[k]);
  ahead_end_ = ahead_.size();
  ahead_.resize(ahead_end_ + kQueuePad, kNoRecord);
  walked_ = lanes == 0 ? end : stop[lanes - 1];
  walk_next_ = lanes == 0 || at[lanes - 1] >= end ? kNoRecord : at[lanes - 1];
}

CaptureParser CaptureParser::split() const {
  CaptureParser p;
  p.base_ = base_;
  p.size_ = size_;
  p.name_ = name_;
  p.swap_ = swap_;
  p.link_ = link_;
  p.first_link_ = first_link_;
  p.frac_ns_ = frac_ns_;
  p.pos_ = size_;
  // The first record's second, from the file's first bytes (a window at offset 0, or the
  // whole file): the reference of first_record()'s guesses.
  if (!pcapng_ && size_ >= kPcapHeader + kPcapRecord && base_ != nullptr)
    p.first_sec_ = u32(kPcapHeader);
  return p;
}

void CaptureParser::set_range(std::size_t from, std::size_t stop) noexcept {
  pos_ = std::min(from, size_);
  stop_ = stop;
  end_ = stop;
  walked_ = 0;
  walk_next_ = kNoRecord;
  ahead_.assign(kQueuePad, kNoRecord);
  ahead_next_ = ahead_end_ = 0;
  error_.reset();
}

std::size_t CaptureParser::first_record(std::size_t from, std::size_t to) const noexcept {
  if (pcapng_ || !first_sec_) return to;
  return find_record(from, std::min(to, size_), *first_sec_);
}

// The place of the record at `pos` for the reader to load from: the look-ahead's queued
// place when it is pos, pos itself otherwise (queued places before pos dropped).
[[gnu::always_inline]] inline std::size_t CaptureParser::record_at(std::size_t pos) noexcept {
  static_assert(kQueuePad > kReadAhead);
  // The lanes' lines may have left the nearer caches since: asked for again, ahead (past
  // the end of the queue, a padding place: a prefetch of a wrong address never faults; the
  // address is computed in integers, where kNoRecord wraps without undefined behaviour).
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(base_) +
                                                   ahead_[ahead_next_ + kReadAhead]));
  const std::size_t q = ahead_[ahead_next_];
  if (q == pos) [[likely]] {
    ++ahead_next_;
    return q;
  }
  if (ahead_next_ < ahead_end_) {
    ++lookahead_misses_;
    while (ahead_next_ < ahead_end_ && ahead_[ahead_next_] < pos) ++ahead_next_;
    if (ahead_next_ < ahead_end_ && ahead_[ahead_next_] == pos) ++ahead_next_;
  }
  return pos;
}

std::size_t CaptureParser::pcap_batch(std::span<observe::FrameRef> frames, observe::LinkType& link,
                                      std::uint32_t* wire) {
  link = link_;
  // Once per batch (a batch is far shorter than kWalkLow).
  if (lookahead_ && walked_ < std::min(size_, end_) && walked_ < pos_ + kWalkLow &&
      size_ - pos_ >= kPcapRecord)
    walk_ahead(pos_);
  return swap_ ? pcap_records<true>(frames, wire) : pcap_records<false>(frames, wire);
}

template <bool kSwap>
std::size_t CaptureParser::pcap_records(std::span<observe::FrameRef> frames, std::uint32_t* wire) {
  auto load = [b = base_](std::size_t at) { return load32<kSwap>(b, at); };
  std::size_t n = 0;
  std::size_t pos = pos_;
  const std::size_t end = size_, last = std::min(end, stop_);
  const std::int64_t frac_ns = frac_ns_;
  while (n < frames.size() && pos < last) {
    // Loaded from the queued place, which does not wait for the record before to be read
    // (the compiler must not use pos instead, equal as it is).
    std::size_t at = record_at(pos);
    asm("" : "+r"(at));
    if (end - at < kPcapRecord) [[unlikely]] {
      if (!last_) break;  // the rest is in the next window
      corrupt(at, fmt::format("truncated record header ({} of {} bytes)", end - at, kPcapRecord));
      break;
    }
    const std::uint32_t sec = load(at), frac = load(at + 4), caplen = load(at + 8);
    if (caplen > kMaxFrame) [[unlikely]] {
      corrupt(at,
              fmt::format("record length {} is not plausible (garbage record header?)", caplen));
      break;
    }
    if (caplen > end - at - kPcapRecord) [[unlikely]] {
      if (!last_) break;
      corrupt(at, fmt::format("truncated record: {} bytes of frame announced, {} left", caplen,
                              end - at - kPcapRecord));
      break;
    }
    if (wire) wire[n] = load(at + 12);
    frames[n].ts_ns =
        static_cast<std::int64_t>(sec) * 1'000'000'000 + static_cast<std::int64_t>(frac) * frac_ns;
    frames[n].frame = {reinterpret_cast<const std::byte*>(base_ + at + kPcapRecord), caplen};
    ++n;
    pos = at + kPcapRecord + caplen;
  }
  pos_ = pos;
  return n;
}

std::int64_t CaptureParser::ticks_to_ns(const Interface& i, std::uint64_t ticks) const noexcept {
  std::uint64_t ns;
  if (i.binary) {
    ns = static_cast<std::uint64_t>((static_cast<U128>(ticks) * kNanosPerSecond) >> i.div);
  } else if (i.div == 1) {
    ns = ticks * i.mul;  // wraps for absurd times: no undefined behaviour
  } else {
    ns = ticks / i.div;
  }
  return static_cast<std::int64_t>(ns + static_cast<std::uint64_t>(i.offset_ns));
}

// Whether the section header block at `at` lies whole in the avail bytes of the window (its
// length in its own byte order; anything unreadable is left to section_header()).
bool CaptureParser::section_header_fits(std::size_t at, std::size_t avail) const noexcept {
  if (avail < 28) return false;
  std::uint32_t bom, len;
  std::memcpy(&bom, base_ + at + 8, 4);
  std::memcpy(&len, base_ + at + 4, 4);
  if (bom == __builtin_bswap32(kByteOrderMagic)) len = __builtin_bswap32(len);
  return bom != kByteOrderMagic && bom != __builtin_bswap32(kByteOrderMagic) ? true : len <= avail;
}

// A section header block at `at` (avail bytes from there to the end): sets the byte order,
// forgets the previous section's interfaces, moves past it. False (error set) if corrupt.
bool CaptureParser::section_header(std::size_t at, std::size_t avail) {
  if (avail < 28) {
    corrupt(at, fmt::format("truncated section header block ({} bytes)", avail));
    return false;
  }
  std::uint32_t bom;
  std::memcpy(&bom, base_ + at + 8, 4);
  if (bom == kByteOrderMagic) {
    swap_ = false;
  } else if (bom == __builtin_bswap32(kByteOrderMagic)) {
    swap_ = true;
  } else {
    corrupt(at, fmt::format("bad byte-order magic 0x{:08x} in the section header", bom));
    return false;
  }
  const std::uint32_t len = u32(at + 4);
  if (len < 28 || len % 4 != 0 || len > avail) {
    corrupt(at, fmt::format("bad section header block length {}", len));
    return false;
  }
  if (u32(at + len - 4) != len) {
    corrupt(at, fmt::format("section header block length {} does not match its trailer {}", len,
                            u32(at + len - 4)));
    return false;
  }
  if (const std::uint16_t major = u16(at + 12); major != 1) {
    corrupt(at, fmt::format("unsupported pcapng version {}", major));
    return false;
  }
  ifaces_.clear();
  pos_ = at + len;
  return true;
}

bool CaptureParser::interface_description(std::size_t at, std::uint32_t len) {
  if (len < 20) {
    corrupt(at, fmt::format("interface description block too short ({} bytes)", len));
    return false;
  }
  Interface i;
  i.link = link_type_from_file(u16(at + 8));
  i.snaplen = u32(at + 12);
  const std::size_t end = at + len - 4;
  for (std::size_t o = at + 16; end - o >= 4;) {
    const std::uint16_t code = u16(o), olen = u16(o + 2);
    const std::size_t padded = (std::size_t{olen} + 3) & ~std::size_t{3};
    if (code == 0) break;  // opt_endofopt
    if (padded > end - o - 4) {
      corrupt(o, fmt::format("interface option {} of {} bytes overruns its block", code, olen));
      return false;
    }
    const std::size_t v = o + 4;
    if (code == 9 && olen >= 1) {  // if_tsresol
      const std::uint8_t r = base_[v];
      const unsigned exp = r & 0x7F;
      if (r & 0x80) {
        if (exp > 63) {
          corrupt(v, fmt::format("unsupported if_tsresol 2^-{}", exp));
          return false;
        }
        i.binary = true;
        i.div = exp;
      } else if (exp <= 9) {
        i.mul = 1;
        for (unsigned k = exp; k < 9; ++k) i.mul *= 10;
        i.div = 1;
      } else if (exp <= 19) {
        i.mul = 1;
        i.div = 1;
        for (unsigned k = 9; k < exp; ++k) i.div *= 10;
      } else {
        corrupt(v, fmt::format("unsupported if_tsresol 10^-{}", exp));
        return false;
      }
    } else if (code == 14 && olen == 8) {  // if_tsoffset: seconds
      std::uint64_t secs;
      std::memcpy(&secs, base_ + v, 8);
      if (swap_) secs = __builtin_bswap64(secs);
      i.offset_ns = static_cast<std::int64_t>(secs * kNanosPerSecond);
    }
    o = v + padded;
  }
  if (ifaces_.size() >= 65536) {
    corrupt(at, "more than 65536 interfaces in one section");
    return false;
  }
  ifaces_.push_back(i);
  return true;
}

std::size_t CaptureParser::pcapng_batch(std::span<observe::FrameRef> frames,
                                        observe::LinkType& link, std::uint32_t* wire) {
  std::size_t n = 0;
  while (n < frames.size() && pos_ != size_) {
    if (lookahead_ && walked_ < size_ && walked_ < pos_ + kWalkLow && size_ - pos_ >= kBlockHeader)
        [[unlikely]]
      walk_ahead(pos_);
    // As in pcap_batch: loaded from the queued place.
    std::size_t at = record_at(pos_);
    asm("" : "+r"(at));
    const std::size_t avail = size_ - at;
    if (avail < kBlockHeader) {
      if (!last_) break;  // the rest is in the next window
      corrupt(at, fmt::format("truncated block header ({} of 12 bytes)", avail));
      break;
    }
    const std::uint32_t type = u32(at);
    if (type == kShb) {
      if (!last_ && !section_header_fits(at, avail)) break;
      if (!section_header(at, avail)) break;
      continue;
    }
    const std::uint32_t len = u32(at + 4);
    if (len < 12 || len % 4 != 0) {
      corrupt(at, fmt::format("bad block length {} (block type 0x{:x})", len, type));
      break;
    }
    if (len > avail) {
      if (!last_) break;
      corrupt(at, fmt::format("truncated block: {} bytes announced, {} left", len, avail));
      break;
    }
    if (const std::uint32_t trailer = u32(at + len - 4); trailer != len) {
      corrupt(at, fmt::format("block length {} does not match its trailer {}", len, trailer));
      break;
    }
    std::uint32_t ifid = 0, caplen = 0, origlen = 0;
    std::uint64_t ticks = 0;
    std::size_t data = 0;
    bool has_time = true;
    switch (type) {
      case kEpb:
      case kOpb:
        if (len < 32) {
          corrupt(at, fmt::format("packet block too short ({} bytes)", len));
          return n;
        }
        ifid = type == kEpb ? u32(at + 8) : u16(at + 8);
        ticks = (std::uint64_t{u32(at + 12)} << 32) | u32(at + 16);
        caplen = u32(at + 20);
        origlen = u32(at + 24);
        data = at + 28;
        if (caplen > len - 32) {
          corrupt(at, fmt::format("captured length {} overruns its {}-byte block", caplen, len));
          return n;
        }
        break;
      case kSpb:
        if (len < 16) {
          corrupt(at, fmt::format("simple packet block too short ({} bytes)", len));
          return n;
        }
        origlen = u32(at + 8);
        data = at + 12;
        caplen = std::min<std::uint32_t>(origlen, len - 16);
        has_time = false;
        break;
      case kIdb:
        if (!interface_description(at, len)) return n;
        pos_ = at + len;
        continue;
      default:  // statistics, name resolution, custom …: nothing for us
        pos_ = at + len;
        continue;
    }
    if (ifid >= ifaces_.size()) {
      corrupt(at, fmt::format("packet of interface {} which has no description", ifid));
      break;
    }
    const Interface& i = ifaces_[ifid];
    if (!has_time && i.snaplen != 0) caplen = std::min(caplen, i.snaplen);
    if (n > 0 && i.link != link) break;  // a batch holds one link type
    link = i.link;
    if (has_time) last_ts_ = ticks_to_ns(i, ticks);
    if (wire) wire[n] = origlen;
    frames[n].ts_ns = last_ts_;
    frames[n].frame = {reinterpret_cast<const std::byte*>(base_ + data), caplen};
    ++n;
    pos_ = at + len;
  }
  return n;
}

}  // namespace flowmark::capture
