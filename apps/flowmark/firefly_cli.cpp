// `flowmark firefly send|listen|decode`: argument parsing only; the work is in
// flowmark::scitags (firefly_commands.hpp).
//
//   flowmark firefly send start tcp 192.0.2.1 2345 192.0.2.2 5777 atlas perfSONAR
//   echo 'end tcp 192.0.2.1 2345 192.0.2.2 5777 2 1' | flowmark firefly send --collector 239.1.1.1
//   flowmark firefly listen --format text --stats
//   flowmark firefly decode captured.txt
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/log.hpp"
#include "flowmark/scitags/firefly_commands.hpp"
#include "options.hpp"

namespace flowmark::apps {
namespace {

// The command line as given; the scitags module checks, converts and runs it.
struct FireflyCommandLine {
  std::optional<scitags::FireflyVerb> verb;
  bool verbose = false;
  scitags::FireflyArgs args;
};

void add_send(CLI::App& parent, FireflyCommandLine& cl) {
  auto& a = cl.args.send;
  auto* s = parent.add_subcommand(
      "send",
      "send one firefly (or one per line of standard input) to the flow's destination "
      "and to collectors");
  s->add_option("flow", a.flow,
                "STATE PROTO SRC SPORT DST DPORT EXP ACT, as a named-pipe line: state start, "
                "ongoing or end; proto tcp or udp; EXP/ACT ids or registry names (atlas "
                "perfSONAR). None: read such lines from standard input")
      ->type_name("STATE PROTO SRC SPORT DST DPORT EXP ACT")
      ->expected(0, -1);
  s->add_option("--to", a.to,
                "send to HOST[:PORT] instead of the flow's destination address (port 10514)")
      ->type_name("HOST[:PORT]");
  s->add_option("--collector", a.collectors,
                "also send a copy to ADDR[:PORT]: IPv4, IPv6 ([addr]:port) or a multicast "
                "group (default port 10514); repeatable")
      ->type_name("ADDR[:PORT]")
      ->allow_extra_args(false);  // one value per --collector: the flow follows
  s->add_flag("--collectors-only", a.collectors_only,
              "send to the collectors only, not to --to or the flow's destination");
  add_ttl_option(*s, a.ttl);
  add_iface_option(*s, a.iface, "outgoing interface for multicast collectors");
  s->add_option("--hostname", a.hostname, "syslog HOSTNAME of the fireflies (default: this host)")
      ->type_name("H");
  add_registry_option(*s, a.registry);
  s->add_option("--start-time", a.start_time,
                "start-time of the firefly (default: now). A one-shot tool cannot know when an "
                "ongoing or ended flow started; flowmarkd's pipeline pairs end events with "
                "their start and supplies the real time")
      ->type_name("RFC3339");
  // Benchmarks only (bench/firefly_listen.sh): hidden from --help.
  s->add_option("--repeat", a.repeat, "send the same firefly N times (sendmmsg by 64)")
      ->check(CLI::Range(std::uint64_t{1}, UINT64_MAX).description(""))
      ->group("");
  s->add_flag("--gso", a.gso,
              "--repeat sends UDP GSO buffers of 64 datagrams, four a sendmmsg, as flowmarkd's "
              "firefly backend sends runs of one size")
      ->group("");
  s->add_option("--rate", a.rate, "fireflies a second for --repeat (0: unpaced)")
      ->check(CLI::Range(0.0, 1e9).description(""))
      ->group("");
  s->add_flag("--verbose", cl.verbose, "log debugging detail");
  s->footer(
      "Times: start events carry start-time = now; ongoing and end events carry --start-time "
      "or now, end events end-time = now.\nStandard input lines are pipe lines (any "
      "whitespace); blank lines are skipped; a bad line is reported with its number and "
      "skipped.\n\n" +
      std::string(scitags::firefly_send_exit_help()));
  s->callback([&cl] { cl.verb = scitags::FireflyVerb::kSend; });
}

void add_listen(CLI::App& parent, FireflyCommandLine& cl) {
  auto& a = cl.args.listen;
  auto* l = parent.add_subcommand(
      "listen", "a firefly collector: receive, validate and print fireflies, one per line");
  l->add_option("--bind", a.bind, "local address to listen on (default: all, IPv4 and IPv6)")
      ->type_name("ADDR");
  l->add_option("--port", a.port, "UDP port")->check(CLI::Range(0, 65535))->capture_default_str();
  add_group_option(*l, a.group, "join this multicast group (IPv4 or IPv6)");
  add_iface_option(*l, a.iface, "interface for the --group join");
  add_source_option(*l, a.sources, "source-specific join (S, G)");
  l->add_option("--format", a.format,
                "json: {\"sender\":ip,\"sport\":n,\"firefly\":{...}}; text: one readable line")
      ->check(CLI::IsMember({"json", "text"}))
      ->capture_default_str();
  l->add_flag("--stats", a.stats,
              "at the end, one JSON line: received, accepted, rejected by reason");
  add_count_option(*l, a.count, "stop after this many datagrams (valid or not)");
  add_timeout_option(*l, a.timeout, "stop after this many seconds without any datagram");
  l->add_flag("--lenient", a.lenient,
              "accept end events whose start-time is null or \"\" (flowd's defect)");
  add_rcvbuf_option(*l, a.rcvbuf);
  l->add_flag("--verbose", cl.verbose, "log debugging detail");
  l->footer(std::string(scitags::firefly_listen_exit_help()));
  l->callback([&cl] { cl.verb = scitags::FireflyVerb::kListen; });
}

void add_decode(CLI::App& parent, FireflyCommandLine& cl) {
  auto& a = cl.args.decode;
  auto* d = parent.add_subcommand(
      "decode",
      "validate fireflies (one per line; with or without the syslog header) and "
      "print each as one JSON line");
  d->add_option("files", a.files, "files to read ('-' or none: standard input)")
      ->type_name("FILE...");
  d->add_flag("--lenient", a.lenient,
              "accept end events whose start-time is null or \"\" (flowd's defect)");
  d->footer(std::string(scitags::firefly_decode_exit_help()));
  d->callback([&cl] { cl.verb = scitags::FireflyVerb::kDecode; });
}

}  // namespace

Command add_firefly_command(CLI::App& parent) {
  auto cl = std::make_shared<FireflyCommandLine>();
  CLI::App* app = parent.add_subcommand(
      "firefly", "send, receive and check Scitags fireflies (UDP flow announcements, port 10514)");
  add_send(*app, *cl);
  add_listen(*app, *cl);
  add_decode(*app, *cl);
  app->require_subcommand(1);
  app->footer(
      "Run 'flowmark firefly COMMAND --help' for when each command returns which code.\n\n" +
      scitags::firefly_exit_help());
  return Command{app, [cl] {
                   if (!cl->verb) return static_cast<int>(kExitUsage);
                   init_logging("flowmark", cl->verbose ? LogLevel::kDebug : LogLevel::kInfo);
                   return scitags::run_firefly(*cl->verb, cl->args, stdin, stdout);
                 }};
}

}  // namespace flowmark::apps
