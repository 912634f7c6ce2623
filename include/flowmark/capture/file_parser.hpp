// flowmark::capture — pcap and pcapng files walked in memory, frame by frame, without a
// copy: the reader behind `flowmark observe -r FILE` for regular files (FileCapture maps the
// file and hands the bytes to a CaptureParser).
//
// pcap: both byte orders, microsecond (0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic.
// pcapng: section headers (a new section may change the byte order and resets the
// interfaces), interface descriptions (per-interface link type, snap length, if_tsresol and
// if_tsoffset), enhanced, simple and obsolete packet blocks; every other block is skipped.
// A frame of a simple packet block has no time of its own: it takes the previous frame's.
//
//   FM_TRY(auto parser, CaptureParser::open(bytes, "trace.pcapng"));
//   std::array<observe::FrameRef, 256> batch;
//   observe::LinkType link;
//   while (true) {
//     FM_TRY(std::size_t n, parser.next_batch(batch, link));   // corrupt: error with offset
//     if (n == 0) break;
//     observer.on_packets(link, std::span(batch).first(n));
//   }
// The frames point into `bytes`: the caller owns them and keeps them alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flowmark/core/result.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::capture {

class CaptureParser {
 public:
  // Reads the file header (a pcap global header or a pcapng section header block). An
  // unknown magic or a short header is an Errc::kMalformed error naming `name`.
  static Result<CaptureParser> open(std::span<const std::byte> bytes, std::string name);

  // Up to frames.size() frames, all of one link type (*link): 0 at the end of the input.
  // wire_lengths, when not empty (at least frames.size() long), receives each frame's
  // length on the wire. A corrupt record (truncated, garbage header, bad block length) is an
  // Errc::kMalformed error naming the file and the byte offset of the record; the frames
  // before it are returned first, the error comes with the next call (and every later one).
  Result<std::size_t> next_batch(std::span<observe::FrameRef> frames, observe::LinkType& link,
                                 std::span<std::uint32_t> wire_lengths = {});

  // A file read in pieces (FileCapture's read mode): from now on the input is the file's
  // bytes [start, start + len), at `data` (the first window is the one given to open(), at
  // offset 0). `last`: the window reaches the end of the file. A record that runs past the
  // end of a window that is not the last ends the batch (next_batch() returns 0 when not
  // even one frame fits): the caller reads on, keeping the bytes from offset() on, and sets
  // the next window; at the end of the last window it is corrupt as with a whole file.
  // Places stay file offsets (errors name them). The look-ahead walk is off in this mode:
  // the window was just written by read() and is in the caches.
  void set_window(const std::byte* data, std::uint64_t start, std::size_t len, bool last) noexcept;
  // Whether the input is the whole file, or its last window.
  bool last_window() const noexcept { return last_; }

  // Bytes consumed so far (the offset of the next record).
  std::uint64_t offset() const noexcept { return pos_; }
  bool pcapng() const noexcept { return pcapng_; }
  // Records (pcapng: blocks) the look-ahead had not placed where the reader found them (it
  // started a chain on a frame's bytes that looked like a record header): time lost, no
  // frame.
  std::uint64_t lookahead_misses() const noexcept { return lookahead_misses_; }
  // The link type of the first interface (pcapng: the first interface description found
  // before any packet; Ethernet when there is none), e.g. to compile a filter up front.
  observe::LinkType first_link() const noexcept { return first_link_; }

  // For threads that share the reading of one pcap file (`flowmark observe --workers`: each
  // walks its own chunks, read into buffers of its own with set_window()): a parser of the
  // same bytes and file header, with no place yet (set_range() first). Called while the
  // input holds the file's first record (before the first window moves on). pcap only
  // (pcapng carries state from block to block).
  CaptureParser split() const;
  // Reads the records from `from` (a record's place) up to the first one that starts at or
  // after `stop`: next_batch() then gives 0, and offset() is that record's place (or the end
  // of the file). Errors as for the whole file (offsets in the file); cleared here.
  void set_range(std::size_t from, std::size_t stop) noexcept;
  // The first place in [from, to) that looks like a pcap record header (a guess, for a
  // chunk's first record: its time within a day of the file's first record; a parser made
  // by split()), or `to`.
  std::size_t first_record(std::size_t from, std::size_t to) const noexcept;
  std::span<const std::byte> bytes() const noexcept {
    return {reinterpret_cast<const std::byte*>(base_), size_};
  }

