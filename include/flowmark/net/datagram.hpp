// flowmark::net — batched datagram reads (recvmmsg) on any UDP socket, with the control
// messages decoded: the destination address and interface (packet info, see
// enable_packet_info) and the kernel's receive time. A datagram larger than the buffer is
// delivered with truncated = true and its real size, never cut silently.
//
//   DatagramReader reader(65536, 64);           // 64 datagrams of up to 64 KiB per read
//   FM_TRY(auto batch, reader.read(fd));        // non-blocking; empty when nothing waits
//   for (const Datagram& d : batch) use(d.source, d.destination, d.payload);
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::net {

// One received datagram. `payload` points into the reader's buffer: valid until the
// next read.
struct Datagram {
  Endpoint source;
  IpAddress destination;      // the group (or the local unicast address) it was sent to
  std::uint32_t ifindex = 0;  // the interface it arrived on
  std::span<const std::byte> payload;
  std::size_t size = 0;  // the datagram's real size (> payload.size() if truncated)
  bool truncated = false;
  std::int64_t rx_time_ns = 0;  // kernel receive time, CLOCK_REALTIME
};

class DatagramReader {
 public:
  DatagramReader(std::size_t buffer_size, std::size_t batch);
  // Reads what is waiting (non-blocking). Empty span: nothing waiting.
  Result<std::span<const Datagram>> read(int fd);
  std::size_t buffer_size() const noexcept { return buffer_size_; }

 private:
  std::size_t buffer_size_;
  std::vector<std::byte> data_;
  std::vector<std::byte> control_;
  std::vector<sockaddr_storage> names_;
  std::vector<iovec> iov_;
  std::vector<mmsghdr> msgs_;
  std::vector<Datagram> out_;
};

}  // namespace flowmark::net
