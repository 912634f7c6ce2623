// TC and BPF plumbing shared by the marker, `bpf status` and `bpf clean`.
#include "loader_common.hpp"

#include <dirent.h>
#include <linux/netlink.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "flowlabel.h"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/netlink_walk.hpp"

namespace flowmark::bpf::detail {

std::unexpected<Error> fail_with_hint(std::string_view what, int err, const FailHints& hints) {
  if (err < 0) err = -err;
  std::string hint;
  switch (err) {
    case EPERM:
      hint = fmt::format(
          "no {} — run as root or grant the capabilities (setcap {}+ep, or "
          "AmbientCapabilities= in the systemd unit)",
          hints.capabilities, hints.setcap);
      break;
    case EACCES:
      hint = "the kernel refused it (not a missing privilege: EPERM would say so)";
      break;
    case ENOENT:
    case ESRCH: hint = hints.missing_hook; break;
    case ENODEV:
      if (hints.tc) hint = "the interface does not exist (any more) — check its name";
      break;
    case EOPNOTSUPP:
    case EINVAL:
      if (hints.tc && !std::filesystem::exists("/sys/kernel/btf/vmlinux"))
        hint =
            "this kernel has no BTF (/sys/kernel/btf/vmlinux) and may be too old — "
            "flowmark needs Linux >= 5.10 with BPF, cls_bpf and the clsact qdisc";
      break;
    case ENOSYS: hint = "the kernel was built without BPF (CONFIG_BPF_SYSCALL)"; break;
    default: break;
  }
  std::string message = fmt::format("{}: {}", what, std::strerror(err));
  if (!hint.empty()) message += " — " + hint;
  return std::unexpected(Error(std::error_code(err, std::system_category()), message));
}

std::unexpected<Error> bpf_fail(std::string_view what, int err) {
  static constexpr FailHints kMarker{
      .capabilities = "CAP_BPF/CAP_NET_ADMIN",
      .setcap = "cap_bpf,cap_net_admin,cap_perfmon",
      .tc = true,
  };
  return fail_with_hint(what, err, kMarker);
}

void VerifierLog::attach(bpf_object* obj) {
  // Level 1 logs of a rejected program stay well below 1 MiB; a longer one is cut by the
  // kernel (ENOSPC), still with its start.
  buf_.assign(std::size_t{1} << 20, '\0');
  bpf_program* prog = nullptr;
  bpf_object__for_each_program(prog, obj) {
    (void)bpf_program__set_log_buf(prog, buf_.data(), buf_.size());
  }
}

std::string VerifierLog::tail(std::size_t lines) const {
  if (buf_.empty()) return {};
  std::string_view text(buf_.data(), ::strnlen(buf_.data(), buf_.size()));
  while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::size_t start = text.size(), n = 0;
  while (start > 0) {
    const auto nl = text.rfind('\n', start - 1);
    if (nl == std::string_view::npos) {
      start = 0;
      break;
    }
    if (++n == lines) {
      start = nl + 1;
      break;
    }
    start = nl;
  }
  return std::string(text.substr(start));
}

std::unexpected<Error> verifier_rejected(std::string_view what, int err, const std::string& log) {
  std::string message = fmt::format(
      "{}: {} — the kernel's verifier rejected the program (a flowmark bug, or a kernel it "
      "does not support: report it with this log)",
      what, std::strerror(err));
  message += log.empty() ? std::string(" (the kernel gave no log)")
                         : fmt::format("; verifier log (end):\n{}", log);
  return std::unexpected(Error(std::error_code(err, std::system_category()), message));
}

namespace {

// Sends one RTM_GETTFILTER dump for `parent` and counts the filter messages.
Result<std::size_t> count_filters(int fd, std::uint32_t ifindex, std::uint32_t parent,
                                  std::uint32_t seq) {
  struct {
    nlmsghdr nh;
    tcmsg tc;
  } req{};
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(tcmsg));
  req.nh.nlmsg_type = RTM_GETTFILTER;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.nh.nlmsg_seq = seq;
  req.tc.tcm_family = AF_UNSPEC;
  req.tc.tcm_ifindex = static_cast<int>(ifindex);
  req.tc.tcm_parent = parent;
  if (::send(fd, &req, req.nh.nlmsg_len, 0) < 0) return fail_errno("netlink send");
  std::size_t count = 0;
  alignas(nlmsghdr) std::array<char, 32768> buf;
  for (;;) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno("netlink recv");
    }
    auto len = static_cast<std::size_t>(n);
    for (auto* nh = netlink_first<nlmsghdr>(buf.data()); netlink_ok(nh, len);
         nh = netlink_next(nh, len)) {
      if (nh->nlmsg_seq != seq) continue;
      if (nh->nlmsg_type == NLMSG_DONE) return count;
      if (nh->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(nh));
        if (e->error == 0) return count;
        // No qdisc or no such parent: no filters there.
        if (e->error == -EINVAL || e->error == -ENOENT) return std::size_t{0};
        return bpf_fail("listing TC filters", -e->error);
      }
      if (nh->nlmsg_type == RTM_NEWTFILTER) ++count;
    }
  }
}

}  // namespace

