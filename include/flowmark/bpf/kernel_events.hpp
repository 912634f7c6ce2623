// flowmark::bpf — TCP connections as the kernel sees them change state: a BPF program on
// the tracepoint sock:inet_sock_set_state (bpf/kevents.bpf.c, a CO-RE libbpf skeleton
// embedded in the binary) reports each connection entering ESTABLISHED (start) and leaving
// it (end, once per connection) through a BPF ring buffer. No polling: the ring buffer's
// epoll fd becomes readable when a record arrives.
//
//   FM_TRY(auto w, bpf::TcpStateWatcher::open({.ports = {{443, 443}}},
//                                              [&](const bpf::TcpStateEvent& e) { ... }));
//   loop.add_fd(w.fd(), EPOLLIN, [&](auto) { w.poll(); });   // handlers run inside poll()
//
// Needs CAP_BPF and CAP_PERFMON (or root) and a kernel with BTF; errors say which is
// missing. Not thread-safe: one owner.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::bpf {

struct TcpStateEvent {
  enum class Kind : std::uint8_t { kStart, kEnd };
  Kind kind = Kind::kStart;
  std::uint64_t cookie = 0;  // the socket's cookie: pairs a start with its end
  Endpoint local;            // IPv4-mapped IPv6 addresses are given as IPv4
  Endpoint remote;
  std::uint64_t ktime_ns = 0;  // CLOCK_MONOTONIC of the state change
  std::uint64_t bytes_acked = 0;
  std::uint64_t bytes_received = 0;  // data only (a FIN received is not counted)
  std::uint8_t old_state = 0;        // the kernel's TCP_* numbers
  std::uint8_t new_state = 0;
};

struct TcpStateFilter {
  // Inclusive ranges; a connection is reported when either end's port is in one. Empty:
  // every port.
  std::vector<std::pair<std::uint16_t, std::uint16_t>> ports;
  // A cgroup v2 directory (e.g. "/sys/fs/cgroup/system.slice/xrootd.service"): only sockets
  // created in it or below it. Empty: every cgroup.
  std::string cgroup;
  // Only the sockets of this process's network namespace (the tracepoint sees every
  // namespace of the host).
  bool own_netns_only = true;
  // Ring buffer size in bytes (a power of two, ≥ one page).
  std::size_t ring_bytes = 256 * 1024;

  // Handshake marking: the connections the filter selects are put into a flow-label
  // marker's map from the kernel — at tcp_connect() on the active side (a cgroup sock_ops
  // program on `cgroup`, or on the cgroup v2 root: before the SYN leaves); on the passive
  // side into the marker's handshake map when the SYN arrives (the same program, on the
  // request socket: before the SYN-ACK leaves), moved to the flow map at ESTABLISHED — and
  // removed when their socket closes unless user space erased them first.
  struct Premark {
    SharedFlowMap map;                        // FlowLabelMarker::shared_map()
    std::array<std::uint32_t, 32> labels{};   // the label for each of the 32 entropy values
    ExtHeader ext_header = ExtHeader::kNone;  // as the marker's own entries
    std::uint16_t experiment = 0;             // for the extension-header option
    std::uint8_t activity = 0;
    std::vector<Network> skip;  // destinations never marked (the IPv6 ones matter)
  };
  std::optional<Premark> premark;
};

// Summed over the CPUs.
struct TcpStateCounters {
  std::uint64_t starts = 0;
  std::uint64_t ends = 0;
  std::uint64_t ring_full = 0;  // records lost because user space fell behind
  std::uint64_t skipped_port = 0;
  std::uint64_t skipped_cgroup = 0;
  std::uint64_t skipped_family = 0;
  std::uint64_t skipped_netns = 0;
  std::uint64_t premarked = 0;         // flows put in the marker's map before a packet left
  std::uint64_t premark_full = 0;      // not put: the map was at its capacity
  std::uint64_t premark_skipped = 0;   // not put: internal / non-global destination, IPv4
  std::uint64_t premark_removed = 0;   // entries of ours removed at CLOSE (refused, reset...)
  std::uint64_t handshake_marked = 0;  // passive side: SYN-ACKs put in the handshake map
};

class TcpStateWatcher {
 public:
  using Handler = std::function<void(const TcpStateEvent&)>;

  // Loads the program with the filter, attaches it to the tracepoint, opens the ring
  // buffer. Events are delivered to `handler` from poll() only.
  static Result<TcpStateWatcher> open(const TcpStateFilter& filter, Handler handler);

  TcpStateWatcher(TcpStateWatcher&&) noexcept;
  TcpStateWatcher& operator=(TcpStateWatcher&&) noexcept;
  ~TcpStateWatcher();  // detaches

  // Readable (EPOLLIN) when records wait.
  int fd() const noexcept;
  // Delivers every waiting record; returns how many (or an error from libbpf).
  Result<int> poll();
  Result<TcpStateCounters> counters() const;
  std::uint64_t cgroup_id() const noexcept;  // of the filter; 0: none
  // Handshake marking runs (TcpStateFilter::premark), and from the SYN on (the connect
  // hook attached; false: from ESTABLISHED only).
  bool premarking() const noexcept;
  bool premarking_syn() const noexcept;
  // Entries of the shared handshake map, as the kernel created it (0: none shared).
  std::uint32_t handshake_entries() const noexcept;

 private:
  struct Impl;
  explicit TcpStateWatcher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The id of a cgroup v2 directory (its inode number in cgroupfs), as the kernel reports it.
Result<std::uint64_t> cgroup_id_of(const std::string& path);

}  // namespace flowmark::bpf
