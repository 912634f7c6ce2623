// TcpStateWatcher: the libbpf skeleton of bpf/kevents.bpf.c, its tracepoint link and its
// ring buffer.
#include "flowmark/bpf/kernel_events.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>

#include "flowlabel.h"
#include "flowmark/core/fd.hpp"
#include "kevents.h"
#include "kevents_bpf.skel.h"
#include "loader_common.hpp"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71  // Linux >= 5.14
#endif

static_assert(sizeof(flowmark_kevent) == 80);
static_assert(offsetof(flowmark_kevent, saddr) == 32);
static_assert(offsetof(flowmark_kevent, sport) == 64);
static_assert(offsetof(flowmark_kevent, kind) == 70);
static_assert(sizeof(flowmark_kev_counters) == 96);
static_assert(sizeof(flowmark_kev_net_key) == 20);

namespace flowmark::bpf {
namespace {

constexpr const char* kBtfPath = "/sys/kernel/btf/vmlinux";

// The tracer's errors: it needs CAP_PERFMON, not CAP_NET_ADMIN, and a tracepoint.
std::unexpected<Error> tracer_fail(std::string_view what, int err) {
  static constexpr detail::FailHints kTracer{
      .capabilities = "CAP_BPF/CAP_PERFMON",
      .setcap = "cap_bpf,cap_perfmon",
      .missing_hook =
          "the kernel has no tracepoint sock:inet_sock_set_state (Linux >= 4.16 with BTF "
          "tracepoints, >= 5.5, is needed) — use the `sockets` source instead",
  };
  return detail::fail_with_hint(what, err, kTracer);
}

Endpoint endpoint_of(std::uint16_t family, const std::uint8_t* addr, std::uint16_t port) {
  if (family == 2) {  // AF_INET
    in_addr a{};
    std::memcpy(&a, addr, 4);
    return {IpAddress::v4(a), port};
  }
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (std::memcmp(addr, kMapped, 12) == 0) {  // an IPv4 connection of an IPv6 socket
    in_addr a{};
    std::memcpy(&a, addr + 12, 4);
    return {IpAddress::v4(a), port};
  }
  in6_addr a{};
  std::memcpy(&a, addr, 16);
  return {IpAddress::v6(a), port};
}

bool power_of_two(std::size_t n) { return n != 0 && (n & (n - 1)) == 0; }

// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on
// hybrid systems); "" when it is not — as for a process started by `ip netns exec`, which
// mounts a /sys of its own without the cgroup file systems.
std::string cgroup2_root() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
    const auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 8, "cgroup2 ") != 0) continue;
    std::istringstream fields(line.substr(0, dash));
    std::string id, parent, dev, root, mountpoint;
    if (fields >> id >> parent >> dev >> root >> mountpoint && root == "/") return mountpoint;
  }
  return {};
}

}  // namespace

struct TcpStateWatcher::Impl {
  kevents_bpf* skel = nullptr;
  ring_buffer* ring = nullptr;
  Handler handler;
  std::uint64_t cgroup = 0;
  bool premark = false;
  bool premark_syn = false;
  std::uint32_t handshake_entries = 0;

  ~Impl() {
    if (ring) ring_buffer__free(ring);
    if (skel) kevents_bpf__destroy(skel);
  }

  static int on_record(void* ctx, void* data, std::size_t size) {
    auto* self = static_cast<Impl*>(ctx);
    if (size < sizeof(flowmark_kevent)) return 0;
    flowmark_kevent k;
    std::memcpy(&k, data, sizeof(k));
    TcpStateEvent e;
    e.kind = k.kind == FLOWMARK_KEV_END ? TcpStateEvent::Kind::kEnd : TcpStateEvent::Kind::kStart;
    e.cookie = k.cookie;
    e.local = endpoint_of(k.family, k.saddr, k.sport);
    e.remote = endpoint_of(k.family, k.daddr, k.dport);
    e.ktime_ns = k.ktime_ns;
    e.bytes_acked = k.bytes_acked;
    e.bytes_received = k.bytes_received;
    // Entering CLOSE_WAIT means a FIN came in, and the kernel counts its sequence number
    // in bytes_received: not a byte of data.
    constexpr std::uint8_t kTcpCloseWait = 8;
    if (k.newstate == kTcpCloseWait && e.bytes_received > 0) --e.bytes_received;
    e.old_state = k.oldstate;
    e.new_state = k.newstate;
    self->handler(e);
    return 0;
  }
};

