// flowmark::mcast — the SAY, RECV and HEAR commands, independent of argument parsing.
//
// Each takes resolved options, writes its output to `out`, reports problems on the
// default logger, and returns the exit code (see options.hpp). run_mcast() is the one
// runner the command line calls: it resolves the options as given, then runs the verb.
//
//   return run_mcast(Verb::kRecv, raw, getenv_lookup, stdin, stdout);
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

#include "flowmark/mcast/options.hpp"

namespace flowmark::mcast {

enum class Verb { kSay, kRecv, kHear, kNoop };

// Resolves `raw` for `verb` (a flag beats the environment `env`, which beats the default)
// and runs it: SAY reads `in`, every verb writes `out`. A value that does not resolve is
// logged and returns its exit code (2 for a bad value, 68 for an unknown interface, ...);
// kNoop returns 0.
int run_mcast(Verb verb, const RawOptions& raw, const EnvLookup& env, std::FILE* in,
              std::FILE* out);

int run_say(const SayOptions& o, std::FILE* in, std::FILE* out);
int run_recv(const RecvOptions& o, std::FILE* out);
int run_hear(const RecvOptions& o, std::FILE* out);

// HEAR's acknowledgement, as the Python tool words it:
//   HEAR [ <PAYLOAD, ASCII letters upper-cased> SAID ('<ip>', <port>) ] from <group>
// The echoed payload is cut so that the reply fits in `limit` bytes.
std::string hear_reply(std::string_view payload, const Endpoint& from, const IpAddress& group,
                       std::size_t limit);

}  // namespace flowmark::mcast
