#include "flowmark/mcast/sender.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace flowmark::mcast {

Result<Sender> Sender::open(const SenderConfig& config) {
  FM_TRY_VOID(check_group(config.group.address, config.send.iface));
  const Family family = config.group.address.family();
  if (config.bind && config.bind->family() != family)
    return fail(Errc::kInvalidArgument,
                fmt::format("bind address {} is not of the group's family ({})",
                            config.bind->to_string(), config.group.address.to_string()));
  Sender s;
  FM_TRY(s.fd_, open_udp_socket(family));
  FM_TRY_VOID(apply_send_options(s.fd_.get(), family, config.send));
  FM_TRY_VOID(set_send_buffer(s.fd_.get(), config.sndbuf));
  if (config.bind || config.bind_port != 0) {
    Endpoint local{config.bind.value_or(IpAddress::any(family)), config.bind_port};
    sockaddr_storage ss{};
    socklen_t len = local.to_sockaddr(ss);
    if (::bind(s.fd_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
      return fail_errno(fmt::format("cannot bind the sender to {}", local.to_string()));
  }
  s.group_ = config.group;
  if (family == Family::kV6 && s.group_.address.scope_id() == 0 && config.send.iface)
    s.group_.address.set_scope_id(config.send.iface->index);
  s.dst_len_ = s.group_.to_sockaddr(s.dst_);
  s.msgs_.resize(kBatch);
  s.iov_.resize(kBatch);
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
  std::size_t done = 0;
  std::size_t accepted = 0;
  while (done < payloads.size()) {
    const std::size_t n = std::min(kBatch, payloads.size() - done);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& p = payloads[done + i];
      if (p.size() > limit)
        return fail(
            Errc::kInvalidArgument,
            fmt::format("a datagram of {} bytes is larger than UDP allows ({})", p.size(), limit));
      iov_[i].iov_base = const_cast<std::byte*>(p.data());
      iov_[i].iov_len = p.size();
      msghdr& h = msgs_[i].msg_hdr;
      h = msghdr{};
      h.msg_name = &dst_;
      h.msg_namelen = dst_len_;
      h.msg_iov = &iov_[i];
      h.msg_iovlen = 1;
    }
    std::size_t sent = 0;
    while (sent < n) {
      int r = ::sendmmsg(fd_.get(), msgs_.data() + sent, static_cast<unsigned>(n - sent), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        // The kernel refused this one datagram (a firewall rule, a full queue): count it
        // and go on with the rest, as a lossy network would.
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
    done += n;
  }
  return accepted;
}

Endpoint Sender::local() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return Endpoint::from_sockaddr(ss);
}

}  // namespace flowmark::mcast
