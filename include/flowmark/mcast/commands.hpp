// flowmark::mcast — the SAY, RECV and HEAR commands, independent of argument parsing.
//
// Each takes resolved options, writes its output to `out`, reports problems on the
// default logger, and returns the exit code (see options.hpp).
//
//   auto o = resolve_recv(raw, getenv_lookup);
//   return o ? run_recv(*o, stdout) : exit_code_for(o.error());
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include "flowmark/mcast/options.hpp"

namespace flowmark::mcast {

int run_say(const SayOptions& o, std::FILE* in, std::FILE* out);
int run_recv(const RecvOptions& o, std::FILE* out);
int run_hear(const RecvOptions& o, std::FILE* out);

// HEAR's acknowledgement, as the Python tool words it:
//   HEAR [ <PAYLOAD, ASCII letters upper-cased> SAID ('<ip>', <port>) ] from <group>
// The echoed payload is cut so that the reply fits in `limit` bytes.
std::string hear_reply(std::string_view payload, const Endpoint& from, const IpAddress& group,
                       std::size_t limit);

}  // namespace flowmark::mcast
