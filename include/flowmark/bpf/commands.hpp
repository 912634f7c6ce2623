// flowmark::bpf — the `flowmark bpf status|clean` commands, independent of argument parsing
// (apps/flowmark/bpf_cli.cpp parses): the flow-label TC hooks of flowmark in this network
// namespace — who holds them, what they count — and the removal of leftovers.
//
//   BpfCommandOptions o;  o.json = true;
//   return run_bpf_status(o, stdout);   // an exit code (core/exit_code.hpp)
#pragma once

#include <cstdio>
#include <string>

namespace flowmark::bpf {

struct BpfCommandOptions {
  std::string interface;  // empty: every interface
  bool json = false;      // status: one JSON object
  bool force = false;     // clean: also the hooks of running processes
};

int run_bpf_status(const BpfCommandOptions& o, std::FILE* out);
int run_bpf_clean(const BpfCommandOptions& o, std::FILE* out);

// The exit codes of both, as text for --help.
std::string bpf_exit_help();

}  // namespace flowmark::bpf
