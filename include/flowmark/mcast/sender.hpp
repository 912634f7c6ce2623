// flowmark::mcast — sending datagrams to a multicast group.
//
// One socket for the sender's life. send() is one sendto; send_batch() hands many
// datagrams to the kernel in as few sendmmsg calls as possible (64 per call).
//
//   FM_TRY(auto tx, Sender::open({.group = {group, 59559}, .send = {.ttl = 1}}));
//   FM_TRY_VOID(tx.send(std::as_bytes(std::span(text))));
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/mcast/defaults.hpp"

namespace flowmark::mcast {

struct SenderConfig {
  Endpoint group;                 // destination group and port
  SendOptions send;               // interface, TTL, loopback
  std::optional<IpAddress> bind;  // local source address (default: the kernel picks)
  std::uint16_t bind_port = 0;    // local source port (0: ephemeral)
  int sndbuf = 0;                 // SO_SNDBUF in bytes (0: kernel default)
  // UDP generic segmentation offload: send_batch hands runs of equal-sized datagrams to
  // the kernel as one packet that is cut into datagrams at the last moment (one trip
  // through the stack per run instead of per datagram). Receivers see the same
  // datagrams; local firewall rules on the sending host see one packet per run. Falls
  // back to sendmmsg where the kernel or the path cannot do it.
  bool gso = false;
};

class Sender {
 public:
  static constexpr std::size_t kBatch = 64;
  static constexpr std::size_t kGsoSegments = 64;  // UDP_MAX_SEGMENTS on older kernels

  static Result<Sender> open(const SenderConfig& config);

  // One datagram (one sendto). A payload over the UDP maximum is Errc::kInvalidArgument.
  Result<void> send(std::span<const std::byte> payload);
  // Every payload in order (sendmmsg, or UDP GSO when configured); returns how many the
  // kernel accepted. A datagram the kernel
  // refuses on its own (EPERM from a firewall rule, ENOBUFS) is counted in refused() and
  // skipped; any other error stops the batch and is returned.
  Result<std::size_t> send_batch(std::span<const std::span<const std::byte>> payloads);

  std::uint64_t refused() const noexcept { return refused_; }
  int last_refusal_errno() const noexcept { return last_refusal_; }

  int fd() const noexcept { return fd_.get(); }
  const Endpoint& group() const noexcept { return group_; }
  // The bound local endpoint (after the first send, when the port was ephemeral).
  Endpoint local() const;

 private:
  Sender() = default;
  // How many datagrams from the front of `payloads` can go in one GSO send.
  std::size_t gso_run(std::span<const std::span<const std::byte>> payloads) const noexcept;
  // One run as one GSO packet: the count sent (0 if refused), or nothing if GSO cannot be
  // used for it (the caller sends it another way).
  Result<std::optional<std::size_t>> send_gso(std::span<const std::span<const std::byte>> run);
  Result<std::size_t> send_mmsg(std::span<const std::span<const std::byte>> batch);

  UniqueFd fd_;
  Endpoint group_;
  sockaddr_storage dst_{};
  socklen_t dst_len_ = 0;
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iov_;
  std::uint64_t refused_ = 0;
  int last_refusal_ = 0;
  bool gso_ = false;
  std::size_t gso_max_size_ = SIZE_MAX;  // segment sizes from here up failed (path MTU)
};

}  // namespace flowmark::mcast
