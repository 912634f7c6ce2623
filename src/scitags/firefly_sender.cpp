#include "flowmark/scitags/firefly_sender.hpp"
#include "flowmark/core/time.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <cstring>

#include <fmt/format.h>

#include "flowmark/net/multicast.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::scitags {
namespace {

// Errors the kernel reports for one datagram that are worth skipping rather than stopping
// for: a full queue, a local firewall rule.
bool is_refusal(int err) noexcept { return err == ENOBUFS || err == EPERM || err == EAGAIN; }

}  // namespace

FireflySender::FireflySender(FireflySenderConfig config) : config_(std::move(config)) {}

Result<Endpoint> FireflySender::prepare(const Endpoint& to) const {
  Endpoint out = to;
  if (to.port == 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: port 0 is not a destination", to.to_string()));
  if (to.address.is_unspecified())
    return fail(Errc::kInvalidArgument,
                fmt::format("{} is the unspecified address, not a destination", to.to_string()));
  if (to.address.is_multicast()) {
    FM_TRY_VOID(net::check_group(to.address, config_.iface));
    FM_TRY_VOID(net::check_ttl(config_.ttl));
    if (to.address.is_v6() && to.address.scope_id() == 0 && config_.iface)
      out.address.set_scope_id(config_.iface->index);
  }
  return out;
}

Result<int> FireflySender::socket_for(Family family) {
  UniqueFd& fd = family == Family::kV4 ? fd4_ : fd6_;
  if (!fd) {
    FM_TRY(fd, net::open_udp_socket(family));
    FM_TRY_VOID(
        net::apply_send_options(fd.get(), family, {.iface = config_.iface, .ttl = config_.ttl}));
    FM_TRY_VOID(net::set_send_buffer(fd.get(), config_.sndbuf));
  }
  return fd.get();
}

Result<void> FireflySender::send(const Endpoint& to, std::string_view datagram) {
  FM_TRY(int fd, socket_for(to.address.family()));
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  ssize_t n;
  do {
    n = ::sendto(fd, datagram.data(), datagram.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    const int err = errno;
    return fail_errno(fmt::format("cannot send a firefly to {}{}", to.to_string(),
                                  err == ENETUNREACH || err == EHOSTUNREACH
                                      ? " (no route: is the address right, the link up?)"
                                      : ""),
                      err);
  }
  return {};
}

void FireflySender::send_many(std::span<const Message> messages, std::span<int> errors) {
  std::array<sockaddr_storage, kBatch> names;
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  std::size_t i = 0;
  while (i < messages.size()) {
    // A run of one family, kBatch at most.
    const Family family = messages[i].to->address.family();
    std::size_t n = 0;
    while (i + n < messages.size() && n < kBatch &&
           messages[i + n].to->address.family() == family) {
      const auto& m = messages[i + n];
      iov[n] = {const_cast<char*>(m.datagram.data()), m.datagram.size()};
      msgs[n] = {};
      msgs[n].msg_hdr.msg_name = &names[n];
      msgs[n].msg_hdr.msg_namelen = m.to->to_sockaddr(names[n]);
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      ++n;
    }
    auto fd = socket_for(family);
    if (!fd) {
      const int err = fd.error().code().value() ? fd.error().code().value() : EINVAL;
      std::fill_n(errors.begin() + static_cast<std::ptrdiff_t>(i), n, err);
      i += n;
      continue;
    }
    std::size_t done = 0;
    while (done < n) {
      const int r = ::sendmmsg(*fd, msgs.data() + done, static_cast<unsigned>(n - done), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        errors[i + done] = errno;  // this datagram failed: go on with the next
        ++done;
        continue;
      }
      std::fill_n(errors.begin() + static_cast<std::ptrdiff_t>(i + done), r, 0);
      done += static_cast<std::size_t>(r);
    }
    i += n;
  }
}

Result<std::uint64_t> FireflySender::send_repeated(const Endpoint& to, std::string_view datagram,
                                                   std::uint64_t count, double rate) {
  FM_TRY(int fd, socket_for(to.address.family()));
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  for (std::size_t i = 0; i < kBatch; ++i) {
    iov[i] = {const_cast<char*>(datagram.data()), datagram.size()};
    msgs[i].msg_hdr.msg_name = &ss;
    msgs[i].msg_hdr.msg_namelen = len;
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  const std::int64_t start = monotonic_ns();
  const double interval_ns = rate > 0 ? 1e9 / rate : 0;
  std::uint64_t done = 0;  // sent or refused
  std::uint64_t sent = 0;
  while (done < count) {
    if (interval_ns > 0) {
      const auto due = start + static_cast<std::int64_t>(static_cast<double>(done) * interval_ns);
      if (monotonic_ns() < due) sleep_until_monotonic(due);
    }
    const auto n = static_cast<unsigned>(std::min<std::uint64_t>(kBatch, count - done));
    const int r = ::sendmmsg(fd, msgs.data(), n, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (!is_refusal(errno))
        return fail_errno(fmt::format("cannot send fireflies to {}", to.to_string()));
      ++refused_;  // the first of the batch was refused: skip it and go on
      ++done;
      continue;
    }
    done += static_cast<std::uint64_t>(r);
    sent += static_cast<std::uint64_t>(r);
  }
  return sent;
}

}  // namespace flowmark::scitags
