// The connection tracker shared by the `sockets` and `kernel-events` sources: pure logic
// over successive snapshots of the socket table (no netlink here, so tests feed it
// synthetic sockets).
//
//   ConnectionTracker t(options, [&](const FlowEvent& e) { sink.push(e); });
//   t.begin(now_micros());
//   diag.dump(query, [&](const SocketInfo& s) { t.observe(s); });   // one or more dumps
//   t.finish();      // or t.abandon() when a dump failed: nothing is taken as vanished
//
// Keyed by the kernel's socket cookie, not by the 5-tuple: a 5-tuple is reused — a client
// may reconnect from the same port as soon as the old socket is gone (or even while it sits
// in TIME_WAIT on the other side, SO_REUSEADDR / tcp_tw_reuse) — and between two polls the
// old connection's end and the new one's start would then look like one live connection.
// A cookie is unique per socket while the host runs, and a TIME_WAIT socket keeps the
// cookie of the connection it came from, so "established → TIME_WAIT" is seen as the same
// connection closing and a reused tuple as a new one.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/netclient/sock_diag.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::daemon::sockets {

// The service's port ranges ("5201", "8000-8100"), as the [[rule]]s use them.
using daemon::PortRange;
// The socket table as netlink sock_diag reports it (netclient/sock_diag.hpp), which the
// `sockets` source dumps into the tracker.
using netclient::kAllStates;
using netclient::kConnectedStates;
using netclient::SockDiag;
using netclient::SockDiagStats;
using netclient::SocketInfo;
using netclient::TcpState;
inline Result<PortRange> parse_port_range(std::string_view text) { return PortRange::parse(text); }

struct Tag {
  std::uint32_t experiment = 0;  // 0: the service's classification rules decide
  std::uint32_t activity = 0;
  friend bool operator==(const Tag&, const Tag&) = default;
};

struct TrackerOptions {
  std::vector<Network> internal_networks;  // destinations never announced
  bool skip_private = true;                // ...nor private / loopback ones (!is_global)
  bool announce_existing = false;          // announce connections open at the first poll
  std::vector<PortRange> ports;            // empty: every port; else src or dst in one
  Tag tag;                                 // for every flow, unless `choices` is set
  std::vector<Tag> choices;                // drawn at random per flow (the iperf preset)
  std::uint64_t seed = 0;                  // for the draw; 0: from std::random_device
};

struct TrackerStats {
  std::uint64_t starts = 0;
  std::uint64_t ends_closing = 0;   // a known connection entered a closing state
  std::uint64_t ends_vanished = 0;  // a known connection left the table
  std::uint64_t short_lived = 0;    // first seen already closing: start and end at once
  // Connections (not observations) never announced, by reason.
  std::uint64_t skipped_internal = 0;
  std::uint64_t skipped_port = 0;
  std::uint64_t existing = 0;  // open at the first poll
};

// True for the states a connection passes through once it starts closing.
bool is_closing(TcpState s) noexcept;

class ConnectionTracker {
 public:
  using Emit = std::function<void(const scitags::FlowEvent&)>;

  ConnectionTracker(TrackerOptions options, Emit emit);

  // One poll: begin, observe every socket of every dump, then finish (or abandon).
  void begin(Micros now);
  void observe(const SocketInfo& s);
  // Connections not observed since begin() have vanished: their end is emitted.
  void finish();
  // A dump failed: the snapshot is incomplete, so nothing is taken as vanished.
  void abandon();

  // begin + observe each + finish, for tests and callers holding a vector.
  void poll(std::span<const SocketInfo> snapshot, Micros now);

  // Connections followed (announced, end pending or sent) and connections remembered only
  // to stay silent about them (skipped, or open at the first poll).
  std::size_t tracked() const noexcept { return table_.size(); }
  std::size_t ignored() const noexcept { return ignored_.size(); }
  const TrackerStats& stats() const noexcept { return stats_; }
  const TrackerOptions& options() const noexcept { return options_; }

 private:
  struct Entry {
    scitags::FlowEvent event;  // src, dst, protocol, tag, start time, latest usage/tcp
    std::uint64_t seen = 0;    // the poll that last saw it
    bool ended = false;        // its end was emitted (kept until it vanishes)
  };

  bool wanted(const SocketInfo& s);
  Tag draw_tag();
  void emit_end(Entry& e);

  TrackerOptions options_;
  Emit emit_;
  std::mt19937_64 random_;
  std::unordered_map<std::uint64_t, Entry> table_;  // by socket cookie
  // Cookie → the poll that last saw it, for connections nothing is ever emitted about:
  // a cookie's tuple never changes, so the filters run once per connection, and 10,000
  // internal connections cost a small map entry each rather than a FlowEvent.
  std::unordered_map<std::uint64_t, std::uint64_t> ignored_;
  std::uint64_t poll_ = 0;
  bool first_ = true;  // no poll finished yet
  Micros now_ = 0;
  TrackerStats stats_;
};

}  // namespace flowmark::daemon::sockets
