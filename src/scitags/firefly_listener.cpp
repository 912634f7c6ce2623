#include "flowmark/scitags/firefly_listener.hpp"
#include "flowmark/core/time.hpp"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "flowmark/core/fd.hpp"
#include "flowmark/net/datagram.hpp"
#include "flowmark/net/multicast.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::scitags {

std::uint64_t ListenerCounts::rejected_total() const noexcept {
  std::uint64_t n = 0;
  for (auto r : rejected) n += r;
  return n;
}

void ListenerCounts::append_json(std::string& out) const {
  fmt::format_to(std::back_inserter(out), R"({{"type":"stats","received":{},"accepted":{},)",
                 received, accepted);
  out += R"("rejected":{)";
  for (std::size_t i = 0; i < kRejectKinds; ++i) {
    if (i > 0) out.push_back(',');
    fmt::format_to(std::back_inserter(out), R"("{}":{})", to_string(static_cast<Reject>(i)),
                   rejected[i]);
  }
  out += "}}";
}

namespace {

// Every datagram is read whole: a firefly may be up to FireflyDecoder::kMaxSize bytes, and
// that is more than any UDP payload, so nothing is ever truncated.
constexpr std::size_t kBufferSize = FireflyDecoder::kMaxSize;

// A unicast socket bound to `local` with a large receive buffer. No packet info and no
// timestamps: nothing here uses them, and the kernel's cmsg work is not free.
Result<UniqueFd> open_unicast(const Endpoint& local, int rcvbuf, bool reuse_port) {
  FM_TRY(UniqueFd fd, net::open_udp_socket(local.address.family()));
  FM_TRY_VOID(net::set_receive_buffer(fd.get(), rcvbuf));
  if (reuse_port) FM_TRY_VOID(net::set_reuse_port(fd.get()));
  FM_TRY_VOID(net::bind_to(fd.get(), local, "cannot listen on",
                           "another collector (flowd?) already uses the port"));
  return fd;
}

Endpoint local_endpoint(int fd) { return net::local_endpoint(fd).value_or(Endpoint{}); }

}  // namespace

struct FireflyListener::Impl {
  // Plain sockets (one per family), or one socket joined to the group.
  struct Socket {
    UniqueFd fd;
    net::DatagramReader reader;
    Result<std::span<const net::Datagram>> read() { return reader.read(fd.get()); }
  };
  std::vector<Socket> sockets;
  FireflyDecoder decoder;
  ListenerCounts counts;
  bool stop_requested = false;

  explicit Impl(const DecoderOptions& options) : decoder(options) {}

  // Decodes and delivers one batch; stops early when the sink asked to.
  void deliver(std::span<const net::Datagram> batch, FireflySink& sink) {
    for (const net::Datagram& d : batch) {
      if (stop_requested) break;
      ++counts.received;
      const std::string_view text(reinterpret_cast<const char*>(d.payload.data()),
                                  d.payload.size());
      auto f = decoder.decode(text);
      if (f) {
        ++counts.accepted;
        sink.on_firefly(d.source, **f);
      } else {
        ++counts.rejected[static_cast<std::size_t>(f.error().reason)];
        sink.on_reject(d.source, f.error());
      }
    }
    sink.on_batch_end();
  }
};