 private:
  struct Interface {
    observe::LinkType link = observe::LinkType::kEthernet;
    std::uint32_t snaplen = 0;
    std::uint64_t mul = 1000, div = 1;  // ns = ticks * mul / div
    bool binary = false;                // ticks of 2^-exp seconds (exp in div)
    std::int64_t offset_ns = 0;         // if_tsoffset
  };

  CaptureParser() = default;
  std::uint32_t u32(std::size_t at) const noexcept;
  std::uint16_t u16(std::size_t at) const noexcept;
  std::size_t pcap_batch(std::span<observe::FrameRef> frames, observe::LinkType& link,
                         std::uint32_t* wire);
  template <bool kSwap>
  std::size_t pcap_records(std::span<observe::FrameRef> frames, std::uint32_t* wire);
  std::size_t pcapng_batch(std::span<observe::FrameRef> frames, observe::LinkType& link,
                           std::uint32_t* wire);
  // pcap: a record's second fraction is below this (10^6 µs, 10^9 ns).
  std::uint32_t frac_limit() const noexcept { return frac_ns_ == 1 ? 1'000'000'000u : 1'000'000u; }
  bool plausible_record(std::size_t at, std::uint32_t ref_sec) const noexcept;
  std::size_t find_record(std::size_t from, std::size_t to, std::uint32_t ref_sec) const noexcept;
  std::size_t find_block(std::size_t from, std::size_t to) const noexcept;
  void walk_ahead(std::size_t pos);
  std::size_t record_at(std::size_t pos) noexcept;
  bool section_header(std::size_t at, std::size_t avail);
  bool section_header_fits(std::size_t at, std::size_t avail) const noexcept;
  bool interface_description(std::size_t at, std::uint32_t len);
  void corrupt(std::size_t at, std::string what);
  std::int64_t ticks_to_ns(const Interface& i, std::uint64_t ticks) const noexcept;

  // The file's byte at offset o is base_[o] for o in [window start, size_) (base_ is the
  // window's address less its start, computed in integers).
  const std::uint8_t* base_ = nullptr;
  std::size_t size_ = 0, pos_ = 0;
  bool last_ = true;       // the input ends at size_ (whole file or last window)
  bool lookahead_ = true;  // walk_ahead() runs (off for windows)
  // set_range(): no record at or after stop_ is read; the look-ahead walks up to end_.
  std::size_t stop_ = ~std::size_t{0}, end_ = ~std::size_t{0};
  // The look-ahead (walk_ahead): the lanes have walked up to walked_; walk_next_ is where
  // the last lane's chain went on from there (kNoRecord: unknown).
  static constexpr std::size_t kNoRecord = ~std::size_t{0};
  std::size_t walked_ = 0, walk_next_ = kNoRecord;
  // Record places the lanes found, in file order: [ahead_next_, ahead_end_) not taken yet,
  // then kQueuePad places of kNoRecord.
  static constexpr std::size_t kQueuePad = 17;
  std::vector<std::size_t> ahead_ = std::vector<std::size_t>(kQueuePad, kNoRecord);
  std::size_t ahead_next_ = 0, ahead_end_ = 0;
  std::uint64_t lookahead_misses_ = 0;
  std::unique_ptr<std::size_t[]> lane_buf_;
  std::string name_;
  bool pcapng_ = false, swap_ = false;
  // pcap
  observe::LinkType link_ = observe::LinkType::kEthernet;
  std::int64_t frac_ns_ = 1000;  // ns per unit of the record's second fraction
  // pcapng
  std::vector<Interface> ifaces_;
  std::int64_t last_ts_ = 0;
  observe::LinkType first_link_ = observe::LinkType::kEthernet;
  std::optional<Error> error_;
  std::optional<std::uint32_t> first_sec_;  // split(): the first record's second
};

// LINKTYPE_* of a capture file's header as the observer's LinkType (the FCS bits of a pcap
// header's link type field dropped).
observe::LinkType link_type_from_file(std::uint32_t linktype) noexcept;

}  // namespace flowmark::capture
