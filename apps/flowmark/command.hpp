// A subcommand of `flowmark`. Every command has the same shape: its file here parses the
// command line with CLI11 into the options struct of the module that does the work (options
// shared by several commands are declared once, in options.hpp), and running it is one call
// to that module's runner (mcast::run_mcast, scitags::run_firefly, capture::run_observe,
// ...), which returns an exit code of the one table (flowmark/core/exit_code.hpp) that the
// command's --help lists. main() holds the one explicit list of commands.
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
Command add_report_command(CLI::App& parent);    // report_cli.cpp
#ifdef FLOWMARK_HAVE_BPF
Command add_bpf_command(CLI::App& parent);  // bpf_cli.cpp
#endif

}  // namespace flowmark::apps
