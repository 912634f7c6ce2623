#include "flowmark/netclient/stun_command.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iterator>
#include <system_error>

#include <fmt/format.h>

#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/netclient/stun.hpp"

namespace flowmark::netclient {
namespace {

void append_endpoint(std::string& out, std::string_view key, const Endpoint& e) {
  fmt::format_to(std::back_inserter(out), R"("{}":{{"address":)", key);
  append_json_string(out, e.address.to_string());
  fmt::format_to(std::back_inserter(out), R"(,"port":{}}})", e.port);
}

std::string answer_json(const StunAnswer& a) {
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

// A failed query: the server did not answer, or answered with an error or something we
// cannot read, is 1 (nothing learnt); a bad argument is 2; a local socket problem has the
// code of its cause.
int query_exit_code(const Error& e) noexcept {
  const auto& c = e.code();
  if (c == std::errc::timed_out || c == Errc::kRefused || c == Errc::kUnsupported ||
      c == Errc::kMalformed)
    return kExitNothing;
  return exit_code_for(e);
}

}  // namespace

int run_stun(const StunCommandOptions& a, std::FILE* out) {
  StunOptions options;
  if (a.timeout) {
    auto t = parse_seconds(OptionValue::flag("--timeout", *a.timeout));
    if (!t) {
      fmt::print(stderr, "flowmark: error: {}\n", t.error().message());
      return kExitUsage;
    }
    // Whole milliseconds, at least one.
    options.timeout =
        std::max(std::chrono::milliseconds(1), std::chrono::round<std::chrono::milliseconds>(*t));
  }
  if (a.bind) {
    auto bind = IpAddress::parse(*a.bind);
    if (!bind) {
      fmt::print(stderr, "flowmark: error: --bind: {}\n", bind.error().message());
      return kExitUsage;
    }
    options.bind = *bind;
  }
  auto server = resolve_stun_server(a.server);
  if (!server) {
    fmt::print(stderr, "flowmark: error: {}\n", server.error().message());
    return exit_code_for(server.error());
  }
  auto answer = stun_query(*server, options);
  if (!answer) {
    fmt::print(stderr, "flowmark: error: {}\n", answer.error().message());
    return query_exit_code(answer.error());
  }
  if (a.json)
    fmt::print(out, "{}\n", answer_json(*answer));
  else
    fmt::print(out, "{}\n", answer->mapped.to_string());
  return kExitOk;
}

std::string stun_exit_help() {
  return exit_code_help({
      {kExitOk, "answered"},
      {kExitNothing,
       "no answer within the timeout, or an error response or an unreadable one from the "
       "server"},
      {kExitUsage, "e.g. a bind address of the other family, a server name that does not resolve"},
      {kExitUnavailable, "the bind address is not local"},
      {kExitSoftware},
      {kExitNoPermission},
      {kExitInterrupted, "while waiting for the answer"},
      {kExitTerminated, "while waiting for the answer"},
  });
}

}  // namespace flowmark::netclient
