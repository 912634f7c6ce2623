// flowmark::netclient — the `flowmark stun SERVER[:PORT]` command, independent of argument
// parsing (apps/flowmark/stun_cli.cpp parses): asks a STUN server (RFC 5389) which address
// and port it sees our requests come from — the public address when this host is behind NAT.
//
//   StunCommandOptions o;  o.server = "192.0.2.9:3478";  o.json = true;
//   return run_stun(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstdio>
#include <optional>
#include <string>

namespace flowmark::netclient {

struct StunCommandOptions {
  std::string server;                  // address or host name, port 3478 unless given
  std::optional<std::string> bind;     // local address to send from (none: by route)
  std::optional<std::string> timeout;  // seconds for the whole transaction (default 3)
  bool json = false;                   // one JSON object instead of ADDRESS:PORT
};

int run_stun(const StunCommandOptions& o, std::FILE* out);

// The exit codes of run_stun(), as text for --help.
std::string stun_exit_help();

}  // namespace flowmark::netclient
