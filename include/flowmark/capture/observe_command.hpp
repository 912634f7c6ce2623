// flowmark::capture — the `flowmark observe` command, independent of argument parsing
// (apps/flowmark/observe_cli.cpp parses; this runs): packets from a capture file or a live
// interface → one flow record per line on `out`.
//
//   ObserveOptions o;  o.file = "trace.pcapng";  o.stats = true;
//   return run_observe(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstddef>
#include <cstdio>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flowmark/capture/capture.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/observe/chains.hpp"
#include "flowmark/observe/observer.hpp"

namespace flowmark::capture {

struct ObserveOptions {
  std::string file;                  // -r: a pcap / pcapng file ("-": standard input)
  std::string iface;                 // -i: a live interface (exactly one of file, iface)
  std::string filter;                // a BPF filter expression
  std::string format;                // records: jsonl (default) or csv; summary: text or json
  std::string capture = "afpacket";  // live back end: afpacket or pcap
  double idle_timeout = 30;          // seconds without a packet before a flow ends (> 0)
  double active_timeout = 1800;      // seconds after which long flows are split (0: never)
  double expiry_delay = 5;           // seconds between a flow's completion and its record
  std::size_t max_flows = 1 << 20;   // per worker
  // Threads observing, each with its own flow table: a capture file is read by one thread
  // that hands each flow's frames to one of them (observe_workers.hpp); a live interface
  // (--capture afpacket) gets one AF_PACKET socket per worker in a fanout group. 0: the
  // cores this process may run on (sched_getaffinity), but 1 with --icmp-flows or
  // --capture pcap (where more than one is refused). The command line's default is 0.
  std::size_t workers = 1;
  bool stats = false;              // statistics on standard error at the end
  bool key_vlan = false;           // the outer VLAN id is part of the flow key
  bool no_tcp_completion = false;  // TCP flows end on the idle timeout only
  bool icmp_flows = false;         // ICMP errors quoting a known flow also get their own flow
  std::string chains = std::string(observe::kDefaultChains);  // --chains: names, or all
  // --ipfix FILE: the records also (or, without an explicit format, only) as IPFIX messages
  // (RFC 5655 file: a sequence of RFC 7011 messages; "-": standard output; udp://HOST:PORT:
  // one message a datagram, templates refreshed every 100 messages and 60 seconds;
  // tcp://HOST:PORT: one stream, the collector connected again with back-off when down).
  std::string ipfix;
  bool ipfix_uniflow = false;            // two uniflow records per flow, no RFC 5103 elements
  std::uint32_t observation_domain = 0;  // the messages' observation domain id
  // Bytes per message, 512 .. 65535; 0: 65535 for a file or TCP, 1400 for UDP.
  std::size_t ipfix_max_message = 0;
  // Flow start and end times: "ms" (flowStart/EndMilliseconds) or "ns" (flowStart/
  // EndNanoseconds, NTP format).
  std::string ipfix_times = "ms";
  // tcp://HOST:PORT: bytes of messages held while the collector is not connected (beyond,
  // messages are dropped, their records counted), and seconds waited at the end for the
  // collector to take them.
  std::size_t ipfix_buffer = std::size_t{64} << 20;
  double ipfix_timeout = 5;
  std::string summary;  // "" (one record per flow) or "scitags" (a table per experiment)
  // Names of experiments and activities, for the scitags chain and the summary: the app loads
  // the registry (this module does not depend on flowmark::scitags); called once, when needed.
  std::function<Result<observe::ScitagsNames>()> scitags_names;
};

// What run_observe() sets up from the options before the first packet: the capture opened,
// the observer's configuration, the chains' names (parsed, in order) and options (the
// registry's names loaded when the scitags chain is asked for). The Python module's
// flowmark.observe() starts from the same, so that both check and wire alike.
struct ObserveSetup {
  // The capture; for a live interface observed by several workers, the first of `sockets`.
  std::unique_ptr<Capture> capture;
  // A live interface with workers > 1: the other sockets of the fanout group (capture is the
  // first), one per worker.
  std::vector<std::unique_ptr<Capture>> sockets;
  std::size_t workers = 1;  // the options' workers, 0 resolved
  // Something the user should know (a fallback taken), for standard error; "" if nothing.
  std::string notice;
  observe::ObserverConfig config;
  std::vector<std::string> chains;
  observe::ChainOptions chain_options;
  bool tcp_completion = true;  // not --no-tcp-completion

  // Registers the completion of TCP flows on FIN/RST (unless turned off) and the chains, in
  // order; returns the index of the scitags chain in obs.chains() (obs.chains().size() when
  // it is not there).
  std::size_t add_to(observe::Observer& obs) const;
};

// A set-up that failed: the message for the user (without the "flowmark: error: " prefix),
// the cause, and the exit code `flowmark observe` ends with.
struct ObserveSetupError {
  Error error;
  int exit_code;
};

// Checks the options (a file or an interface, the chains, the timeouts, the bound, the
// capture back end), loads the registry's names when the chains need them (or
// `with_scitags`: the chain is added when missing), and opens the capture. The format and
// summary options are not looked at (they are the program's).
std::expected<ObserveSetup, ObserveSetupError> prepare_observe(const ObserveOptions& o,
                                                               bool with_scitags = false);

// Validates the options, captures until the end of the input (or SIGINT / SIGTERM), writes
// the records to `out`, and returns the exit code; problems are reported on stderr.
int run_observe(const ObserveOptions& o, std::FILE* out);

// The exit codes of run_observe(), as text for --help.
std::string observe_exit_help();

}  // namespace flowmark::capture