Result<std::uint64_t> cgroup_id_of(const std::string& path) {
  struct statfs fs{};
  if (::statfs(path.c_str(), &fs) != 0) {
    return fail(Errc::kNotFound, fmt::format("cgroup '{}': {} — give a directory of the cgroup "
                                             "v2 hierarchy, e.g. /sys/fs/cgroup/system.slice",
                                             path, std::strerror(errno)));
  }
  if (fs.f_type != CGROUP2_SUPER_MAGIC) {
    return fail(Errc::kInvalidArgument,
                fmt::format("cgroup '{}' is not in a cgroup v2 file system (mounted at "
                            "/sys/fs/cgroup on current systems)",
                            path));
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail(Errc::kInvalidArgument, fmt::format("cgroup '{}' is not a directory", path));
  }
  return static_cast<std::uint64_t>(st.st_ino);
}

TcpStateWatcher::TcpStateWatcher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TcpStateWatcher::TcpStateWatcher(TcpStateWatcher&&) noexcept = default;
TcpStateWatcher& TcpStateWatcher::operator=(TcpStateWatcher&&) noexcept = default;
TcpStateWatcher::~TcpStateWatcher() = default;

Result<TcpStateWatcher> TcpStateWatcher::open(const TcpStateFilter& filter, Handler handler) {
  if (!std::filesystem::exists(kBtfPath)) {
    return fail(Errc::kUnsupported,
                fmt::format("cannot trace TCP state changes: this kernel exposes no BTF ({}) — "
                            "it needs CONFIG_DEBUG_INFO_BTF (Debian's kernels have it); or use "
                            "the `sockets` source",
                            kBtfPath));
  }
  if (!power_of_two(filter.ring_bytes) || filter.ring_bytes < 4096) {
    return fail(
        Errc::kInvalidArgument,
        fmt::format("ring buffer of {} bytes: a power of two ≥ 4096 is needed", filter.ring_bytes));
  }
  detail::install_libbpf_log();
  auto impl = std::make_unique<Impl>();
  impl->handler = std::move(handler);
  if (!filter.cgroup.empty()) {
    FM_TRY(impl->cgroup, cgroup_id_of(filter.cgroup));
  }
  impl->skel = kevents_bpf__open();
  if (!impl->skel) return tracer_fail("cannot open the embedded TCP state BPF program", errno);
  auto* ro = impl->skel->rodata;
  if (!filter.ports.empty()) {
    ro->filter_ports = 1;
    for (auto [first, last] : filter.ports) {
      for (std::uint32_t p = first; p <= last; ++p) ro->port_set[p >> 6] |= 1ULL << (p & 63);
    }
  }
  ro->cgroup_id = impl->cgroup;
  if (filter.own_netns_only) {
    struct stat ns{};
    if (::stat("/proc/self/ns/net", &ns) != 0)
      return tracer_fail("cannot read this process's network namespace", errno);
    ro->netns_ino = static_cast<std::uint32_t>(ns.st_ino);
    // The namespace's cookie, for the request sockets of the passive side (sock_ops).
    UniqueFd probe(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    std::uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (!probe || ::getsockopt(probe.get(), SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0)
      return tracer_fail("cannot read this network namespace's cookie", errno);
    ro->netns_cookie = cookie;
  }
  if (int r = bpf_map__set_max_entries(impl->skel->maps.events,
                                       static_cast<std::uint32_t>(filter.ring_bytes));
      r < 0)
    return tracer_fail("cannot size the ring buffer", r);
  std::vector<flowmark_kev_net_key> skip;
  if (const auto& p = filter.premark) {
    if (int r = bpf_map__reuse_fd(impl->skel->maps.flows, p->map.flows_fd); r < 0)
      return tracer_fail("cannot share the flow-label marker's map", r);
    if (int r = bpf_map__reuse_fd(impl->skel->maps.flows_fill, p->map.fill_fd); r < 0)
      return tracer_fail("cannot share the flow-label marker's fill counter", r);
    if (p->map.handshakes_fd >= 0) {
      if (int r = bpf_map__reuse_fd(impl->skel->maps.handshakes, p->map.handshakes_fd); r < 0)
        return tracer_fail("cannot share the flow-label marker's handshake map", r);
      bpf_map_info info{};
      std::uint32_t len = sizeof(info);
      if (bpf_obj_get_info_by_fd(p->map.handshakes_fd, &info, &len) == 0)
        impl->handshake_entries = info.max_entries;
    }
    ro->premark = 1;
    ro->premark_capacity = p->map.capacity;
    for (std::size_t i = 0; i < p->labels.size(); ++i)
      ro->premark_labels[i] = p->labels[i] & 0xFFFFF;
    ro->premark_experiment = p->experiment;
    ro->premark_activity = p->activity;
    ro->premark_ext_header = static_cast<std::uint8_t>(p->ext_header);
    for (const auto& n : p->skip) {
      if (!n.address.is_v6()) continue;
      flowmark_kev_net_key k{};
      k.prefixlen = n.prefix;
      std::memcpy(k.addr, n.address.bytes(), 16);
      skip.push_back(k);
    }
    if (skip.size() > FLOWMARK_KEV_MAX_SKIP_NETS)
      return fail(Errc::kInvalidArgument, fmt::format("{} IPv6 networks never to mark: at most {}",
                                                      skip.size(), FLOWMARK_KEV_MAX_SKIP_NETS));
    ro->premark_skip_nets = skip.empty() ? 0 : 1;
  } else {
    // Nothing to mark: neither load nor attach the connect hook.
    bpf_program__set_autoload(impl->skel->progs.flowmark_tcp_connect, false);
  }
  detail::VerifierLog verifier_log;
  verifier_log.attach(impl->skel->obj);
  if (int r = kevents_bpf__load(impl->skel); r < 0)
    return detail::load_fail("cannot load the TCP state BPF program", r, verifier_log, tracer_fail);
  const std::uint8_t one = 1;
  for (const auto& k : skip) {
    if (int r = bpf_map_update_elem(bpf_map__fd(impl->skel->maps.skip_nets), &k, &one, BPF_ANY);
        r < 0)
      return tracer_fail("cannot fill the BPF map of networks never marked", r);
  }
  impl->skel->links.flowmark_tcp_state = bpf_program__attach(impl->skel->progs.flowmark_tcp_state);
  if (!impl->skel->links.flowmark_tcp_state)
    return tracer_fail("cannot attach to the tracepoint sock:inet_sock_set_state", -errno);
  impl->premark = filter.premark.has_value();
  if (impl->premark) {
    // The connect hook: a sock_ops program on the cgroup of the filter, or on the root of
    // the cgroup v2 hierarchy (every socket of the host; the program keeps this namespace's
    // own). A link: the kernel detaches it when the process ends, even by a crash. Without
    // it the flows are marked from ESTABLISHED: the SYN leaves unmarked.
    std::string where = filter.cgroup.empty() ? cgroup2_root() : filter.cgroup;
    std::string why;
    if (where.empty()) {
      why =
          "no cgroup v2 file system is mounted here (under `ip netns exec`, /sys is "
          "remounted without it: start the service with `nsenter --net=/run/netns/NAME`)";
    } else {
      UniqueFd dir(::open(where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dir) {
        why = fmt::format("{}: {}", where, std::strerror(errno));
      } else {
        impl->skel->links.flowmark_tcp_connect =
            bpf_program__attach_cgroup(impl->skel->progs.flowmark_tcp_connect, dir.get());
        if (!impl->skel->links.flowmark_tcp_connect)
          why = fmt::format("attaching a sock_ops program to cgroup {}: {}", where,
                            std::strerror(errno));
      }
    }
    impl->premark_syn = why.empty();
    if (!impl->premark_syn)
      spdlog::warn(
          "cannot hook TCP connects ({}): connections are marked from ESTABLISHED, "
          "their SYN leaves unmarked",
          why);
  }
  impl->ring =
      ring_buffer__new(bpf_map__fd(impl->skel->maps.events), &Impl::on_record, impl.get(), nullptr);
  if (!impl->ring) return tracer_fail("cannot open the BPF ring buffer", errno);
  return TcpStateWatcher(std::move(impl));
}

int TcpStateWatcher::fd() const noexcept { return ring_buffer__epoll_fd(impl_->ring); }

Result<int> TcpStateWatcher::poll() {
  int n = ring_buffer__poll(impl_->ring, 0);
  if (n < 0 && n != -EINTR) return tracer_fail("reading the BPF ring buffer", n);
  return n < 0 ? 0 : n;
}

Result<TcpStateCounters> TcpStateWatcher::counters() const {
  FM_TRY(auto per_cpu, detail::read_per_cpu_slot0<flowmark_kev_counters>(
                           bpf_map__fd(impl_->skel->maps.kev_counters),
                           "cannot read the TCP state counters", tracer_fail));
  TcpStateCounters c;
  for (const auto& p : per_cpu) {
    c.starts += p.starts;
    c.ends += p.ends;
    c.ring_full += p.ring_full;
    c.skipped_port += p.skipped_port;
    c.skipped_cgroup += p.skipped_cgroup;
    c.skipped_family += p.skipped_family;
    c.skipped_netns += p.skipped_netns;
    c.premarked += p.premarked;
    c.premark_full += p.premark_full;
    c.premark_skipped += p.premark_skipped;
    c.premark_removed += p.premark_removed;
    c.handshake_marked += p.handshake_marked;
  }
  return c;
}

std::uint64_t TcpStateWatcher::cgroup_id() const noexcept { return impl_->cgroup; }
bool TcpStateWatcher::premarking() const noexcept { return impl_->premark; }
bool TcpStateWatcher::premarking_syn() const noexcept { return impl_->premark_syn; }
std::uint32_t TcpStateWatcher::handshake_entries() const noexcept {
  return impl_->handshake_entries;
}

}  // namespace flowmark::bpf
