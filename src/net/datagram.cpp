#include "flowmark/net/datagram.hpp"

#include <netinet/in.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace flowmark::net {
namespace {
constexpr std::size_t kControlSize =
    CMSG_SPACE(sizeof(in6_pktinfo)) + CMSG_SPACE(sizeof(timespec)) + 64;
}

DatagramReader::DatagramReader(std::size_t buffer_size, std::size_t batch)
    : buffer_size_(buffer_size),
      data_(buffer_size * batch),
      control_(kControlSize * batch),
      names_(batch),
      iov_(batch),
      msgs_(batch) {
  out_.reserve(batch);
}

Result<std::span<const Datagram>> DatagramReader::read(int fd) {
  const std::size_t batch = msgs_.size();
  // recvmmsg writes back only the lengths and flags of the headers it filled, so after
  // the first read only those of the previous read (out_.size()) need setting up again:
  // a read often returns a few datagrams, or none. All of them are set up on the first
  // read, after a failed one, and in a copy of a reader (whose headers still point into
  // the original's buffers).
  const bool ready = batch > 0 && msgs_[0].msg_hdr.msg_iov == iov_.data();
  const std::size_t setup = ready ? out_.size() : batch;
  for (std::size_t i = 0; i < setup; ++i) {
    iov_[i].iov_base = data_.data() + i * buffer_size_;
    iov_[i].iov_len = buffer_size_;
    msghdr& h = msgs_[i].msg_hdr;
    h.msg_name = &names_[i];
    h.msg_namelen = sizeof(sockaddr_storage);
    h.msg_iov = &iov_[i];
    h.msg_iovlen = 1;
    h.msg_control = control_.data() + i * kControlSize;
    h.msg_controllen = kControlSize;
    h.msg_flags = 0;
  }
  out_.clear();
  // MSG_TRUNC: msg_len is the datagram's real length even when it did not fit.
  int n =
      ::recvmmsg(fd, msgs_.data(), static_cast<unsigned>(batch), MSG_DONTWAIT | MSG_TRUNC, nullptr);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
      return std::span<const Datagram>{};
    if (batch > 0) msgs_[0].msg_hdr.msg_iov = nullptr;  // set every header up next time
    return fail_errno("recvmmsg");
  }
  for (int i = 0; i < n; ++i) {
    const msghdr& h = msgs_[i].msg_hdr;
    Datagram d;
    d.source = Endpoint::from_sockaddr(names_[i]);
    d.size = msgs_[i].msg_len;
    d.truncated = (h.msg_flags & MSG_TRUNC) != 0 || d.size > buffer_size_;
    d.payload = {data_.data() + i * buffer_size_, std::min(d.size, buffer_size_)};
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
        in_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        d.destination = IpAddress::v4(pi.ipi_addr);
        d.ifindex = static_cast<std::uint32_t>(pi.ipi_ifindex);
      } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
        in6_pktinfo pi;
        std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
        d.destination = IpAddress::v6(pi.ipi6_addr);
        d.ifindex = pi.ipi6_ifindex;
      } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
        timespec ts;
        std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
        d.rx_time_ns = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
      }
    }
    out_.push_back(d);
  }
  return std::span<const Datagram>(out_);
}

}  // namespace flowmark::net
