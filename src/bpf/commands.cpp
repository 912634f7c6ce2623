#include "flowmark/bpf/commands.hpp"

#include <optional>
#include <string_view>

#include <fmt/format.h>

#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/exit_code.hpp"

namespace flowmark::bpf {
namespace {

std::optional<std::string_view> only(const BpfCommandOptions& a) {
  if (a.interface.empty()) return std::nullopt;
  return std::string_view(a.interface);
}

std::string owner_text(const HookInfo& h) {
  if (!h.owner_pid) return "leftover (no process holds it; `flowmark bpf clean` removes it)";
  return fmt::format("held by {} (pid {})", h.owner_comm, *h.owner_pid);
}

}  // namespace

int run_bpf_status(const BpfCommandOptions& a, std::FILE* out) {
  auto hooks = find_hooks(only(a));
  if (!hooks) {
    fmt::print(stderr, "flowmark: error: {}\n", hooks.error().message());
    return exit_code_for(hooks.error());
  }
  if (a.json) fmt::print(out, "{{\"hooks\":[");
  bool first = true;
  for (const auto& h : *hooks) {
    auto st = read_hook_status(h);
    if (a.json) {
      fmt::print(out,
                 "{}{{\"interface\":\"{}\",\"ifindex\":{},\"prog_id\":{},\"priority\":{},"
                 "\"handle\":{},\"owner_pid\":{},\"flows_map_id\":{},\"counters_map_id\":{}",
                 first ? "" : ",", h.ifname, h.ifindex, h.prog_id, kFilterPriority, kFilterHandle,
                 h.owner_pid ? fmt::format("{}", *h.owner_pid) : "null", h.flows_map_id,
                 h.counters_map_id);
      if (st) {
        const auto& c = st->counters;
        fmt::print(out,
                   ",\"flows\":{},\"marked\":{},\"marked_rule\":{},\"marked_handshake\":{},"
                   "\"not_in_map\":{},\"not_ipv6\":{},\"parse_error\":{},\"not_tcp_udp\":{}",
                   st->fill, c.marked, c.marked_rule, c.marked_handshake, c.not_in_map,
                   c.not_ipv6, c.parse_error, c.not_tcp_udp);
      }
      fmt::print(out, "}}");
    } else {
      fmt::print(out, "{} (index {}): clsact egress, priority {}, handle {:#x}: program {} {}\n",
                 h.ifname, h.ifindex, kFilterPriority, kFilterHandle, h.prog_id, kProgramName);
      fmt::print(out, "  {}\n", owner_text(h));
      if (st) {
        const auto& c = st->counters;
        fmt::print(out, "  flows in map {}: {}\n", h.flows_map_id, st->fill);
        fmt::print(out,
                   "  packets: marked {} (by flow entry) + {} (by rule) + {} (SYN-ACK, by handshake "
                   "entry), not in map {}, not IPv6 {}, not TCP/UDP {}, parse errors {}\n",
                   c.marked, c.marked_rule, c.marked_handshake, c.not_in_map, c.not_ipv6,
                   c.not_tcp_udp, c.parse_error);
      } else {
        fmt::print(out, "  maps unreadable: {}\n", st.error().message());
      }
    }
    first = false;
  }
  if (a.json) {
    fmt::print(out, "]}}\n");
  } else if (hooks->empty()) {
    fmt::print(out, "no flowmark hooks{} in this network namespace\n",
               a.interface.empty() ? "" : " on " + a.interface);
  }
  return kExitOk;
}

int run_bpf_clean(const BpfCommandOptions& a, std::FILE* out) {
  auto removed = clean_hooks(only(a), a.force);
  if (!removed) {
    fmt::print(stderr, "flowmark: error: {}\n", removed.error().message());
    return exit_code_for(removed.error());
  }
  for (const auto& h : *removed)
    fmt::print(out, "removed the flowmark filter from {} (program {})\n", h.ifname, h.prog_id);
  auto left = find_hooks(only(a));
  if (left) {
    for (const auto& h : *left)
      fmt::print(out, "kept {}: {} (--force removes it)\n", h.ifname, owner_text(h));
  }
  if (removed->empty() && (!left || left->empty())) fmt::print(out, "nothing to clean\n");
  return kExitOk;
}

std::string bpf_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitUsage},
      {kExitNoInterface},
      {kExitUnavailable, "the kernel refused (no BPF or TC support?)"},
      {kExitSoftware},
      {kExitNoPermission, "needs CAP_BPF and CAP_NET_ADMIN"},
  });
}

}  // namespace flowmark::bpf
