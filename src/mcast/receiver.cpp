#include "flowmark/mcast/receiver.hpp"

#include <sys/socket.h>

#include <cerrno>

#include <fmt/format.h>

#include "flowmark/net/multicast.hpp"

namespace flowmark::mcast {

Result<Receiver> Receiver::open(const ReceiverConfig& config) {
  if (config.buffer_size == 0 || config.batch == 0)
    return fail(Errc::kInvalidArgument, "buffer size and batch must be at least 1");
  FM_TRY(net::GroupSocket socket, net::open_group_socket({.groups = config.groups,
                                                          .sources = config.sources,
                                                          .port = config.port,
                                                          .iface = config.iface,
                                                          .bind = config.bind,
                                                          .rcvbuf = config.rcvbuf}));
  FM_TRY_VOID(net::apply_send_options(socket.fd.get(), socket.family, config.send));
  Receiver r(config);
  r.fd_ = std::move(socket.fd);
  r.port_ = socket.port;
  r.family_ = socket.family;
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
