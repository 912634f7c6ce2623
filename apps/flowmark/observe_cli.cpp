// `flowmark observe`: argument parsing only; the work is in flowmark::capture
// (observe_command.hpp): packets from a capture file or an interface → one record per flow.
#include <cstdio>
#include <memory>
#include <string>

#include "command.hpp"
#include "flowmark/capture/observe_command.hpp"
#include "flowmark/scitags/registry.hpp"
#include "options.hpp"

namespace flowmark::apps {

Command add_observe_command(CLI::App& parent) {
  auto a = std::make_shared<capture::ObserveOptions>();
  auto* sub = parent.add_subcommand(
      "observe", "group packets from a capture file or interface into bidirectional flows");
  sub->add_option("-r,--read", a->file, "pcap or pcapng file ('-': standard input)");
  sub->add_option("-i,--interface,--iface", a->iface,
                  "live interface (--iface is the preferred name, as on every command; "
                  "-i and --interface stay)")
      ->type_name("IF");
  sub->add_option("--filter", a->filter, "BPF filter expression");
  sub->add_option("--capture", a->capture,
                  "live capture back end: afpacket (default: TPACKET_V3 ring) or pcap (libpcap)");
  sub->add_option("--format", a->format,
                  "records: jsonl (default) or csv; with --summary: text (default) or json");
  sub->add_option("--chains", a->chains,
                  "analysis chains, comma-separated or all: basic tcp ecn dscp mss tfo udp icmp "
                  "evil scitags (pathspider's names and fields; basic is always on)")
      ->type_name("LIST")
      ->capture_default_str();
  sub->add_option("--summary", a->summary,
                  "scitags: instead of the records, one row per (experiment, activity), then "
                  "unmarked IPv6 and IPv4 (flows, packets, octets, first, last)")
      ->type_name("KIND");
  auto registry = std::make_shared<std::string>("builtin");
  add_registry_option(*sub, *registry);
  a->scitags_names = [registry]() -> Result<observe::ScitagsNames> {
    FM_TRY(auto reg, scitags::Registry::load(*registry));
    auto shared = std::make_shared<scitags::Registry>(std::move(reg));
    observe::ScitagsNames names;
    names.experiment = [shared](std::uint32_t e) -> std::optional<std::string> {
      if (auto n = shared->experiment_name(e)) return std::string(*n);
      return std::nullopt;
    };
    names.activity = [shared](std::uint32_t e, std::uint32_t act) -> std::optional<std::string> {
      if (auto n = shared->activity_name(e, act)) return std::string(*n);
      return std::nullopt;
    };
    return names;
  };
  sub->add_option("--idle-timeout", a->idle_timeout,
                  "seconds without a packet before a flow ends (30)");
  sub->add_option("--active-timeout", a->active_timeout,
                  "seconds after which long flows are emitted in parts (1800; 0: never)");
  sub->add_option("--expiry-delay", a->expiry_delay,
                  "seconds between a flow's completion and its record (5)");
  sub->add_option("--max-flows", a->max_flows, "bound on concurrent flows (1048576)");
  a->workers = 0;  // the cores available
  sub->add_option("--workers", a->workers,
                  "threads observing, each with its own flow table and timers (default and 0: "
                  "an interface, the cores this process may run on, at most 64, 1 with "
                  "--icmp-flows or --capture pcap; a pcap file without --filter, the same (two "
                  "workers were 1.08x one at 10,000 flows, 1.19x at 1,000,000, for 1.6-1.8x the "
                  "CPU, on the 2-core machine measured); pcapng, standard input or --filter, 1). "
                  "A file: a flow's frames, both directions, fragments and the "
                  "ICMP errors quoting it, go to one of them (a pcap file without --filter: "
                  "the workers read it themselves, pread(2) in 1 MiB chunks; pcapng, "
                  "standard input or --filter: one reader thread hands the frames over). An "
                  "interface "
                  "(--capture afpacket): one AF_PACKET socket each in a fanout group "
                  "(PACKET_FANOUT_HASH, IPv4 fragments reassembled), one worker on a kernel "
                  "that refuses it; TCP handshakes split between sockets are warned about. "
                  "--max-flows is per worker; with several, records come in "
                  "the order flows end in each worker, not sorted by time")
      ->type_name("N");
  sub->add_flag("--vlan", a->key_vlan, "the outer VLAN id is part of the flow key");
  sub->add_flag("--no-tcp-completion", a->no_tcp_completion,
                "do not complete TCP flows on FIN/RST (idle timeout only)");
  sub->add_flag("--icmp-flows", a->icmp_flows,
                "an ICMP error quoting a packet of a known flow also makes a record of its own "
                "(as IPFIX meters do); by default it counts on that flow only, as in pathspider");
  sub->add_option("--ipfix", a->ipfix,
                  "also write the records as IPFIX (RFC 7011 messages, RFC 5103 biflows) to FILE "
                  "('-': standard output) or send them to udp://HOST:PORT (templates refreshed "
                  "every 100 messages and 60 s) or tcp://HOST:PORT (one stream; a collector "
                  "that is down or goes away is connected again with back-off from 0.1 s to "
                  "30 s, the records buffered meanwhile, templates sent first on each "
                  "connection); PORT defaults to 4739; without --format, IPFIX only")
      ->type_name("FILE|udp://HOST:PORT|tcp://HOST:PORT");
  sub->add_flag("--ipfix-uniflow", a->ipfix_uniflow,
                "IPFIX: two uniflow records per flow (forward, and reverse when it saw packets) "
                "instead of one biflow record with RFC 5103 reverse elements");
  sub->add_option("--observation-domain", a->observation_domain,
                  "IPFIX: the messages' observation domain id (0)")
      ->type_name("ID");
  sub->add_option("--ipfix-max-message", a->ipfix_max_message,
                  "IPFIX: largest message in bytes, 512..65535 (65535 for a file or TCP, 1400 "
                  "for UDP)")
      ->type_name("BYTES");
  sub->add_option("--ipfix-times", a->ipfix_times,
                  "IPFIX: flow start and end times in ms (flowStart/EndMilliseconds, default) or "
                  "ns (flowStart/EndNanoseconds, NTP format: the capture's nanoseconds exactly)")
      ->type_name("ms|ns");
  sub->add_option("--ipfix-buffer", a->ipfix_buffer,
                  "IPFIX over TCP: bytes of messages held while the collector is not connected "
                  "(67108864 = 64 MiB; one message at least); beyond, whole messages are "
                  "dropped and their records counted as not delivered")
      ->type_name("BYTES");
  sub->add_option("--ipfix-timeout", a->ipfix_timeout,
                  "IPFIX over TCP: seconds to wait at the end for the collector to take the "
                  "records buffered (5); what it did not get is reported on standard error "
                  "(exit code 1)")
      ->type_name("SECONDS");
  sub->add_flag("--stats", a->stats,
                "statistics on standard error at the end: packets, drops, flows, records "
                "(emitted) ...; with several workers the sums, then a line per worker; live "
                "AF_PACKET captures also the kernel's counters per socket (packets, drops, "
                "queue freezes); with --ipfix: messages, records and bytes sent, TCP "
                "connections and reconnects, records dropped and not delivered");
  sub->footer(
      "One record per flow on standard output (JSON lines: sip dip proto sp dp first last "
      "pkt_fwd pkt_rev oct_fwd oct_rev ...; sp and dp are null for flows without ports, empty in "
      "CSV). Times are the capture's (packet clock).\n\n" +
      capture::observe_exit_help());
  return {sub, [a] { return capture::run_observe(*a, stdout); }};
}

}  // namespace flowmark::apps
