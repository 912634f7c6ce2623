#include "mcast_cli.hpp"

#include <string_view>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "flowmark/core/log.hpp"
#include "options.hpp"

namespace flowmark::apps {
namespace {

constexpr const char* kEnvHelp =
    "Environment (a flag beats the environment, which beats the default):\n"
    "  MULTICAST_GROUP        group (default 224.0.0.1)\n"
    "  MULTICAST_PORT         port (default 59559)\n"
    "  MULTICAST_TTL          TTL / hop limit, 0..255 (default 1)\n"
    "  MULTICAST_IFACE        interface: name, index or address\n"
    "  MULTICAST_BIND_ADDR    local address to bind\n"
    "  MULTICAST_BUFFER_SIZE  largest datagram read whole (default 65536)\n";

void opt(CLI::App& app, const std::string& names, std::optional<std::string>& dst,
         const std::string& help) {
  app.add_option_function<std::string>(names, [&dst](const std::string& v) { dst = v; }, help);
}

void add_common(CLI::App& sub, McastInvocation& inv, mcast::Verb verb) {
  auto& r = inv.raw;
  const bool say = verb == mcast::Verb::kSay;
  add_group_option(sub, r.group,
                   say ? "group to send to (224.0.0.1)"
                       : "bind group: joined, and HEAR's forwarding target (224.0.0.1)",
                   "--group,--bind-group,--mcast-group");
  opt(sub, "--port", r.port, "UDP port (59559)");
  add_iface_option(sub, r.iface, say ? "interface to send from" : "interface of the joins");
  add_ttl_option(sub, r.ttl);
  opt(sub, "--bind", r.bind, "local address to bind");
  opt(sub, "--buffer-size", r.buffer_size,
      say ? "chunk size for --pipe --binary" : "largest datagram read whole (65536)");
  add_timeout_option(sub, r.timeout,
                     say ? "seconds to wait for replies with --wait-reply (1)"
                         : "give up after this many seconds without a datagram (exit 1 if none "
                           "came)");
  sub.add_flag("--no-loop", r.no_loop, "do not loop our sends back to this host");
  sub.add_flag("--json", r.json, "one JSON object per datagram");
  sub.add_flag("--use-std", r.use_std, "print payloads on standard output");
  sub.add_flag("--daemon", r.daemon, say ? "no effect on SAY" : "keep going until interrupted");
  sub.add_flag("--verbose", inv.verbose, "log debugging detail");
  if (say) {
    sub.add_option("-m,--message", r.message, "the message (several words: joined by spaces)")
        ->expected(1, CLI::detail::expected_max_vector_size);
    sub.add_flag("--pipe", r.pipe, "send standard input, one datagram per line");
    sub.add_flag("--binary", r.binary, "with --pipe: one datagram per chunk, not per line");
    add_count_option(sub, r.count, "send the message this many times, sequenced");
    opt(sub, "--interval", r.interval, "seconds between sequenced datagrams (0)");
    opt(sub, "--size", r.size, "pad each datagram to this many bytes");
    sub.add_flag("--sequence", r.sequence, "add the stream header (sequence, send time)");
    sub.add_flag("--wait-reply", r.wait_reply, "print HEAR replies until --timeout");
    sub.add_flag("--gso", r.gso,
                 "UDP segmentation offload for equal-sized datagrams (faster; local "
                 "firewall rules see one packet per 64 datagrams)");
  } else {
    sub.add_option("--groups,--join-mcast-groups", r.groups, "groups to join (default: --group)")
        ->expected(1, CLI::detail::expected_max_vector_size);
    add_source_option(sub, r.sources, "source-specific join (S, G) for each group");
    add_count_option(sub, r.count, "stop after this many datagrams");
    add_rcvbuf_option(sub, r.rcvbuf);
    sub.add_flag("--stats", r.stats,
                 "at the end, JSON loss/duplicate/reorder/delay statistics per sender and group");
    if (verb == mcast::Verb::kHear) {
      const bool seed = std::string_view(inv.program) == "multicast";
      sub.add_option_function<std::string>(
             "--stop-word", [&r](const std::string& v) { r.stop_word = v; },
             std::string("a datagram containing WORD ends the run after its reply (exit 0); "
                         "anyone who can send to the group can then stop it") +
                 (seed ? " (default: STOP, as the Python tool)" : " (default: none)"))
          ->type_name("WORD");
      sub.add_flag("--allow-stop", r.allow_stop, "the same as --stop-word STOP");
    }
  }
  sub.footer(std::string(kEnvHelp) + "\n" + std::string(mcast::exit_code_help()));
}

}  // namespace

void add_mcast_verbs(CLI::App& app, McastInvocation& inv) {
  struct VerbDef {
    const char* name;
    mcast::Verb verb;
    const char* help;
  };
  static constexpr VerbDef kVerbs[] = {
      {"say", mcast::Verb::kSay, "send datagrams to a group"},
      {"recv", mcast::Verb::kRecv, "join groups and receive (one datagram, or --daemon)"},
      {"hear", mcast::Verb::kHear,
       "receive, acknowledge each datagram to its sender, and forward other groups' "
       "datagrams to the bind group"},
      {"noop", mcast::Verb::kNoop, "do nothing (exit 0)"},
  };
  for (const auto& v : kVerbs) {
    auto* sub = app.add_subcommand(v.name, v.help)->ignore_case();
    if (v.verb != mcast::Verb::kNoop)
      add_common(*sub, inv, v.verb);
    else
      sub->footer(exit_code_help({{kExitOk}, {kExitUsage}}));
    sub->callback([&inv, verb = v.verb] { inv.verb = verb; });
  }
  app.require_subcommand(1);
  app.footer(std::string(kEnvHelp) + "\n" + std::string(mcast::exit_code_help()));
}

int run_mcast(const McastInvocation& inv) {
  init_logging(inv.program, inv.verbose ? LogLevel::kDebug : LogLevel::kInfo);
  return mcast::run_mcast(inv.verb, inv.raw, mcast::getenv_lookup, stdin, stdout);
}

int multicast_main(int argc, char** argv) {
  CLI::App app{
      "multicast: send (SAY), receive (RECV) and answer (HEAR) UDP multicast "
      "datagrams — flowmark's implementation of the multicast tool",
      "multicast"};
  app.set_version_flag("-v,--version", "multicast (flowmark) " FLOWMARK_VERSION);
  McastInvocation inv;
  inv.program = "multicast";
  add_mcast_verbs(app, inv);
  if (auto rc = parse_command_line(app, argc, argv, "multicast")) return *rc;
  // The Python tool's HEAR stops on any datagram containing STOP (its tests end a HEAR
  // daemon that way); so does this grammar's, unless --stop-word names another word.
  if (!inv.raw.stop_word && !inv.raw.allow_stop) inv.raw.stop_word = "STOP";
  return run_mcast(inv);
}

}  // namespace flowmark::apps
