// `flowmark stun SERVER[:PORT]`: argument parsing only; the work is in flowmark::netclient
// (stun_command.hpp): asks a STUN server (RFC 5389) which address and port it sees our
// requests come from — the public address when this host is behind NAT.
//
//   flowmark stun stun.example.org            # 198.51.100.7:40123
//   flowmark stun 192.0.2.9:3478 --bind 10.0.0.2 --timeout 1 --json
#include <cstdio>
#include <memory>
#include <string>

#include "command.hpp"
#include "flowmark/netclient/stun_command.hpp"
#include "options.hpp"

namespace flowmark::apps {

Command add_stun_command(CLI::App& parent) {
  auto args = std::make_shared<netclient::StunCommandOptions>();
  CLI::App* app = parent.add_subcommand(
      "stun",
      "ask a STUN server (RFC 5389) for this host's public address and port, as seen "
      "through any NAT on the way");
  app->add_option("server", args->server,
                  "STUN server: address or host name, port 3478 unless given")
      ->required()
      ->type_name("SERVER[:PORT]");
  app->add_option("--bind", args->bind, "local address to send from (default: by route)")
      ->type_name("ADDR");
  add_timeout_option(*app, args->timeout,
                     "give up after this many seconds (3); requests are retransmitted after "
                     "0.5, 1, 2, ... s");
  app->add_flag("--json", args->json,
                "one JSON object: public, local and server endpoints, nat, requests, "
                "elapsed_ms, ignored datagrams");
  app->footer("Prints the public ADDRESS:PORT ([ADDRESS]:PORT for IPv6).\n\n" +
              netclient::stun_exit_help());
  return Command{app, [args] { return netclient::run_stun(*args, stdout); }};
}

}  // namespace flowmark::apps
