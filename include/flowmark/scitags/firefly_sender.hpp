// flowmark::scitags — sending fireflies: one UDP datagram per event to the flow's
// destination (port 10514) and to any collectors, which may be IPv4 or IPv6 unicast
// addresses or multicast groups (TTL and interface apply to the groups).
//
// One socket per address family, opened on first use and kept.
//
//   FM_TRY(auto to, net::resolve_endpoint("collector.example.org", kFireflyPort));
//   FireflySender tx({.ttl = 4});
//   FM_TRY_VOID(tx.send(to, wire));
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::scitags {

struct FireflySenderConfig {
  int ttl = 1;                     // TTL / hop limit for multicast groups, 0..255
  std::optional<Interface> iface;  // outgoing interface for multicast groups
  int sndbuf = 0;                  // SO_SNDBUF in bytes (0: kernel default)
  // send_many() hands consecutive datagrams of one destination and one size (the last of a
  // run may be shorter) to the kernel as one UDP GSO buffer (UDP_SEGMENT, Linux >= 4.18): the
  // same datagrams on the wire, byte for byte, for about half the kernel's cost per datagram.
  // Falls back to one message per datagram where the kernel or the path cannot do it.
  bool gso = true;
};

class FireflySender {
 public:
  static constexpr std::size_t kBatch = 64;        // messages per sendmmsg
  static constexpr std::size_t kGsoSegments = 64;  // datagrams per GSO message (kernel: 64+)

  explicit FireflySender(FireflySenderConfig config = {});

  // Checks a destination before anything is sent: a multicast group must be usable with
  // the configured interface (link-scoped IPv6 groups need one), the port not 0. Returns
  // the destination as it will be used (scope id filled in from the interface).
  Result<Endpoint> prepare(const Endpoint& to) const;

  // One datagram to `to` (a prepared destination).
  Result<void> send(const Endpoint& to, std::string_view datagram);

  // Datagrams to prepared destinations, in order, by sendmmsg (one call per run of one address
  // family, kBatch messages at most); with `gso`, a run of datagrams to one destination of
  // one size (up to kGsoSegments, the last one may be shorter) is one message of that call.
  // `errors[i]` gets 0 when the kernel took datagram i, or its errno; a failed datagram never
  // stops the others. `errors` has messages.size() elements.
  struct Message {
    const Endpoint* to;
    std::string_view datagram;
  };
  void send_many(std::span<const Message> messages, std::span<int> errors);

  // The same datagram `count` times to `to` (with `gso`, as GSO buffers of kGsoSegments, four
  // a call, as send_many() sends a run; else by sendmmsg in batches of kBatch), paced at
  // `rate` datagrams a second (0: as fast as the kernel takes them). Returns how many the
  // kernel accepted; datagrams it refuses on its own (ENOBUFS, EPERM from a firewall) are
  // skipped and counted in refused(). For benchmarks.
  Result<std::uint64_t> send_repeated(const Endpoint& to, std::string_view datagram,
                                      std::uint64_t count, double rate);

  std::uint64_t refused() const noexcept { return refused_; }

 private:
  Result<int> socket_for(Family family);
  // How many of `messages` (from the first) go as one GSO message: 1 when they cannot.
  std::size_t gso_run(std::span<const Message> messages) const noexcept;
  // After a GSO message failed with `err`: true when the kernel or path refused GSO itself
  // (then GSO is off, or off for segments of `segment` bytes and more).
  bool gso_refused(int err, std::size_t segment) noexcept;
  static int send_one(int fd, const Message& m) noexcept;  // 0 or errno

  FireflySenderConfig config_;
  bool gso_;
  std::size_t gso_max_size_ = 65535;  // a segment this size or larger is not sent by GSO
  std::vector<iovec> iov_;            // send_many's datagrams
  UniqueFd fd4_, fd6_;
  std::uint64_t refused_ = 0;
};

}  // namespace flowmark::scitags
