// What the two loaders of flowmark::bpf (the TC flow-label marker, flowlabel.cpp, and the
// kernel-events tracer, kernel_events.cpp) share, private: errors for BPF and TC calls with
// what to do, per-CPU map reads, the filters on a clsact qdisc (rtnetlink) and our TC slot,
// program and map introspection by id, the process that holds a program.
#pragma once

#include <cerrno>
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

// What a loader needs, for the hints of its errors: the capabilities the EPERM hint names
// ("CAP_BPF/CAP_NET_ADMIN") and grants with setcap ("cap_bpf,cap_net_admin,cap_perfmon"),
// the hint for ENOENT/ESRCH (a missing hook; none when empty), and whether it hooks TC
// (ENODEV: the interface is gone; EOPNOTSUPP/EINVAL without BTF: the kernel is too old).
struct FailHints {
  std::string_view capabilities;
  std::string_view setcap;
  std::string_view missing_hook = {};
  bool tc = false;
};

// "<what>: <strerror> — <what to do>", the hint chosen by errno (privileges, missing
// interface or hook, kernel support). EPERM is a missing privilege; EACCES is the kernel
// refusing a valid caller (the verifier rejecting a program), not a privilege to grant.
std::unexpected<Error> fail_with_hint(std::string_view what, int err, const FailHints& hints);

// fail_with_hint for the TC flow-label marker, `bpf status` and `bpf clean`.
std::unexpected<Error> bpf_fail(std::string_view what, int err);

// The verifier's log of every program of a BPF object, kept for the error message when a
// load fails (libbpf asks the kernel for the log only after a failed first attempt).
class VerifierLog {
 public:
  // Gives each program of `obj` this log buffer; call between __open() and __load().
  void attach(bpf_object* obj);
  // The last `lines` lines of the log ("" when the kernel wrote none).
  std::string tail(std::size_t lines) const;

 private:
  std::vector<char> buf_;
};

// The error for a failed __load(): a rejection by the verifier (EACCES, or EINVAL with a
// log) says so and carries the tail of the verifier's log; anything else is `fail`'s.
template <typename Fail>
std::unexpected<Error> load_fail(std::string_view what, int err, const VerifierLog& log, Fail fail);
std::unexpected<Error> verifier_rejected(std::string_view what, int err, const std::string& log);

template <typename Fail>
std::unexpected<Error> load_fail(std::string_view what, int err, const VerifierLog& log,
                                 Fail fail) {
  const int e = err < 0 ? -err : err;
  std::string text = log.tail(40);
  if (e == EACCES || ((e == EINVAL || e == ENOSPC) && !text.empty()))
    return verifier_rejected(what, e, text);
  return fail(what, err);
}

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
