// What the two loaders of flowmark::bpf (the TC flow-label marker, flowlabel.cpp, and the
// kernel-events tracer, kernel_events.cpp) share, private: errors for BPF and TC calls with
// what to do, per-CPU map reads, the filters on a clsact qdisc (rtnetlink) and our TC slot,
// program and map introspection by id, the process that holds a program.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::bpf::detail {

// "<what>: <strerror> — <what to do>", the hint chosen by errno (privileges, missing
// interface, kernel support).
std::unexpected<Error> bpf_fail(std::string_view what, int err);

// Slot 0 of a per-CPU array map: one T per possible CPU (the caller sums them). `fail` words
// the error (bpf_fail, or a program's own hints).
template <typename T, typename Fail>
Result<std::vector<T>> read_per_cpu_slot0(int map_fd, std::string_view what, Fail fail) {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return fail("cannot count the possible CPUs", ncpu);
  std::vector<T> per_cpu(static_cast<std::size_t>(ncpu));
  std::uint32_t zero = 0;
  if (int r = bpf_map_lookup_elem(map_fd, &zero, per_cpu.data()); r < 0) return fail(what, r);
  return per_cpu;
}

// Number of filters (of any kind) on the ingress and egress of `ifindex`'s clsact qdisc.
Result<std::size_t> count_clsact_filters(std::uint32_t ifindex);

struct ProgInfo {
  std::string name;
  std::vector<std::uint32_t> map_ids;
};
Result<ProgInfo> prog_info(std::uint32_t prog_id);

// Id of the map named `name` among `map_ids`; 0 when none.
std::uint32_t find_map(const std::vector<std::uint32_t>& map_ids, std::string_view name);

// A process that holds the program `prog_id` open (scans /proc/*/fdinfo), if any.
struct Owner {
  int pid = 0;
  std::string comm;
};
std::optional<Owner> find_prog_owner(std::uint32_t prog_id);

// libbpf options (without LIBBPF_OPTS, whose statement expression is not ISO C++).
bpf_tc_hook tc_hook(std::uint32_t ifindex, int attach_point);
bpf_tc_opts tc_opts_of_our_slot();  // our handle and priority

// The program id of the filter at our handle and priority on `ifindex`'s egress, if any.
Result<std::optional<std::uint32_t>> query_our_slot(std::uint32_t ifindex);

// Counters of a per-CPU counters map, summed.
Result<Counters> read_counters(int counters_map_fd);

// Sends libbpf's messages to the debug log (once per process; defined in flowlabel.cpp).
void install_libbpf_log();

}  // namespace flowmark::bpf::detail
