// A subcommand of `flowmark`: each command file adds its CLI11 subcommand and returns how
// to run it once parsed. main() holds the one explicit list of commands.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace flowmark::apps {

struct Command {
  CLI::App* app = nullptr;   // the subcommand (parsed() says it was chosen)
  std::function<int()> run;  // runs it; returns the exit code
};

Command add_registry_command(CLI::App& parent);  // registry_cli.cpp
Command add_label_command(CLI::App& parent);     // label_cli.cpp
Command add_firefly_command(CLI::App& parent);   // firefly_cli.cpp
Command add_observe_command(CLI::App& parent);   // observe_cli.cpp
Command add_stun_command(CLI::App& parent);      // stun_cli.cpp
#ifdef FLOWMARK_HAVE_BPF
Command add_bpf_command(CLI::App& parent);  // bpf_cli.cpp
#endif

}  // namespace flowmark::apps
