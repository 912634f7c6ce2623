// The `listen` key of the parts that serve HTTP through civetweb (the prometheus and
// dashboard backends): its parse, and why a listen failed — civetweb's mg_start only says
// it failed, so the reason is found by trying the bind ourselves.
//
//   FM_TRY(auto endpoint, parse_listen("127.0.0.1:0"));       // port 0: any free port
//   if (!server) return listen_error("[backend.dash]", endpoint, "the server did not start");
#pragma once

#include <cstdint>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

struct mg_context;

namespace flowmark::daemon {

// "ADDRESS:PORT" or "[IPV6]:PORT", an IP address (no host names), port 0 allowed.
Result<Endpoint> parse_listen(std::string_view text);

// An IPv6 `e` needs a civetweb built with IPv6 (Debian 12's is not): an error saying so,
// rather than civetweb's "possible problem binding to port".
Result<void> check_civetweb_family(std::string_view where, const Endpoint& e);

// "<where> listen: cannot listen on <e>: <reason> — <what to do>": the errno of a bind of
// `e` (EADDRINUSE, EACCES, EADDRNOTAVAIL... with a hint), or `otherwise` when the bind works.
Error listen_error(std::string_view where, const Endpoint& e, std::string_view otherwise);

// mg_stop(server), quickly: civetweb's accept thread sees the stop flag only between polls (up
// to 2 s), so a helper thread knocks on `port` of the listen address (loopback for a wildcard)
// until the server is gone. After it returns no request runs.
void stop_http_server(mg_context* server, const Endpoint& listen, std::uint16_t port,
                      std::string_view where) noexcept;

}  // namespace flowmark::daemon
