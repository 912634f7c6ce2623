// flowmark::scitags — the `flowmark firefly send|listen|decode` commands, independent of
// argument parsing (apps/flowmark/firefly_cli.cpp parses; these run).
//
// Each takes resolved options, reads `in` / writes `out`, reports problems on the default
// logger (stderr), and returns the exit code (flowmark::ExitCode, core/exit_code.hpp).
//
//   FireflyListenOptions o;  o.listener.port = 10514;  o.stats = true;
//   return run_firefly_listen(o, stdout);
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/scitags/firefly.hpp"
#include "flowmark/scitags/firefly_listener.hpp"
#include "flowmark/scitags/firefly_sender.hpp"

namespace flowmark::scitags {

struct FireflySendOptions {
  // The 8 pipe-line tokens (state prot src_ip src_port dst_ip dst_port exp act); empty:
  // read pipe-format lines from `in`, one firefly per line.
  std::vector<std::string> flow;
  std::optional<Endpoint> to;        // none: each flow's destination address, port 10514
  bool collectors_only = false;      // send to the collectors only (no --to / destination)
  std::vector<Endpoint> collectors;  // extra copies (unicast or multicast groups)
  int ttl = 1;                       // for multicast collectors
  std::optional<Interface> iface;    // for multicast collectors
  std::string hostname;              // syslog HOSTNAME (empty: this host's name)
  std::string registry = "builtin";  // where names like "atlas" resolve
  // Start time of ongoing and end events (the service pairs an end with its start and
  // knows the real one; a one-shot tool does not): none means now.
  std::optional<Micros> start_time;
  std::uint64_t repeat = 1;  // benchmark: send the firefly this many times (one flow only)
  double rate = 0;           // benchmark: datagrams a second for --repeat (0: unpaced)
  bool gso = false;  // benchmark: --repeat by UDP GSO buffers (FireflySender::send_repeated)
};

enum class FireflyFormat { kJson, kText };

struct FireflyListenOptions {
  ListenerConfig listener;
  FireflyFormat format = FireflyFormat::kJson;
  bool stats = false;                               // print the stats line at the end
  std::optional<std::uint64_t> count;               // stop after this many datagrams
  std::optional<std::chrono::nanoseconds> timeout;  // stop after this long without any
};

// The command lines as given (apps/flowmark/firefly_cli.cpp fills them); resolve_*() checks
// them — the shared options (--group --source --iface --ttl --rcvbuf --timeout --count)
// the way every command does (core/option_value.hpp) — and resolves names and interfaces.
struct FireflySendArgs {
  std::vector<std::string> flow;
  std::optional<std::string> to, iface, ttl, start_time;
  std::vector<std::string> collectors;
  bool collectors_only = false;
  std::string hostname;
  std::string registry = "builtin";
  std::uint64_t repeat = 1;
  double rate = 0;
  bool gso = false;
};

struct FireflyListenArgs {
  std::optional<std::string> bind, group, iface, timeout, rcvbuf, count;
  std::vector<std::string> sources;
  int port = kFireflyPort;
  std::string format = "json";  // json or text
  bool stats = false, lenient = false;
};

struct FireflyDecodeArgs {
  std::vector<std::string> files;  // '-' or none: standard input
  bool lenient = false;            // accept end events with a null or "" start-time
};

// The command line of `flowmark firefly send|listen|decode`, as given.
enum class FireflyVerb { kSend, kListen, kDecode };
struct FireflyArgs {
  FireflySendArgs send;
  FireflyListenArgs listen;
  FireflyDecodeArgs decode;
};

// The one runner the command line calls: checks and resolves the arguments of `verb` and
// runs it (send reads `in`; listen and decode write `out`; decode reads its files or `in`).
// Arguments that do not resolve are logged and return their exit code (2, 65, 66, 68, ...).
int run_firefly(FireflyVerb verb, const FireflyArgs& args, std::FILE* in, std::FILE* out);

Result<FireflySendOptions> resolve_firefly_send(const FireflySendArgs& a);
Result<FireflyListenOptions> resolve_firefly_listen(const FireflyListenArgs& a);

int run_firefly_send(const FireflySendOptions& o, std::FILE* in);
int run_firefly_listen(const FireflyListenOptions& o, std::FILE* out);
// Each line of each file ("-" or no files: `in`) is one firefly; blank lines are skipped.
int run_firefly_decode(std::span<const std::string> files, const DecoderOptions& options,
                       std::FILE* in, std::FILE* out);

// The text form of `firefly listen --format text`, one line without the newline:
//   10.0.0.1:40001 start tcp 10.0.0.1:2345 -> 10.0.0.2:5777 exp 2/atlas act 1/default
//     start 2025-03-25T10:00:00.123456+00:00 ...
void append_firefly_text(std::string& out, const Endpoint& sender, const Firefly& f);

// Exit codes of each command, as text for --help; firefly_exit_help(): all of them, for
// `flowmark firefly --help`.
std::string firefly_exit_help();
std::string firefly_send_exit_help();
std::string firefly_listen_exit_help();
std::string firefly_decode_exit_help();

}  // namespace flowmark::scitags
