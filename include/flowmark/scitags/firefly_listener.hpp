// flowmark::scitags — a firefly collector: receives UDP datagrams on port 10514 (unicast, or
// joined to a multicast group), decodes and validates every one, and hands each firefly or
// each rejection to a sink. Rejections are counted by reason and never fatal.
//
// Sockets: without a group, one per address family (0.0.0.0 and ::, or the one --bind
// names); with a group, one socket joined to it (net::open_group_socket). Large SO_RCVBUF,
// recvmmsg batches, no per-datagram control messages on the unicast sockets (they cost ~5 %
// of the CPU).
//
//   FM_TRY(auto l, FireflyListener::open({.port = 10514}));
//   struct Print : FireflySink {
//     void on_firefly(const Endpoint& from, const Firefly& f) override { ... }
//     void on_idle() override { flush(); }
//   } sink;
//   FM_TRY_VOID(l.add_to(loop, sink));   // or call l.drain(sink) yourself when readable
//   loop.run();
//   l.counts().received, l.counts().rejected[...]
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::scitags {

struct ListenerConfig {
  std::optional<IpAddress> bind;       // none: every local address of both families
  std::uint16_t port = kFireflyPort;   // 0: an ephemeral port (see local_endpoints())
  std::optional<IpAddress> group;      // join this multicast group (bind as above, its family)
  std::vector<IpAddress> sources;      // source-specific joins (S, group)
  std::optional<Interface> iface;      // join on this interface
  int rcvbuf = kDefaultReceiveBuffer;  // SO_RCVBUF in bytes (0: kernel default)
  std::size_t batch = 128;             // datagrams per recvmmsg
  // SO_REUSEPORT on the unicast sockets: several listeners (one per thread) on one port.
  bool reuse_port = false;
  DecoderOptions decoder;
};

struct ListenerCounts {
  std::uint64_t received = 0;
  std::uint64_t accepted = 0;
  std::array<std::uint64_t, kRejectKinds> rejected{};
  std::uint64_t rejected_total() const noexcept;
  // {"type":"stats","received":N,"accepted":N,"rejected":{"empty":0,"bad_header":0,...}}
  // Every reason is listed, zero or not, so that scripts can rely on the keys.
  void append_json(std::string& out) const;
};

// What a listener delivers to. Called on the thread that drains; the Firefly and the
// Endpoint are valid only during the call.
class FireflySink {
 public:
  virtual ~FireflySink() = default;
  virtual void on_firefly(const Endpoint& sender, const Firefly& firefly) = 0;
  virtual void on_reject(const Endpoint& sender, const Rejection& rejection) {
    (void)sender;
    (void)rejection;
  }
  // After each recvmmsg batch.
  virtual void on_batch_end() {}
  // When every datagram waiting has been delivered (the sockets are empty): the place to
  // flush buffered output — once per wake-up, however many batches it took.
  virtual void on_idle() {}
  // A socket error while draining (the listener keeps its sockets open).
  virtual void on_error(const Error& error) { (void)error; }
};

class FireflyListener {
 public:
  static Result<FireflyListener> open(const ListenerConfig& config);
  FireflyListener(FireflyListener&&) noexcept;
  FireflyListener& operator=(FireflyListener&&) noexcept;
  ~FireflyListener();

  // Reads, decodes and delivers what is waiting on every socket, at most `max_batches`
  // recvmmsg batches per socket (so signals and timers stay responsive under load).
  // Returns the number of datagrams read.
  Result<std::size_t> drain(FireflySink& sink, std::size_t max_batches = 64);
  // Registers every socket with `loop`; each becomes readable → drain into `sink`. The sink
  // may stop the loop. Errors go to sink.on_error.
  Result<void> add_to(EventLoop& loop, FireflySink& sink);
  // Stops delivering from inside a sink callback: the rest of the current batch is left
  // unread (counted neither as received nor as handled).
  void stop_after_current() noexcept;

  const ListenerCounts& counts() const noexcept;
  // The bound addresses (the port is the real one when 0 was asked for).
  std::vector<Endpoint> local_endpoints() const;
  std::vector<int> fds() const;

 private:
  struct Impl;
  explicit FireflyListener(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Logs rejections on stderr (spdlog warn) at most `per_second` a second; the rest are
// counted and summarised ("N more rejected datagram(s) not shown") by the first rejection
// of a later second, or by flush() at the end.
class RejectLog {
 public:
  explicit RejectLog(unsigned per_second = 10);
  void log(const Endpoint& sender, const Rejection& r);
  void flush();

 private:
  LogLimiter limit_;
};

}  // namespace flowmark::scitags
