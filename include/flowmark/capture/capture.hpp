// flowmark::capture — one interface over every way frames reach the observer, in batches:
//   - regular pcap / pcapng files: mapped into memory and walked in place (file_parser.hpp),
//     no copy per frame; a --filter runs libpcap's BPF interpreter over each frame;
//   - standard input and other non-regular files: libpcap (PcapSource);
//   - live interfaces: AF_PACKET TPACKET_V3 (a memory-mapped ring of blocks the kernel
//     fills, filter attached to the socket) or libpcap in immediate mode.
// libpcap is loaded at run time on first use (src/capture/libpcap.hpp), not linked; when it
// cannot be loaded, what needs it fails with Errc::kUnsupported naming the package to install.
//
//   FM_TRY(auto cap, open_file_capture("trace.pcapng", ""));
//   std::array<observe::FrameRef, 256> batch;
//   observe::LinkType link;
//   while (true) {
//     FM_TRY(std::size_t n, cap->next_batch(batch, link));   // 0: end of input
//     if (n == 0) break;
//     observer.on_packets(link, std::span(batch).first(n));
//   }
// The frames stay valid until the next call to next_batch() (the capture owns the bytes).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "flowmark/capture/pcap_source.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::capture {

class CaptureParser;

// A live AF_PACKET socket's counters (PACKET_STATISTICS, struct tpacket_stats_v3), summed
// since it was opened: frames the kernel took for it after the filter (the dropped ones
// included), frames dropped for want of room in the ring, times the ring was full.
struct KernelStats {
  std::uint64_t packets = 0, drops = 0, freeze_q = 0;
};

class Capture {
 public:
  virtual ~Capture() = default;
  // Up to frames.size() frames of one link type (*link); 0 at the end of the input or
  // after break_loop(). A corrupt file gives the frames before the damage first, then an
  // Errc::kMalformed error naming the file and the byte offset.
  virtual Result<std::size_t> next_batch(std::span<observe::FrameRef> frames,
                                         observe::LinkType& link) = 0;
  // Safe from a signal handler: next_batch() returns 0 soon after.
  virtual void break_loop() noexcept = 0;
  virtual std::string_view name() const noexcept = 0;
  // Packets the kernel dropped (live captures) or nullopt (files).
  virtual std::optional<std::uint64_t> drops() const noexcept { return std::nullopt; }
  // Live AF_PACKET captures: the socket's counters; others nullopt.
  virtual std::optional<KernelStats> kernel_stats() const noexcept { return std::nullopt; }
  // Bytes read so far and the input's size (regular files), for a progress line.
  virtual std::uint64_t offset() const noexcept { return 0; }
  virtual std::optional<std::uint64_t> size() const noexcept { return std::nullopt; }
  // Live captures (AF_PACKET and libpcap): when on, next_batch() also returns 0 after ~100 ms
  // without a frame (or when a signal interrupts its wait), with idle() true: a pause, not
  // the end. For a caller with other work between batches (the Python module checks for
  // Ctrl-C). Files ignore it (idle() stays false).
  virtual void set_return_when_idle(bool on) noexcept { (void)on; }
  // True when the frames next_batch() returns stay valid until the capture is destroyed (a
  // mapped file), not only until the next call: they can be handed to other threads by
  // pointer (`--workers`); otherwise they are copied.
  virtual bool frames_outlive_batch() const noexcept { return false; }
  // A pcap file read with read(2) without a filter (open_read_file): its parser (after the
  // file header), descriptor and size, for threads that share the reading instead of
  // next_batch() (`--workers`: each preads chunks of the file into buffers of its own and
  // walks them with a CaptureParser::split()). Others: parser nullptr.
  struct SharedFile {
    const CaptureParser* parser = nullptr;
    int fd = -1;
    std::uint64_t size = 0;
  };
  virtual SharedFile file_to_share() const noexcept { return {}; }
  // break_loop() was called.
  virtual bool stopping() const noexcept { return false; }
  virtual bool idle() const noexcept { return false; }
};

// A capture file: "-" is standard input. Regular files go through the memory-mapped reader,
// anything else through libpcap. `filter`: a BPF expression ("" for none); a bad one is
// Errc::kInvalidArgument.
Result<std::unique_ptr<Capture>> open_file_capture(std::string_view path,
                                                   std::string_view filter = "");

// The memory-mapped reader alone (regular files only).
Result<std::unique_ptr<Capture>> open_mapped_file(std::string_view path,
                                                  std::string_view filter = "");

// The same reader over read(2) into one buffer of 256 KiB, refilled (regular files only):
// no mapping, so no page-table work per page of the file, at the cost of a copy; frames
// are valid until the next batch only (frames_outlive_batch() false).
Result<std::unique_ptr<Capture>> open_read_file(std::string_view path,
                                                std::string_view filter = "");

enum class LiveBackend { kAfPacket, kPcap };

// A live interface. kAfPacket: a TPACKET_V3 ring (Ethernet-like and raw-IP interfaces);
// kPcap: libpcap in immediate mode.
Result<std::unique_ptr<Capture>> open_live_capture(std::string_view iface, std::string_view filter,
                                                   LiveBackend backend,
                                                   const LiveOptions& options = {});

// `n` AF_PACKET TPACKET_V3 sockets on `iface` in one fanout group (PACKET_FANOUT_HASH with
// PACKET_FANOUT_FLAG_DEFRAG; the group id chosen by the kernel, unique in the network
// namespace): the kernel hands each frame to one of them by its symmetric flow hash, IPv4
// fragments reassembled first. Each has its ring (options.buffer_bytes / n, at least 16 MiB)
// and the filter. No frame reaches a socket before all are in the group. Errc::kUnsupported
// when the kernel refuses the fanout (the caller may fall back to one socket).
Result<std::vector<std::unique_ptr<Capture>>> open_afpacket_fanout(std::string_view iface,
                                                                   std::string_view filter,
                                                                   std::size_t n,
                                                                   const LiveOptions& options = {});

}  // namespace flowmark::capture
