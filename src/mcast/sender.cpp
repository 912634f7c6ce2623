#include "flowmark/mcast/sender.hpp"

#include <netinet/udp.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "flowmark/net/multicast.hpp"
#include "flowmark/net/socket.hpp"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

namespace flowmark::mcast {

Result<Sender> Sender::open(const SenderConfig& config) {
  FM_TRY_VOID(check_group(config.group.address, config.send.iface));
  const Family family = config.group.address.family();
  if (config.bind && config.bind->family() != family)
    return fail(Errc::kInvalidArgument,
                fmt::format("bind address {} is not of the group's family ({})",
                            config.bind->to_string(), config.group.address.to_string()));
  Sender s;
  FM_TRY(s.fd_, net::open_udp_socket(family));
  FM_TRY_VOID(net::apply_send_options(s.fd_.get(), family, config.send));
  FM_TRY_VOID(net::set_send_buffer(s.fd_.get(), config.sndbuf));
  if (config.bind || config.bind_port != 0) {
    const Endpoint local{config.bind.value_or(IpAddress::any(family)), config.bind_port};
    FM_TRY_VOID(net::bind_to(s.fd_.get(), local, "cannot bind the sender to"));
  }
  s.group_ = config.group;
  if (family == Family::kV6 && s.group_.address.scope_id() == 0 && config.send.iface)
    s.group_.address.set_scope_id(config.send.iface->index);
  s.dst_len_ = s.group_.to_sockaddr(s.dst_);
  s.gso_ = config.gso;
  s.msgs_.resize(kBatch);
  s.iov_.resize(std::max(kBatch, kGsoSegments));
  return s;
}

Result<void> Sender::send(std::span<const std::byte> payload) {
  if (payload.size() > max_payload(group_.address.family()))
    return fail(Errc::kInvalidArgument,
                fmt::format("a datagram of {} bytes is larger than UDP allows ({})", payload.size(),
                            max_payload(group_.address.family())));
  ssize_t n;
  do {
    n = ::sendto(fd_.get(), payload.data(), payload.size(), 0,
                 reinterpret_cast<const sockaddr*>(&dst_), dst_len_);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return fail_errno(fmt::format("cannot send to {}", group_.to_string()));
  return {};
}

Result<std::size_t> Sender::send_batch(std::span<const std::span<const std::byte>> payloads) {
  const std::size_t limit = max_payload(group_.address.family());
  for (const auto& p : payloads) {
    if (p.size() > limit)
      return fail(
          Errc::kInvalidArgument,
          fmt::format("a datagram of {} bytes is larger than UDP allows ({})", p.size(), limit));
  }
  std::size_t accepted = 0;
  std::size_t i = 0;
  const std::size_t end = payloads.size();
  while (i < end) {
    if (gso_) {
      const std::size_t run = gso_run(payloads.subspan(i));
      if (run >= 2) {
        FM_TRY(auto sent, send_gso(payloads.subspan(i, run)));
        if (sent) {
          accepted += *sent;
          i += run;
          continue;
        }
      }
    }
    // Up to kBatch datagrams through sendmmsg — with GSO on, only up to where the next
    // run of equal sizes begins.
    std::size_t j = i + 1;
    while (j < end && j - i < kBatch &&
           !(gso_ && j + 1 < end && payloads[j].size() == payloads[j + 1].size() &&
             payloads[j].size() < gso_max_size_))
      ++j;
    FM_TRY(auto sent, send_mmsg(payloads.subspan(i, j - i)));
    accepted += sent;
    i = j;
  }
  return accepted;
}

std::size_t Sender::gso_run(std::span<const std::span<const std::byte>> payloads) const noexcept {
  const std::size_t size = payloads.front().size();
  if (size == 0 || size >= gso_max_size_) return 1;
  const std::size_t most = std::min(kGsoSegments, max_payload(group_.address.family()) / size);
  std::size_t n = 1;
  while (n < payloads.size() && n < most && payloads[n].size() == size) ++n;
  return n;
}

Result<std::optional<std::size_t>> Sender::send_gso(
    std::span<const std::span<const std::byte>> run) {
  const std::size_t n = run.size();
  for (std::size_t k = 0; k < n; ++k)
    iov_[k] = {const_cast<std::byte*>(run[k].data()), run[k].size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(std::uint16_t))] = {};
  msghdr h{};
  h.msg_name = &dst_;
  h.msg_namelen = dst_len_;
  h.msg_iov = iov_.data();
  h.msg_iovlen = n;
  h.msg_control = control;
  h.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
  const auto segment = static_cast<std::uint16_t>(run.front().size());
  std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
  ssize_t r;
  do {
    r = ::sendmsg(fd_.get(), &h, 0);
  } while (r < 0 && errno == EINTR);
  if (r >= 0) return std::optional<std::size_t>(n);
  switch (errno) {
    case EPERM:
    case ENOBUFS:
    case EAGAIN:  // refused as one packet: every datagram in it is lost
      refused_ += n;
      last_refusal_ = errno;
      return std::optional<std::size_t>(0);
    case EINVAL:
    case EMSGSIZE:  // segment plus headers larger than the path MTU: not for this size
      gso_max_size_ = segment;
      return std::optional<std::size_t>();
    case EIO:  // the device cannot checksum for us
    case ENOPROTOOPT:
    case EOPNOTSUPP:  // a kernel without UDP GSO
      gso_ = false;
      return std::optional<std::size_t>();
    default: return fail_errno(fmt::format("cannot send to {}", group_.to_string()));
  }
}

Result<std::size_t> Sender::send_mmsg(std::span<const std::span<const std::byte>> batch) {
  const std::size_t n = batch.size();
  for (std::size_t k = 0; k < n; ++k) {
    iov_[k] = {const_cast<std::byte*>(batch[k].data()), batch[k].size()};
    msghdr& h = msgs_[k].msg_hdr;
    h = msghdr{};
    h.msg_name = &dst_;
    h.msg_namelen = dst_len_;
    h.msg_iov = &iov_[k];
    h.msg_iovlen = 1;
  }
  std::size_t sent = 0;
  std::size_t accepted = 0;
  while (sent < n) {
    int r = ::sendmmsg(fd_.get(), msgs_.data() + sent, static_cast<unsigned>(n - sent), 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      // The kernel refused this one datagram (a firewall rule, a full queue): count it and
      // go on with the rest, as a lossy network would. (A refusal after the first datagram
      // of a call shows only as a short count; that datagram is then tried again.)
      if (errno == EPERM || errno == ENOBUFS || errno == EAGAIN) {
        ++refused_;
        last_refusal_ = errno;
        ++sent;
        continue;
      }
      return fail_errno(fmt::format("cannot send to {}", group_.to_string()));
    }
    sent += static_cast<std::size_t>(r);
    accepted += static_cast<std::size_t>(r);
  }
  return accepted;
}

Endpoint Sender::local() const { return net::local_endpoint(fd_.get()).value_or(Endpoint{}); }

}  // namespace flowmark::mcast
