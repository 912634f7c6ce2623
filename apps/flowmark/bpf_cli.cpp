// `flowmark bpf status|clean`: argument parsing only; the work is in flowmark::bpf
// (commands.hpp): the flow-label TC hooks of flowmark in this network namespace.
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/bpf/commands.hpp"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/log.hpp"

namespace flowmark::apps {
namespace {

struct BpfArgs {
  bpf::BpfCommandOptions options;
  bool verbose = false;
};

}  // namespace

Command add_bpf_command(CLI::App& parent) {
  auto args = std::make_shared<BpfArgs>();
  auto* cmd =
      parent.add_subcommand("bpf", "the eBPF flow-label hooks of flowmark: status, clean-up");
  cmd->require_subcommand(1);
  cmd->footer(fmt::format(
      "Our filters sit on the clsact egress hook with priority {} and handle {:#x}, running "
      "program '{}'.\nNeeds CAP_BPF and CAP_NET_ADMIN (root).\n\n{}",
      bpf::kFilterPriority, bpf::kFilterHandle, bpf::kProgramName, bpf::bpf_exit_help()));
  auto* status = cmd->add_subcommand(
      "status", "our hooks per interface: program, owner, map fill and packet counters");
  status->add_flag("--json", args->options.json, "print one JSON object");
  auto* clean = cmd->add_subcommand(
      "clean", "remove the hooks a crashed flowmark left behind (clsact qdiscs stay)");
  clean->add_flag("--force", args->options.force, "also remove the hooks of running processes");
  for (auto* sub : {status, clean})
    sub->add_option("INTERFACE", args->options.interface, "only this interface (default: all)");
  cmd->add_flag("-v,--verbose", args->verbose, "log libbpf's messages too");
  return {cmd, [args, status] {
            init_logging("flowmark", args->verbose ? LogLevel::kDebug : LogLevel::kInfo);
            return status->parsed() ? bpf::run_bpf_status(args->options, stdout)
                                    : bpf::run_bpf_clean(args->options, stdout);
          }};
}

}  // namespace flowmark::apps
