// `flowmark bpf status|clean`: the flow-label TC hooks of flowmark in this network namespace.
#include <memory>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/log.hpp"

namespace flowmark::apps {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;

struct BpfArgs {
  std::string interface;  // empty: every interface
  bool json = false;
  bool force = false;
  bool verbose = false;
};

std::optional<std::string_view> only(const BpfArgs& a) {
  if (a.interface.empty()) return std::nullopt;
  return std::string_view(a.interface);
}

std::string owner_text(const bpf::HookInfo& h) {
  if (!h.owner_pid) return "leftover (no process holds it; `flowmark bpf clean` removes it)";
  return fmt::format("held by {} (pid {})", h.owner_comm, *h.owner_pid);
}

int run_status(const BpfArgs& a) {
  auto hooks = bpf::find_hooks(only(a));
  if (!hooks) {
    fmt::print(stderr, "flowmark: error: {}\n", hooks.error().message());
    return kExitFailure;
  }
  if (a.json) fmt::print("{{\"hooks\":[");
  bool first = true;
  for (const auto& h : *hooks) {
    auto st = bpf::read_hook_status(h);
    if (a.json) {
      fmt::print(
          "{}{{\"interface\":\"{}\",\"ifindex\":{},\"prog_id\":{},\"priority\":{},"
          "\"handle\":{},\"owner_pid\":{},\"flows_map_id\":{},\"counters_map_id\":{}",
          first ? "" : ",", h.ifname, h.ifindex, h.prog_id, bpf::kFilterPriority,
          bpf::kFilterHandle, h.owner_pid ? fmt::format("{}", *h.owner_pid) : "null",
          h.flows_map_id, h.counters_map_id);
      if (st) {
        const auto& c = st->counters;
        fmt::print(
            ",\"flows\":{},\"marked\":{},\"not_in_map\":{},\"not_ipv6\":{},"
            "\"parse_error\":{},\"not_tcp_udp\":{}",
            st->fill, c.marked, c.not_in_map, c.not_ipv6, c.parse_error, c.not_tcp_udp);
      }
      fmt::print("}}");
    } else {
      fmt::print("{} (index {}): clsact egress, priority {}, handle {:#x}: program {} {}\n",
                 h.ifname, h.ifindex, bpf::kFilterPriority, bpf::kFilterHandle, h.prog_id,
                 bpf::kProgramName);
      fmt::print("  {}\n", owner_text(h));
      if (st) {
        const auto& c = st->counters;
        fmt::print("  flows in map {}: {}\n", h.flows_map_id, st->fill);
        fmt::print(
            "  packets: marked {}, not in map {}, not IPv6 {}, not TCP/UDP {}, "
            "parse errors {}\n",
            c.marked, c.not_in_map, c.not_ipv6, c.not_tcp_udp, c.parse_error);
      } else {
        fmt::print("  maps unreadable: {}\n", st.error().message());
      }
    }
    first = false;
  }
  if (a.json) {
    fmt::print("]}}\n");
  } else if (hooks->empty()) {
    fmt::print("no flowmark hooks{} in this network namespace\n",
               a.interface.empty() ? "" : " on " + a.interface);
  }
  return kExitOk;
}

int run_clean(const BpfArgs& a) {
  auto removed = bpf::clean_hooks(only(a), a.force);
  if (!removed) {
    fmt::print(stderr, "flowmark: error: {}\n", removed.error().message());
    return kExitFailure;
  }
  for (const auto& h : *removed)
    fmt::print("removed the flowmark filter from {} (program {})\n", h.ifname, h.prog_id);
  auto left = bpf::find_hooks(only(a));
  if (left) {
    for (const auto& h : *left)
      fmt::print("kept {}: {} (--force removes it)\n", h.ifname, owner_text(h));
  }
  if (removed->empty() && (!left || left->empty())) fmt::print("nothing to clean\n");
  return kExitOk;
}

}  // namespace

Command add_bpf_command(CLI::App& parent) {
  auto args = std::make_shared<BpfArgs>();
  auto* cmd =
      parent.add_subcommand("bpf", "the eBPF flow-label hooks of flowmark: status, clean-up");
  cmd->require_subcommand(1);
  cmd->footer(fmt::format(
      "Our filters sit on the clsact egress hook with priority {} and handle {:#x}, running "
      "program '{}'.\nNeeds CAP_BPF and CAP_NET_ADMIN (root). Exit codes: 0 success, 1 "
      "failure, 2 usage error.",
      bpf::kFilterPriority, bpf::kFilterHandle, bpf::kProgramName));
  auto* status = cmd->add_subcommand(
      "status", "our hooks per interface: program, owner, map fill and packet counters");
  status->add_flag("--json", args->json, "print one JSON object");
  auto* clean = cmd->add_subcommand(
      "clean", "remove the hooks a crashed flowmark left behind (clsact qdiscs stay)");
  clean->add_flag("--force", args->force, "also remove the hooks of running processes");
  for (auto* sub : {status, clean})
    sub->add_option("INTERFACE", args->interface, "only this interface (default: all)");
  cmd->add_flag("-v,--verbose", args->verbose, "log libbpf's messages too");
  return {cmd, [args, status] {
            init_logging("flowmark", args->verbose ? LogLevel::kDebug : LogLevel::kInfo);
            return status->parsed() ? run_status(*args) : run_clean(*args);
          }};
}

}  // namespace flowmark::apps
