#include "flowmark/scitags/firefly_sender.hpp"
#include "flowmark/core/time.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
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

// Room for one UDP_SEGMENT control message.
struct alignas(cmsghdr) GsoControl {
  char bytes[CMSG_SPACE(sizeof(std::uint16_t))];
};

// Makes `h` one GSO buffer: its iovecs leave as datagrams of `segment` bytes (the last may be
// shorter), the control message written into `control`.
void set_gso_segment(msghdr& h, GsoControl& control, std::size_t segment) noexcept {
  h.msg_control = control.bytes;
  h.msg_controllen = sizeof control.bytes;
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_UDP;
  c->cmsg_type = UDP_SEGMENT;
  c->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
  const auto size = static_cast<std::uint16_t>(segment);
  std::memcpy(CMSG_DATA(c), &size, sizeof size);
}

// The largest UDP payload of one IPv4 / IPv6 packet: the kernel's bound for a whole GSO buffer.
std::size_t max_udp_payload(const Endpoint& to) noexcept {
  return to.address.is_v6() ? 65527 : 65507;
}

}  // namespace

FireflySender::FireflySender(FireflySenderConfig config)
    : config_(std::move(config)), gso_(config_.gso) {}

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

std::size_t FireflySender::gso_run(std::span<const Message> messages) const noexcept {
  const Message& a = messages.front();
  const std::size_t size = a.datagram.size();
  if (!gso_ || size == 0 || size >= gso_max_size_ || messages.size() == 1) return 1;
  const std::size_t limit = max_udp_payload(*a.to);
  std::size_t n = 1, total = size;
  while (n < messages.size() && n < kGsoSegments &&
         (messages[n].to == a.to || *messages[n].to == *a.to)) {
    const std::size_t s = messages[n].datagram.size();
    // Every segment but the last is `size` long; an empty one would not be sent at all.
    if (s > size || s == 0 || total + s > limit) break;
    total += s;
    ++n;
    if (s < size) break;
  }
  return n;
}

void FireflySender::send_many(std::span<const Message> messages, std::span<int> errors) {
  std::array<sockaddr_storage, kBatch> names;
  std::array<mmsghdr, kBatch> msgs{};
  std::array<GsoControl, kBatch> control{};
  std::array<std::size_t, kBatch> first{}, count{};  // each message's datagrams
  iov_.resize(kBatch * kGsoSegments);
  std::size_t i = 0;
  while (i < messages.size()) {
    // Up to kBatch messages of one family, each one datagram or a GSO run.
    const Family family = messages[i].to->address.family();
    std::size_t n = 0, d = 0;
    while (i + d < messages.size() && n < kBatch &&
           messages[i + d].to->address.family() == family) {
      const std::size_t run = gso_run(messages.subspan(i + d));
      for (std::size_t k = 0; k < run; ++k) {
        const auto& m = messages[i + d + k];
        iov_[d + k] = {const_cast<char*>(m.datagram.data()), m.datagram.size()};
      }
      msghdr& h = msgs[n].msg_hdr;
      h = msghdr{};
      h.msg_name = &names[n];
      h.msg_namelen = messages[i + d].to->to_sockaddr(names[n]);
      h.msg_iov = &iov_[d];
      h.msg_iovlen = run;
      if (run > 1) set_gso_segment(h, control[n], messages[i + d].datagram.size());
      first[n] = i + d;
      count[n] = run;
      d += run;
      ++n;
    }
    auto fd = socket_for(family);
    if (!fd) {
      const int err = fd.error().code().value() ? fd.error().code().value() : EINVAL;
      std::fill_n(errors.begin() + static_cast<std::ptrdiff_t>(i), d, err);
      i += d;
      continue;
    }
    auto set = [&](std::size_t m, int err) {
      std::fill_n(errors.begin() + static_cast<std::ptrdiff_t>(first[m]), count[m], err);
    };
    std::size_t done = 0;
    while (done < n) {
      const int r = ::sendmmsg(*fd, msgs.data() + done, static_cast<unsigned>(n - done), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        if (count[done] > 1 && gso_refused(err, iov_[first[done] - i].iov_len)) {
          // Not as one buffer on this path or kernel: the run's datagrams one by one.
          for (std::size_t k = first[done]; k < first[done] + count[done]; ++k) {
            errors[k] = send_one(*fd, messages[k]);
          }
        } else {
          set(done, err);  // this message failed: go on with the next
        }
        ++done;
        continue;
      }
      for (int k = 0; k < r; ++k) set(done + static_cast<std::size_t>(k), 0);
      done += static_cast<std::size_t>(r);
    }
    i += d;
  }
}

