// flowmark::capture — frames from a capture file (pcap or pcapng), standard input or a
// live interface, through libpcap, for the observer (which never links libpcap itself).
//
//   FM_TRY(auto src, PcapSource::open_file("trace.pcapng", "tcp port 443"));
//   Frame f;
//   while (true) {
//     FM_TRY(bool more, src.next(f));     // a corrupt file: an error naming file and offset
//     if (!more) break;
//     observer.on_packet(f.ts_ns, src.link_type(), f.data);
//   }
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "flowmark/core/result.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::capture {

struct Frame {
  std::int64_t ts_ns = 0;           // capture timestamp, nanoseconds since the epoch
  std::span<const std::byte> data;  // the captured bytes (valid until the next call)
  std::uint32_t wire_length = 0;    // the frame's length on the wire
};

struct LiveOptions {
  int snaplen = 262144;
  bool promiscuous = false;
  int buffer_bytes = 64 << 20;  // kernel ring buffer
};

class PcapSource {
 public:
  // A pcap or pcapng file; "-" reads standard input. `filter`: a BPF expression ("" none).
  static Result<PcapSource> open_file(std::string_view path, std::string_view filter = "");
  // A live interface in immediate mode.
  static Result<PcapSource> open_live(std::string_view iface, std::string_view filter = "",
                                      const LiveOptions& options = {});

  PcapSource(PcapSource&&) noexcept;
  PcapSource& operator=(PcapSource&&) noexcept;
  ~PcapSource();

  // The next frame: true, false at the end of the input (or after break_loop()), or an
  // error (Errc::kMalformed for a corrupt file) naming the source and the byte offset.
  Result<bool> next(Frame& out);
  // Safe from a signal handler: the next call to next() returns false.
  void break_loop() noexcept;
  // Live: when on, next() also returns false after ~100 ms without a frame, with idle() true
  // (a pause, not the end), for a caller with other work between frames (the Python module
  // checks for Ctrl-C).
  void set_return_when_idle(bool on) noexcept;
  bool idle() const noexcept;

  observe::LinkType link_type() const noexcept { return link_; }
  std::string_view name() const noexcept { return name_; }
  // Packets the kernel dropped (live captures), or nullopt when not known (files).
  std::optional<std::uint64_t> drops() const noexcept;
  // Bytes read so far and the file's size (files only), for a progress line.
  std::uint64_t offset() const noexcept;
  std::optional<std::uint64_t> size() const noexcept { return size_; }

 private:
  PcapSource() = default;
  struct Handle;
  std::unique_ptr<Handle> h_;
  observe::LinkType link_ = observe::LinkType::kEthernet;
  std::string name_;
  std::optional<std::uint64_t> size_;
  bool live_ = false;
};

}  // namespace flowmark::capture