Result<std::size_t> count_clsact_filters(std::uint32_t ifindex) {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
  if (!fd) return fail_errno("netlink socket");
  FM_TRY(auto in, count_filters(fd.get(), ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS), 1));
  FM_TRY(auto out, count_filters(fd.get(), ifindex, TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS), 2));
  return in + out;
}

Result<ProgInfo> prog_info(std::uint32_t prog_id) {
  UniqueFd fd(bpf_prog_get_fd_by_id(prog_id));
  if (!fd) return bpf_fail(fmt::format("cannot open BPF program {}", prog_id), errno);
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  if (int r = bpf_obj_get_info_by_fd(fd.get(), &info, &len); r < 0)
    return bpf_fail(fmt::format("cannot read BPF program {}", prog_id), r);
  ProgInfo out;
  out.name = std::string(info.name, strnlen(info.name, sizeof(info.name)));
  std::uint32_t nr = info.nr_map_ids;
  if (nr > 0) {
    out.map_ids.resize(nr);
    info = bpf_prog_info{};
    info.nr_map_ids = nr;
    info.map_ids = reinterpret_cast<std::uintptr_t>(out.map_ids.data());
    len = sizeof(info);
    if (int r = bpf_obj_get_info_by_fd(fd.get(), &info, &len); r < 0)
      return bpf_fail(fmt::format("cannot read BPF program {}", prog_id), r);
    out.map_ids.resize(std::min(nr, info.nr_map_ids));
  }
  return out;
}

std::uint32_t find_map(const std::vector<std::uint32_t>& map_ids, std::string_view name) {
  for (auto id : map_ids) {
    UniqueFd fd(bpf_map_get_fd_by_id(id));
    if (!fd) continue;
    bpf_map_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd.get(), &info, &len) < 0) continue;
    if (std::string_view(info.name, strnlen(info.name, sizeof(info.name))) == name) return id;
  }
  return 0;
}

std::optional<Owner> find_prog_owner(std::uint32_t prog_id) {
  const std::string want = fmt::format("prog_id:\t{}", prog_id);
  std::error_code ec;
  for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = proc.path().filename();
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec2;
    for (const auto& fdinfo : std::filesystem::directory_iterator(proc.path() / "fdinfo", ec2)) {
      // Only BPF program fds: their link points at "anon_inode:bpf-prog".
      std::error_code ec3;
      auto target =
          std::filesystem::read_symlink(proc.path() / "fd" / fdinfo.path().filename(), ec3);
      if (ec3 || target.native() != "anon_inode:bpf-prog") continue;
      std::ifstream in(fdinfo.path());
      std::string line;
      while (std::getline(in, line)) {
        if (line == want) {
          Owner o;
          o.pid = std::stoi(pid);
          std::ifstream comm(proc.path() / "comm");
          std::getline(comm, o.comm);
          return o;
        }
      }
    }
  }
  return std::nullopt;
}

bpf_tc_hook tc_hook(std::uint32_t ifindex, int attach_point) {
  bpf_tc_hook hook{};
  hook.sz = sizeof(hook);
  hook.ifindex = static_cast<int>(ifindex);
  hook.attach_point = static_cast<bpf_tc_attach_point>(attach_point);
  return hook;
}

bpf_tc_opts tc_opts_of_our_slot() {
  bpf_tc_opts opts{};
  opts.sz = sizeof(opts);
  opts.handle = kFilterHandle;
  opts.priority = kFilterPriority;
  return opts;
}

Result<std::optional<std::uint32_t>> query_our_slot(std::uint32_t ifindex) {
  auto hook = tc_hook(ifindex, BPF_TC_EGRESS);
  auto opts = tc_opts_of_our_slot();
  int r = bpf_tc_query(&hook, &opts);
  if (r == 0) return std::optional<std::uint32_t>(opts.prog_id);
  if (r == -EPERM || r == -EACCES)
    return bpf_fail(fmt::format("cannot query TC filters on interface {}", ifindex), r);
  // ENOENT (no such filter), EINVAL (no clsact qdisc), ENODEV: nothing of ours there.
  return std::optional<std::uint32_t>();
}

Result<Counters> read_counters(int counters_map_fd) {
  FM_TRY(auto per_cpu, read_per_cpu_slot0<flowmark_counters>(
                           counters_map_fd, "cannot read the BPF counters", bpf_fail));
  Counters c;
  for (const auto& p : per_cpu) {
    c.marked += p.marked;
    c.marked_rule += p.marked_rule;
    c.marked_handshake += p.marked_handshake;
    c.not_in_map += p.not_in_map;
    c.not_ipv6 += p.not_ipv6;
    c.parse_error += p.parse_error;
    c.not_tcp_udp += p.not_tcp_udp;
    c.ext_added += p.ext_added;
    c.ext_too_big += p.ext_too_big;
    c.ext_skipped += p.ext_skipped;
  }
  return c;
}

}  // namespace flowmark::bpf::detail