bool FireflySender::gso_refused(int err, std::size_t segment) noexcept {
  switch (err) {
    case EINVAL:
    case EMSGSIZE:  // segment plus headers larger than the path's MTU: not for this size
      gso_max_size_ = std::min(gso_max_size_, segment);
      return true;
    case EIO:  // the device cannot checksum for us, or an IPsec path
    case ENOPROTOOPT:
    case EOPNOTSUPP:  // a kernel without UDP GSO
      gso_ = false;
      return true;
    default: return false;
  }
}

int FireflySender::send_one(int fd, const Message& m) noexcept {
  sockaddr_storage ss{};
  const socklen_t len = m.to->to_sockaddr(ss);
  ssize_t n;
  do {
    n = ::sendto(fd, m.datagram.data(), m.datagram.size(), 0, reinterpret_cast<sockaddr*>(&ss),
                 len);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? errno : 0;
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
  auto pace = [&] {
    if (interval_ns > 0) {
      const auto due = start + static_cast<std::int64_t>(static_cast<double>(done) * interval_ns);
      if (monotonic_ns() < due) sleep_until_monotonic(due);
    }
  };
  // With GSO, as send_many() sends them: GSO buffers of kGsoSegments datagrams, four a call.
  const std::size_t segments =
      std::min(kGsoSegments, max_udp_payload(to) / std::max<std::size_t>(1, datagram.size()));
  if (gso_ && !datagram.empty() && datagram.size() < gso_max_size_ && segments > 1) {
    std::vector<iovec> seg(segments, iovec{const_cast<char*>(datagram.data()), datagram.size()});
    GsoControl control{};  // read only by the kernel: one for all
    constexpr std::size_t kCall = 4;
    std::array<mmsghdr, kCall> gm{};
    for (auto& m : gm) {
      m.msg_hdr.msg_name = &ss;
      m.msg_hdr.msg_namelen = len;
      m.msg_hdr.msg_iov = seg.data();
      set_gso_segment(m.msg_hdr, control, datagram.size());
    }
    while (done < count) {
      pace();
      std::size_t n = 0;
      std::uint64_t in_call = 0;
      for (; n < kCall && done + in_call < count; ++n) {
        const auto k = std::min<std::uint64_t>(segments, count - done - in_call);
        gm[n].msg_hdr.msg_iovlen = k;
        in_call += k;
      }
      const int r = ::sendmmsg(fd, gm.data(), static_cast<unsigned>(n), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        const int err = errno;
        if (gso_refused(err, datagram.size())) break;  // the rest by sendmmsg below
        if (!is_refusal(err))
          return fail_errno(fmt::format("cannot send fireflies to {}", to.to_string()));
        refused_ += gm[0].msg_hdr.msg_iovlen;  // the first buffer was refused: skip it
        done += gm[0].msg_hdr.msg_iovlen;
        continue;
      }
      for (int k = 0; k < r; ++k) {
        done += gm[static_cast<std::size_t>(k)].msg_hdr.msg_iovlen;
        sent += gm[static_cast<std::size_t>(k)].msg_hdr.msg_iovlen;
      }
    }
  }
  while (done < count) {
    pace();
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