FireflyListener::FireflyListener(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FireflyListener::FireflyListener(FireflyListener&&) noexcept = default;
FireflyListener& FireflyListener::operator=(FireflyListener&&) noexcept = default;
FireflyListener::~FireflyListener() = default;

Result<FireflyListener> FireflyListener::open(const ListenerConfig& config) {
  if (config.batch == 0) return fail(Errc::kInvalidArgument, "batch must be at least 1");
  auto impl = std::make_unique<Impl>(config.decoder);
  if (config.group) {
    FM_TRY(net::GroupSocket socket, net::open_group_socket({.groups = {*config.group},
                                                            .sources = config.sources,
                                                            .port = config.port,
                                                            .iface = config.iface,
                                                            .bind = config.bind,
                                                            .rcvbuf = config.rcvbuf}));
    impl->sockets.push_back({std::move(socket.fd), net::DatagramReader(kBufferSize, config.batch)});
    return FireflyListener(std::move(impl));
  }
  if (!config.sources.empty())
    return fail(Errc::kInvalidArgument, "a source-specific join (--source) needs a --group");
  if (config.bind) {
    FM_TRY(UniqueFd fd,
           open_unicast({*config.bind, config.port}, config.rcvbuf, config.reuse_port));
    impl->sockets.push_back({std::move(fd), net::DatagramReader(kBufferSize, config.batch)});
    return FireflyListener(std::move(impl));
  }
  // Both families. IPv4 first; with port 0 the IPv6 socket takes the same port, so that
  // one port number serves both.
  FM_TRY(UniqueFd fd4, open_unicast({IpAddress::any(Family::kV4), config.port}, config.rcvbuf,
                                    config.reuse_port));
  const std::uint16_t port = local_endpoint(fd4.get()).port;
  impl->sockets.push_back({std::move(fd4), net::DatagramReader(kBufferSize, config.batch)});
  auto fd6 = open_unicast({IpAddress::any(Family::kV6), port}, config.rcvbuf, config.reuse_port);
  if (fd6) {
    impl->sockets.push_back({std::move(*fd6), net::DatagramReader(kBufferSize, config.batch)});
  } else if (fd6.error().code() == std::errc::address_family_not_supported) {
    spdlog::info("IPv6 is not available here: listening on IPv4 only");
  } else {
    return std::unexpected(std::move(fd6.error()));
  }
  return FireflyListener(std::move(impl));
}

Result<std::size_t> FireflyListener::drain(FireflySink& sink, std::size_t max_batches) {
  Impl& s = *impl_;
  std::size_t total = 0;
  for (auto& socket : s.sockets) {
    for (std::size_t round = 0; round < max_batches && !s.stop_requested; ++round) {
      FM_TRY(auto batch, socket.read());
      if (batch.empty()) break;
      total += batch.size();
      s.deliver(batch, sink);
    }
  }
  sink.on_idle();
  return total;
}

Result<void> FireflyListener::add_to(EventLoop& loop, FireflySink& sink) {
  Impl* s = impl_.get();
  for (auto& socket : s->sockets) {
    // The sockets are opened once, before any add_to: their addresses stay put.
    Impl::Socket* so = &socket;
    FM_TRY_VOID(loop.add_fd(so->fd.get(), EPOLLIN, [s, so, &loop, &sink](std::uint32_t) {
      // Bounded rounds so that signals and timers are still seen under load.
      for (int round = 0; round < 64 && !loop.stopped() && !s->stop_requested; ++round) {
        auto batch = so->read();
        if (!batch) {
          sink.on_error(batch.error());
          return;
        }
        if (batch->empty()) break;
        s->deliver(*batch, sink);
      }
      sink.on_idle();
    }));
  }
  return {};
}

void FireflyListener::stop_after_current() noexcept { impl_->stop_requested = true; }

const ListenerCounts& FireflyListener::counts() const noexcept { return impl_->counts; }

std::vector<Endpoint> FireflyListener::local_endpoints() const {
  std::vector<Endpoint> out;
  out.reserve(impl_->sockets.size());
  for (const auto& socket : impl_->sockets) out.push_back(local_endpoint(socket.fd.get()));
  return out;
}

std::vector<int> FireflyListener::fds() const {
  std::vector<int> out;
  out.reserve(impl_->sockets.size());
  for (const auto& socket : impl_->sockets) out.push_back(socket.fd.get());
  return out;
}

RejectLog::RejectLog(unsigned per_second)
    : limit_(per_second, std::chrono::seconds(1), LogLimiter::Report::kLine,
             [per_second](std::uint64_t n) {
               return fmt::format(
                   "{} more rejected datagram(s) not shown (at most {} a second are logged; "
                   "--stats counts them all by reason)",
                   n, per_second);
             }) {}

void RejectLog::log(const Endpoint& sender, const Rejection& r) {
  limit_.log(spdlog::level::warn, [&] {
    // The detail may quote bytes of the datagram: no control characters on the terminal.
    std::string detail = r.detail;
    for (char& c : detail)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return fmt::format("rejected datagram from {}: {}: {}", sender.to_string(), to_string(r.reason),
                       detail);
  });
}

void RejectLog::flush() { limit_.flush(spdlog::level::warn); }

}  // namespace flowmark::scitags
