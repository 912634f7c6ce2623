// flowmark::capture — a cheap check, while a live interface is observed by several workers
// (one AF_PACKET fanout socket each), that the kernel really hands both directions of a flow
// to one socket: a TCP handshake whose SYN reached one worker and whose SYN-ACK another is a
// split flow. Each worker calls see() for its frames; only untagged Ethernet or raw IP frames
// carrying TCP with SYN set are looked at past a few header bytes. SYNs are remembered in a
// fixed table (a slot per hash of the flow's ordered endpoints, with a 32-bit tag of the same
// hash), shared lock-free by the workers; a SYN-ACK finding its flow's SYN from another worker
// counts one split. A slot overwritten by another flow's SYN only loses a check.
//
//   FanoutCheck check;
//   check.see(worker, link, frame);    // in each worker's thread, for every frame
//   if (check.splits() != 0) ...       // the kernel's fanout is not symmetric here
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "flowmark/observe/packet.hpp"

namespace flowmark::capture {

class FanoutCheck {
 public:
  FanoutCheck();
  void see(std::size_t worker, observe::LinkType link, std::span<const std::byte> frame) noexcept;
  std::uint64_t splits() const noexcept { return splits_.load(std::memory_order_relaxed); }
  std::uint64_t handshakes() const noexcept { return handshakes_.load(std::memory_order_relaxed); }

 private:
  static constexpr std::size_t kSlots = 1 << 16;
  std::unique_ptr<std::atomic<std::uint64_t>[]> slots_;  // tag << 8 | worker + 1; 0: empty
  std::atomic<std::uint64_t> splits_{0}, handshakes_{0};
};

}  // namespace flowmark::capture
