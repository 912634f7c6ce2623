// pcap / pcapng walked in place. Every length read from the file is checked against what is
// left before it is used: the parser is fuzzed (tests/fuzz/fuzz_capture_file.cpp).
#include "flowmark/capture/file_parser.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

#include <fmt/format.h>

namespace flowmark::capture {

namespace {

constexpr std::uint32_t kPcapMicro = 0xa1b2c3d4, kPcapNano = 0xa1b23c4d;
constexpr std::uint32_t kShb = 0x0A0D0D0A, kIdb = 1, kOpb = 2, kSpb = 3, kEpb = 6;
constexpr std::uint32_t kByteOrderMagic = 0x1A2B3C4D;
constexpr std::size_t kPcapHeader = 24, kPcapRecord = 16;
// A record claiming more than this is a garbage header, not a frame (libpcap's largest
// snap length is 256 KiB; some link types go beyond: leave room).
constexpr std::uint32_t kMaxFrame = 16u << 20;
constexpr std::uint64_t kNanosPerSecond = 1'000'000'000;
constexpr std::size_t kPrefetchAhead = 8192;
__extension__ using U128 = unsigned __int128;

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

Result<std::size_t> CaptureParser::next_batch(std::span<observe::FrameRef> frames,
                                              observe::LinkType& link,
                                              std::span<std::uint32_t> wire_lengths) {
  if (error_) return std::unexpected(*error_);
  std::uint32_t* wire = wire_lengths.size() >= frames.size() ? wire_lengths.data() : nullptr;
  const std::size_t n = pcapng_ ? pcapng_batch(frames, link, wire) : pcap_batch(frames, link, wire);
  if (n == 0 && error_) return std::unexpected(*error_);
  return n;
}

std::size_t CaptureParser::pcap_batch(std::span<observe::FrameRef> frames, observe::LinkType& link,
                                      std::uint32_t* wire) {
  link = link_;
  std::size_t n = 0;
  std::size_t pos = pos_;
  const std::size_t end = size_;
  // The next record's place is known only once this one's header is read: a chain of
  // misses through memory. Every line from here to kPrefetchAhead further is requested
  // before it is needed, so that the chain runs out of the caches.
  std::size_t pf = std::max(pf_, pos);
  while (n < frames.size() && pos != end) {
    for (const std::size_t to = std::min(pos + kPrefetchAhead, end); pf < to; pf += 64)
      __builtin_prefetch(base_ + pf);
    if (end - pos < kPcapRecord) {
      corrupt(pos, fmt::format("truncated record header ({} of {} bytes)", end - pos, kPcapRecord));
      break;
    }
    const std::uint32_t sec = u32(pos), frac = u32(pos + 4), caplen = u32(pos + 8);
    if (caplen > kMaxFrame) {
      corrupt(pos,
              fmt::format("record length {} is not plausible (garbage record header?)", caplen));
      break;
    }
    if (caplen > end - pos - kPcapRecord) {
      corrupt(pos, fmt::format("truncated record: {} bytes of frame announced, {} left", caplen,
                               end - pos - kPcapRecord));
      break;
    }
    if (wire) wire[n] = u32(pos + 12);
    frames[n].ts_ns =
        static_cast<std::int64_t>(sec) * 1'000'000'000 + static_cast<std::int64_t>(frac) * frac_ns_;
    frames[n].frame = {reinterpret_cast<const std::byte*>(base_ + pos + kPcapRecord), caplen};
    ++n;
    pos += kPcapRecord + caplen;
  }
  pos_ = pos;
  pf_ = pf;
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
    const std::size_t at = pos_, avail = size_ - pos_;
    if (avail < 12) {
      corrupt(at, fmt::format("truncated block header ({} of 12 bytes)", avail));
      break;
    }
    const std::uint32_t type = u32(at);
    if (type == kShb) {
      if (!section_header(at, avail)) break;
      continue;
    }
    const std::uint32_t len = u32(at + 4);
    if (len < 12 || len % 4 != 0) {
      corrupt(at, fmt::format("bad block length {} (block type 0x{:x})", len, type));
      break;
    }
    if (len > avail) {
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
