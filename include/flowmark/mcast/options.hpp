// flowmark::mcast — options of `flowmark mcast say|recv|hear` (and `multicast SAY|RECV|HEAR`):
// what the command line gave, resolved against the MULTICAST_* environment and the
// seed's defaults (a flag beats the environment, which beats the default), validated,
// and the exit code each failure maps to.
//
//   RawOptions raw;  raw.port = "5353";  raw.message = {"Hello", "World!"};
//   auto say = resolve_say(raw, getenv_lookup);   // Result<SayOptions>
//   if (!say) return exit_code_for(say.error());  // 2 for a bad value, ...
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::mcast {

// Exit codes: the one table of flowmark (core/exit_code.hpp); the multicast commands return
// 0 1 2 68 69 70 77 130 143, documented in `--help` and flowmark-mcast(1).
// The codes the multicast commands return, with when, as text for --help.
std::string_view exit_code_help() noexcept;

// The command line as given: an empty optional / vector means "not given".
struct RawOptions {
  std::optional<std::string> group;  // --group / --bind-group / --mcast-group
  std::vector<std::string> groups;   // --groups / --join-mcast-groups
  std::vector<std::string> sources;  // --source (SSM)
  std::optional<std::string> port, iface, ttl, bind, buffer_size, rcvbuf;
  std::optional<std::string> count, interval, timeout, size;
  std::vector<std::string> message;  // --message words, joined by spaces
  bool pipe = false, binary = false, sequence = false, wait_reply = false, gso = false;
  bool use_std = false, daemon = false, json = false, stats = false;
  bool no_loop = false, allow_stop = false;  // --allow-stop: the stop word STOP
  std::optional<std::string> stop_word;      // --stop-word WORD (HEAR)
};

// Looks up an environment variable (tests pass their own).
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
std::optional<std::string> getenv_lookup(std::string_view name);

struct CommonOptions {
  IpAddress group;  // SAY: the destination; RECV/HEAR: the bind group
  std::uint16_t port = 0;
  std::optional<Interface> iface;
  int ttl = 1;
  bool loop = true;
  std::optional<IpAddress> bind;
  std::size_t buffer_size = 0;  // largest datagram read (RECV/HEAR) or chunk sent (SAY)
  bool json = false;
  std::optional<std::chrono::nanoseconds> timeout;
};

struct SayOptions : CommonOptions {
  std::string message;
  bool pipe = false;      // datagrams from stdin
  bool binary = false;    // stdin in chunks rather than lines
  bool sequence = false;  // prepend the stream header
  std::uint64_t count = 1;
  std::chrono::nanoseconds interval{0};
  std::optional<std::size_t> size;  // pad each datagram to this many bytes
  bool wait_reply = false;          // wait for HEAR replies (up to timeout, default 1 s)
  bool gso = false;                 // UDP GSO for runs of equal-sized datagrams
};

struct RecvOptions : CommonOptions {
  std::vector<IpAddress> groups;   // every group joined (default: just `group`)
  std::vector<IpAddress> sources;  // SSM sources
  bool use_std = false;            // print payloads
  bool daemon = false;             // keep going after the first datagram
  bool stats = false;
  std::optional<std::uint64_t> count;  // stop after this many datagrams
  int rcvbuf = 0;
  // HEAR: a datagram whose payload contains this word ends the run (exit 0) after its
  // reply. Empty: no stop word (`flowmark mcast hear`'s default; `multicast HEAR` uses STOP,
  // as the Python tool does).
  std::string stop_word;
};

Result<SayOptions> resolve_say(const RawOptions& raw, const EnvLookup& env);
Result<RecvOptions> resolve_recv(const RawOptions& raw, const EnvLookup& env);

}  // namespace flowmark::mcast
