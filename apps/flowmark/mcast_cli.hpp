// The `flowmark mcast` command and its `multicast` twin: argument parsing only; the work
// is in flowmark::mcast.
#pragma once

#include <CLI/CLI.hpp>

#include "flowmark/mcast/commands.hpp"
#include "flowmark/mcast/options.hpp"

namespace flowmark::apps {

struct McastInvocation {
  mcast::RawOptions raw;
  mcast::Verb verb = mcast::Verb::kNoop;
  bool verbose = false;
  const char* program = "flowmark";  // prefix of log lines
};

// Adds say/recv/hear/noop (case-insensitive, so SAY|RECV|HEAR|NOOP work too) under `app`.
void add_mcast_verbs(CLI::App& app, McastInvocation& inv);
// Runs the parsed verb (one call to mcast::run_mcast); returns the exit code.
int run_mcast(const McastInvocation& inv);
// `multicast SAY|RECV|HEAR|NOOP ...` — the seed's grammar as a whole program.
int multicast_main(int argc, char** argv);

}  // namespace flowmark::apps
