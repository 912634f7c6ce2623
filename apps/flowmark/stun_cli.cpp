// `flowmark stun SERVER[:PORT]`: asks a STUN server (RFC 5389) which address and port it
// sees our requests come from — the public address when this host is behind NAT.
//
//   flowmark stun stun.example.org            # 198.51.100.7:40123
//   flowmark stun 192.0.2.9:3478 --bind 10.0.0.2 --timeout 1 --json
#include <chrono>
#include <cmath>
#include <iterator>
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/netclient/stun.hpp"

namespace flowmark::apps {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

struct StunArgs {
  std::string server;
  std::optional<std::string> bind;
  double timeout = 3.0;
  bool json = false;
};

void append_endpoint(std::string& out, std::string_view key, const Endpoint& e) {
  fmt::format_to(std::back_inserter(out), R"("{}":{{"address":)", key);
  append_json_string(out, e.address.to_string());
  fmt::format_to(std::back_inserter(out), R"(,"port":{}}})", e.port);
}

std::string answer_json(const netclient::StunAnswer& a) {
  std::string out = "{";
  append_endpoint(out, "public", a.mapped);
  out += ',';
  append_endpoint(out, "local", a.local);
  out += ',';
  append_endpoint(out, "server", a.server);
  fmt::format_to(std::back_inserter(out),
                 R"(,"nat":{},"requests":{},"elapsed_ms":{:.3f},)"
                 R"("ignored":{{"foreign":{},"txid":{},"malformed":{}}}}})",
                 a.behind_nat(), a.requests, static_cast<double>(a.elapsed.count()) / 1000.0,
                 a.ignored_foreign, a.ignored_txid, a.ignored_malformed);
  return out;
}

int run_stun(const StunArgs& a) {
  netclient::StunOptions options;
  options.timeout = std::chrono::milliseconds(std::llround(a.timeout * 1000.0));
  if (a.bind) {
    auto bind = IpAddress::parse(*a.bind);
    if (!bind) {
      fmt::print(stderr, "flowmark: error: --bind: {}\n", bind.error().message());
      return kExitUsage;
    }
    options.bind = *bind;
  }
  auto server = netclient::resolve_stun_server(a.server);
  if (!server) {
    fmt::print(stderr, "flowmark: error: {}\n", server.error().message());
    return kExitFailed;
  }
  auto answer = netclient::stun_query(*server, options);
  if (!answer) {
    fmt::print(stderr, "flowmark: error: {}\n", answer.error().message());
    return kExitFailed;
  }
  if (a.json)
    fmt::print("{}\n", answer_json(*answer));
  else
    fmt::print("{}\n", answer->mapped.to_string());
  return kExitOk;
}

}  // namespace

Command add_stun_command(CLI::App& parent) {
  auto args = std::make_shared<StunArgs>();
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
  app->add_option("--timeout", args->timeout,
                  "give up after S seconds; requests are retransmitted after 0.5, 1, 2, ... s")
      ->check(CLI::Range(0.001, 3600.0).description(""))
      ->type_name("S")
      ->capture_default_str();
  app->add_flag("--json", args->json,
                "one JSON object: public, local and server endpoints, nat, requests, "
                "elapsed_ms, ignored datagrams");
  app->footer(
      "Prints the public ADDRESS:PORT ([ADDRESS]:PORT for IPv6).\nExit status: 0 answered; "
      "1 no answer within the timeout, an error response or a network error; 2 bad "
      "arguments.");
  return Command{app, [args] { return run_stun(*args); }};
}

}  // namespace flowmark::apps
