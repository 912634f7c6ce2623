#include "flowmark/mcast/receiver.hpp"

#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace flowmark::mcast {
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

Result<void> enable_packet_info(int fd, Family family) {
  int one = 1;
  if (family == Family::kV4) {
    if (setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one) != 0)
      return fail_errno("setsockopt(IP_PKTINFO)");
  } else if (setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one) != 0) {
    return fail_errno("setsockopt(IPV6_RECVPKTINFO)");
  }
  if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0)
    return fail_errno("setsockopt(SO_TIMESTAMPNS)");
  return {};
}

Result<Receiver> Receiver::open(const ReceiverConfig& config) {
  if (config.groups.empty()) return fail(Errc::kInvalidArgument, "no group to join");
  if (config.buffer_size == 0 || config.batch == 0)
    return fail(Errc::kInvalidArgument, "buffer size and batch must be at least 1");
  const Family family = config.groups.front().family();
  for (const auto& g : config.groups) {
    if (g.family() != family)
      return fail(Errc::kInvalidArgument,
                  fmt::format("groups {} and {} are of different address families; run one "
                              "receiver per family",
                              config.groups.front().to_string(), g.to_string()));
    FM_TRY_VOID(check_group(g, config.iface));
  }
  for (const auto& s : config.sources) {
    if (s.family() != family || s.is_multicast() || s.is_unspecified())
      return fail(
          Errc::kInvalidArgument,
          fmt::format("source {} must be a unicast address of the groups' family", s.to_string()));
  }
  Receiver r(config);
  r.family_ = family;
  FM_TRY(r.fd_, open_udp_socket(family));
  const int fd = r.fd_.get();
  int one = 1;
  // Several receivers on one host may listen to the same group and port.
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    return fail_errno("setsockopt(SO_REUSEADDR)");
  FM_TRY_VOID(enable_packet_info(fd, family));
  FM_TRY_VOID(set_receive_buffer(fd, config.rcvbuf));
  FM_TRY_VOID(apply_send_options(fd, family, config.send));
  if (config.bind && config.bind->family() != family)
    return fail(Errc::kInvalidArgument, fmt::format("bind address {} is not of the groups' family",
                                                    config.bind->to_string()));
  Endpoint local{config.bind.value_or(IpAddress::any(family)), config.port};
  sockaddr_storage ss{};
  socklen_t len = local.to_sockaddr(ss);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    const int err = errno;
    return std::unexpected(
        Error(std::error_code(err, std::system_category()),
              fmt::format("cannot bind to {}: {}{}", local.to_string(), std::strerror(err),
                          err == EADDRNOTAVAIL ? " — not a local address" : "")));
  }
  len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  r.port_ = Endpoint::from_sockaddr(ss).port;
  const std::uint32_t ifindex = config.iface ? config.iface->index : 0;
  for (const auto& g : config.groups) {
    if (config.sources.empty()) {
      FM_TRY_VOID(join_group(fd, g, nullptr, ifindex));
    } else {
      for (const auto& s : config.sources) FM_TRY_VOID(join_group(fd, g, &s, ifindex));
    }
  }
  return r;
}

Result<void> Receiver::send_to(const Endpoint& to, std::span<const std::byte> payload) {
  sockaddr_storage ss{};
  socklen_t len = to.to_sockaddr(ss);
  ssize_t n;
  do {
    n = ::sendto(fd_.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&ss),
                 len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno(fmt::format("cannot send to {}", to.to_string()));
  return {};
}

}  // namespace flowmark::mcast
