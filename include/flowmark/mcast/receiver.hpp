// flowmark::mcast — receiving datagrams from one or more multicast groups.
//
// One socket for all groups of one address family (net::open_group_socket): bound to the
// port, joined to every group (any-source, or source-specific when sources are given),
// IP(V6)_MULTICAST_ALL off so that other groups on the same port never arrive, packet info
// on so each datagram says which group it came in on, kernel receive timestamps on, and a
// large receive buffer. Datagrams are read in batches with recvmmsg (net::DatagramReader);
// one larger than the buffer is delivered with truncated = true and its real size, never
// cut silently.
//
//   FM_TRY(auto rx, Receiver::open({.groups = {g}, .port = 59559}));
//   FM_TRY(auto batch, rx.receive());          // non-blocking; empty when nothing waits
//   for (const Datagram& d : batch) use(d.source, d.destination, d.payload);
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <span>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/mcast/defaults.hpp"
#include "flowmark/net/datagram.hpp"

namespace flowmark::mcast {

// Datagrams and their batched reader are flowmark::net's (net/datagram.hpp).
using net::Datagram;
using net::DatagramReader;

struct ReceiverConfig {
  std::vector<IpAddress> groups;       // every group to join (one address family)
  std::vector<IpAddress> sources;      // if any: join (S, G) for each source and group
  std::uint16_t port = kDefaultPort;   // 0: an ephemeral port (see Receiver::port())
  std::optional<Interface> iface;      // join on this interface (none: by route / scope)
  std::optional<IpAddress> bind;       // local bind address (default: the wildcard)
  SendOptions send;                    // for replies and forwarding on the same socket
  int rcvbuf = kDefaultReceiveBuffer;  // SO_RCVBUF in bytes (0: kernel default)
  std::size_t buffer_size = 65536;     // largest datagram read whole
  std::size_t batch = 64;              // datagrams per recvmmsg
};

class Receiver {
 public:
  static Result<Receiver> open(const ReceiverConfig& config);

  Result<std::span<const Datagram>> receive() { return reader_.read(fd_.get()); }
  // Sends from the receiving socket (source port = the group port), e.g. a reply.
  Result<void> send_to(const Endpoint& to, std::span<const std::byte> payload);

  int fd() const noexcept { return fd_.get(); }
  std::uint16_t port() const noexcept { return port_; }
  Family family() const noexcept { return family_; }

 private:
  explicit Receiver(const ReceiverConfig& c) : reader_(c.buffer_size, c.batch) {}
  UniqueFd fd_;
  DatagramReader reader_;
  std::uint16_t port_ = 0;
  Family family_ = Family::kV4;
};

}  // namespace flowmark::mcast
