// FlowLabelMarker: the libbpf skeleton of bpf/flowlabel.bpf.c, its TC filters and its map.
#include "flowmark/bpf/flowlabel.hpp"

#include <ifaddrs.h>
#include <net/if.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "flowlabel.h"
#include "flowlabel_bpf.skel.h"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/interface.hpp"
#include "loader_common.hpp"

// The layout both sides read (bpf/flowlabel.h): any change must be made on both sides.
static_assert(sizeof(flowmark_flow_key) == 40);
static_assert(offsetof(flowmark_flow_key, src_port) == 32);
static_assert(offsetof(flowmark_flow_key, protocol) == 36);
static_assert(sizeof(flowmark_flow_value) == 8);
static_assert(sizeof(flowmark_counters) == 80);
static_assert(sizeof(flowmark_rule_key) == 20);
static_assert(sizeof(flowmark_rule_slot) == 12);
static_assert(sizeof(flowmark_rule_value) == 8 + 12 * FLOWMARK_RULE_SLOTS);
static_assert(flowmark::bpf::kMaxRulePortRanges == FLOWMARK_RULE_SLOTS);
static_assert(flowmark::bpf::kMaxRulePrefixes == FLOWMARK_RULE_PREFIXES_MAX);
static_assert(static_cast<int>(flowmark::bpf::ExtHeader::kBoth) == FLOWMARK_EXT_BOTH);
static_assert(static_cast<int>(flowmark::bpf::ExtHeader::kHopByHop) == FLOWMARK_EXT_HOP_BY_HOP);
static_assert(static_cast<int>(flowmark::bpf::ExtHeader::kDestinationOptions) ==
              FLOWMARK_EXT_DEST_OPTIONS);

namespace flowmark::bpf {
namespace {

using detail::bpf_fail;

// libbpf's own messages go to the debug log; warnings are kept for the next error message.
thread_local std::string g_libbpf_warnings;

int libbpf_log(libbpf_print_level level, const char* format, va_list args) {
  char buf[1024];
  va_list copy;
  va_copy(copy, args);
  (void)std::vsnprintf(buf, sizeof(buf), format, copy);  // truncation is fine for a log
  va_end(copy);
  std::string_view line(buf);
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  if (level == LIBBPF_WARN && g_libbpf_warnings.size() < 4096) {
    g_libbpf_warnings += line;
    g_libbpf_warnings += '\n';
  }
  spdlog::debug("libbpf: {}", line);
  return 0;
}

Result<flowmark_flow_key> make_key(const FlowTuple& f) {
  if (!f.src.is_v6() || !f.dst.is_v6())
    return fail(Errc::kInvalidArgument,
                fmt::format("flow {} -> {}: only IPv6 flows carry a flow label", f.src.to_string(),
                            f.dst.to_string()));
  if (f.protocol != IPPROTO_TCP && f.protocol != IPPROTO_UDP)
    return fail(
        Errc::kInvalidArgument,
        fmt::format("flow protocol {}: only TCP (6) and UDP (17) flows are marked", f.protocol));
  flowmark_flow_key k{};  // pads zeroed: the kernel hashes every byte
  std::memcpy(k.src_addr, f.src.bytes(), 16);
  std::memcpy(k.dst_addr, f.dst.bytes(), 16);
  k.src_port = htons(f.src_port);
  k.dst_port = htons(f.dst_port);
  k.protocol = f.protocol;
  return k;
}

std::string describe(const FlowTuple& f) {
  return fmt::format("{} [{}]:{} -> [{}]:{}", f.protocol == IPPROTO_TCP ? "tcp" : "udp",
                     f.src.to_string(), f.src_port, f.dst.to_string(), f.dst_port);
}

// Interfaces whose frames start with an Ethernet header: what the program parses.
Result<void> check_link_type(const std::string& ifname) {
  std::ifstream in("/sys/class/net/" + ifname + "/type");
  int type = 0;
  if (!(in >> type)) return {};  // cannot tell: let the kernel decide
  constexpr int kArphrdEther = 1, kArphrdLoopback = 772;
  if (type != kArphrdEther && type != kArphrdLoopback)
    return fail(Errc::kUnsupported,
                fmt::format("cannot mark on {}: link type {} has no Ethernet header (the "
                            "program parses Ethernet frames; choose the Ethernet interface "
                            "that carries this traffic)",
                            ifname, type));
  return {};
}

}  // namespace

std::uint8_t ext_header_byte(ExtHeader ext, bool write_label) noexcept {
  auto b = static_cast<std::uint8_t>(ext);
  if (!write_label) b |= FLOWMARK_EXT_KEEP_LABEL;
  return b;
}

namespace detail {
void install_libbpf_log() {
  static const bool done = [] {
    libbpf_set_print(libbpf_log);
    return true;
  }();
  (void)done;
}
}  // namespace detail

using detail::install_libbpf_log;

struct FlowLabelMarker::Impl {
  flowlabel_bpf* skel = nullptr;
  int prog_fd = -1;
  int flows_fd = -1;
  int counters_fd = -1;
  int rules_fd = -1;
  std::uint32_t prog_id = 0;
  // The entries in `flows`, counted by both writers: set()/erase() here and the
  // kernel-events program that marks a connection before its first packet (it shares the
  // map and this counter). A one-entry BPF array mapped into memory; atomics on both sides.
  UniqueFd fill_fd;
  void* fill_page = nullptr;
  MapStats stats;
  std::vector<Attachment> attached;

  std::atomic_ref<std::uint64_t> fill() const {
    return std::atomic_ref<std::uint64_t>(*static_cast<std::uint64_t*>(fill_page));
  }

  ~Impl() {
    if (fill_page) ::munmap(fill_page, static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)));
    if (skel) flowlabel_bpf__destroy(skel);
  }
};

FlowLabelMarker::FlowLabelMarker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FlowLabelMarker::FlowLabelMarker(FlowLabelMarker&&) noexcept = default;
FlowLabelMarker& FlowLabelMarker::operator=(FlowLabelMarker&& o) noexcept {
  if (this != &o) {
    detach_all();
    impl_ = std::move(o.impl_);
  }
  return *this;
}
FlowLabelMarker::~FlowLabelMarker() { detach_all(); }

Result<FlowLabelMarker> FlowLabelMarker::load(const MarkerOptions& options) {
  install_libbpf_log();
  if (options.capacity == 0 || options.capacity > 16'000'000)
    return fail(Errc::kInvalidArgument,
                fmt::format("flow map capacity {}: allowed 1..16000000", options.capacity));
  if (options.handshake_capacity < 64 || options.handshake_capacity > kMaxHandshakeCapacity)
    return fail(Errc::kInvalidArgument,
                fmt::format("handshake map capacity {}: allowed 64..{}", options.handshake_capacity,
                            kMaxHandshakeCapacity));
  g_libbpf_warnings.clear();
  auto impl = std::make_unique<Impl>();
#ifdef __clang_analyzer__
  // The analyzer cannot see that the generated skeleton's error path frees its memory
  // (bpf_object__destroy_skeleton, in libbpf) and reports a leak in generated code.
  impl->skel = nullptr;
#else
  impl->skel = flowlabel_bpf__open();
#endif
  if (!impl->skel) return bpf_fail("cannot open the embedded BPF program", errno);
  // The LRU map keeps spare nodes on per-CPU free lists and evicts when it runs out of
  // free ones, which can happen before max_entries; the headroom keeps every flow we
  // admit (up to capacity) from ever being evicted.
  const int ncpu = std::max(libbpf_num_possible_cpus(), 1);
  const auto headroom = std::max<std::size_t>(1024, 256 * static_cast<std::size_t>(ncpu));
  if (int r = bpf_map__set_max_entries(impl->skel->maps.flows,
                                       static_cast<std::uint32_t>(options.capacity + headroom));
      r < 0)
    return bpf_fail("cannot size the flow map", r);
  if (int r = bpf_map__set_max_entries(impl->skel->maps.handshakes,
                                       static_cast<std::uint32_t>(options.handshake_capacity));
      r < 0)
    return bpf_fail("cannot size the handshake map", r);
  detail::VerifierLog verifier_log;
  verifier_log.attach(impl->skel->obj);
  if (int r = flowlabel_bpf__load(impl->skel); r < 0) {
    auto e = detail::load_fail("cannot load the flow-label BPF program", r, verifier_log, bpf_fail);
    if (!g_libbpf_warnings.empty()) spdlog::debug("libbpf said:\n{}", g_libbpf_warnings);
    return e;
  }
  impl->prog_fd = bpf_program__fd(impl->skel->progs.flowmark_egress);
  impl->flows_fd = bpf_map__fd(impl->skel->maps.flows);
  impl->counters_fd = bpf_map__fd(impl->skel->maps.counters);
  impl->rules_fd = bpf_map__fd(impl->skel->maps.rules);
  bpf_prog_info info{};
  std::uint32_t len = sizeof(info);
  if (int r = bpf_obj_get_info_by_fd(impl->prog_fd, &info, &len); r < 0)
    return bpf_fail("cannot read the loaded BPF program", r);
  impl->prog_id = info.id;
  impl->stats.capacity = options.capacity;
  LIBBPF_OPTS(bpf_map_create_opts, fill_opts, .map_flags = BPF_F_MMAPABLE);
  impl->fill_fd.reset(bpf_map_create(BPF_MAP_TYPE_ARRAY, "flows_fill", sizeof(std::uint32_t),
                                     sizeof(std::uint64_t), 1, &fill_opts));
  if (!impl->fill_fd) return bpf_fail("cannot create the flow map's fill counter", -errno);
  void* page = ::mmap(nullptr, static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)),
                      PROT_READ | PROT_WRITE, MAP_SHARED, impl->fill_fd.get(), 0);
  if (page == MAP_FAILED) return bpf_fail("cannot map the flow map's fill counter", -errno);
  impl->fill_page = page;
  return FlowLabelMarker(std::move(impl));
}

Result<void> FlowLabelMarker::attach(std::string_view ifname_view) {
  FM_TRY(auto ifc, resolve_interface(ifname_view));
  const std::string& ifname = ifc.name;
  for (const auto& a : impl_->attached)
    if (a.ifindex == ifc.index) return {};
  FM_TRY_VOID(check_link_type(ifname));
  const std::string what = fmt::format("cannot attach the flow-label marker to {}", ifname);

  auto hook = detail::tc_hook(ifc.index, BPF_TC_EGRESS);
  int r = bpf_tc_hook_create(&hook);
  if (r < 0 && r != -EEXIST) return bpf_fail(what + ": creating the clsact qdisc", r);
  Attachment att{ifname, ifc.index, r == 0, false};

  // Our slot (handle, priority): free, a leftover of ours, a live flowmark's, or foreign.
  auto undo_qdisc = [&] {
    if (!att.created_clsact) return;
    auto both = detail::tc_hook(ifc.index, BPF_TC_INGRESS | BPF_TC_EGRESS);
    bpf_tc_hook_destroy(&both);
  };
  auto slot = detail::query_our_slot(ifc.index);
  if (!slot) {
    undo_qdisc();
    return std::unexpected(std::move(slot).error());
  }
  std::uint32_t flags = 0;
  if (const std::optional<std::uint32_t> held = *slot; held.has_value()) {
    const std::uint32_t id = held.value();
    auto info = detail::prog_info(id);
    if (!info || info->name != kProgramName) {
      undo_qdisc();
      return fail(Errc::kRefused,
                  fmt::format("{}: the egress filter slot (priority {}, handle {:#x}) holds "
                              "another program{} — remove it or free that priority",
                              what, kFilterPriority, kFilterHandle,
                              info ? fmt::format(" ('{}', id {})", info->name, id) : ""));
    }
    if (auto owner = detail::find_prog_owner(id))
      return fail(Errc::kRefused,
                  fmt::format("{}: a running process marks it already ({}, pid {}) — stop it "
                              "first",
                              what, owner->comm, owner->pid));
    spdlog::info("{}: replacing a leftover flowmark filter (program id {})", ifname, id);
    flags = BPF_TC_F_REPLACE;
    att.replaced_leftover = true;
  }
  auto opts = detail::tc_opts_of_our_slot();
  opts.prog_fd = impl_->prog_fd;
  opts.flags = flags;
  r = bpf_tc_attach(&hook, &opts);
  if (r < 0) {
    undo_qdisc();
    return bpf_fail(what, r);
  }
  spdlog::debug("attached to {} (clsact {})", ifname,
                att.created_clsact ? "created" : "already there");
  impl_->attached.push_back(std::move(att));
  return {};
}

Result<void> FlowLabelMarker::detach(std::string_view ifname) {
  auto it = std::find_if(impl_->attached.begin(), impl_->attached.end(),
                         [&](const Attachment& a) { return a.ifname == ifname; });
  if (it == impl_->attached.end())
    return fail(Errc::kNotFound, fmt::format("not attached to {}", ifname));
  Attachment att = std::move(*it);
  impl_->attached.erase(it);  // `ifname` may have pointed into it: use att.ifname below
  return detach_one(att);
}

Result<void> FlowLabelMarker::detach_one(const Attachment& att) {
  const std::string& ifname = att.ifname;
  const std::string what = fmt::format("cannot detach the flow-label marker from {}", ifname);
  // Gone (or a new interface under an old name): the kernel removed its qdisc and filters.
  if (char buf[IF_NAMESIZE]; ::if_indextoname(att.ifindex, buf) == nullptr) return {};

  auto slot = detail::query_our_slot(att.ifindex);
  if (!slot) return std::unexpected(std::move(slot).error());
  const std::optional<std::uint32_t> held = *slot;
  if (held.has_value() && held.value() == impl_->prog_id) {
    auto hook = detail::tc_hook(att.ifindex, BPF_TC_EGRESS);
    auto opts = detail::tc_opts_of_our_slot();
    if (int r = bpf_tc_detach(&hook, &opts); r < 0 && r != -ENOENT && r != -ENODEV)
      return bpf_fail(what, r);
  } else if (held.has_value()) {
    spdlog::warn("{}: our filter slot now holds program {}, not ours ({}): left alone", ifname,
                 held.value(), impl_->prog_id);
  }
  if (att.created_clsact) {
    // Delete the qdisc only when nobody added a filter to it meanwhile.
    auto n = detail::count_clsact_filters(att.ifindex);
    if (n && *n == 0) {
      auto both = detail::tc_hook(att.ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS);
      if (int r = bpf_tc_hook_destroy(&both); r < 0 && r != -ENOENT && r != -ENODEV && r != -EINVAL)
        return bpf_fail(what + ": removing the clsact qdisc", r);
    } else if (n) {
      spdlog::info("{}: clsact qdisc kept: {} filter(s) of others in it", ifname, *n);
    }
  }
  return {};
}

void FlowLabelMarker::detach_all() noexcept {
  if (!impl_) return;
  while (!impl_->attached.empty()) {
    Attachment att = std::move(impl_->attached.back());
    impl_->attached.pop_back();
    try {
      if (auto r = detach_one(att); !r) spdlog::warn("{}", r.error().message());
    } catch (const std::exception& e) {  // out of memory: `flowmark bpf clean` finishes
      (void)std::fprintf(stderr, "flowmark: detaching from %s: %s\n", att.ifname.c_str(), e.what());
    }
  }
}

const std::vector<Attachment>& FlowLabelMarker::attachments() const noexcept {
  return impl_->attached;
}

Result<SetOutcome> FlowLabelMarker::set(const FlowTuple& flow, std::uint32_t label) {
  return set(flow, Mark{label, ExtHeader::kNone, 0, 0});
}

Result<SetOutcome> FlowLabelMarker::set(const FlowTuple& flow, const Mark& mark) {
  FM_TRY(auto key, make_key(flow));
  flowmark_flow_value value{};
  value.label = mark.label & 0xFFFFFu;
  value.experiment = mark.experiment;
  value.activity = mark.activity;
  value.ext_header = ext_header_byte(mark.ext_header, mark.write_label);
  auto& st = impl_->stats;
  int r = bpf_map_update_elem(impl_->flows_fd, &key, &value, BPF_EXIST);
  if (r == 0) {
    ++st.replaced;
    return SetOutcome::kReplaced;
  }
  if (r != -ENOENT) {
    ++st.errors;
    return bpf_fail(fmt::format("cannot mark {}", describe(flow)), r);
  }
  if (impl_->fill().load(std::memory_order_relaxed) >= st.capacity) {
    ++st.rejected_full;
    return fail(Errc::kTruncated,
                fmt::format("cannot mark {}: the flow map is full ({} flows) — end flows or "
                            "raise the capacity",
                            describe(flow), st.capacity));
  }
  r = bpf_map_update_elem(impl_->flows_fd, &key, &value, BPF_NOEXIST);
  if (r < 0) {
    ++st.errors;
    return bpf_fail(fmt::format("cannot mark {}", describe(flow)), r);
  }
  impl_->fill().fetch_add(1, std::memory_order_relaxed);
  ++st.inserted;
  return SetOutcome::kInserted;
}

namespace {

// One trie entry per distinct prefix, listing every rule that covers it: its own and those of
// shorter prefixes, most specific first, in the given order within a prefix.
struct PrefixPlan {
  Network prefix;
  std::vector<std::size_t> covering;  // indexes into the rules
};

Result<std::vector<PrefixPlan>> plan_rules(std::span<const MarkRule> rules) {
  auto where = [&](std::size_t i) {
    const auto& r = rules[i];
    return fmt::format("rule {} ({} ports {}-{})", i + 1, r.destination.to_string(), r.port_first,
                       r.port_last);
  };
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (!rules[i].destination.address.is_v6())
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: only IPv6 destinations carry a flow label", where(i)));
    if (rules[i].port_first > rules[i].port_last)
      return fail(Errc::kInvalidArgument, fmt::format("{}: the port range is empty", where(i)));
  }
  std::vector<PrefixPlan> plan;
  for (const auto& r : rules)
    if (std::none_of(plan.begin(), plan.end(),
                     [&](const PrefixPlan& p) { return p.prefix == r.destination; }))
      plan.push_back({r.destination, {}});
  if (plan.size() > kMaxRulePrefixes)
    return fail(Errc::kInvalidArgument,
                fmt::format("{} rule prefixes: at most {} distinct destination prefixes",
                            plan.size(), kMaxRulePrefixes));
  for (auto& [p, covering] : plan) {
    for (std::size_t i = 0; i < rules.size(); ++i) {
      const auto& d = rules[i].destination;
      if (d.prefix <= p.prefix && d.contains(p.address)) covering.push_back(i);
    }
    std::stable_sort(covering.begin(), covering.end(), [&](std::size_t a, std::size_t b) {
      return rules[a].destination.prefix > rules[b].destination.prefix;
    });
    if (covering.size() > kMaxRulePortRanges)
      return fail(Errc::kInvalidArgument,
                  fmt::format("destination {}: {} rules apply to it (its own and those of "
                              "shorter prefixes); at most {}",
                              p.to_string(), covering.size(), kMaxRulePortRanges));
  }
  return plan;
}

}  // namespace

Result<void> check_rules(std::span<const MarkRule> rules) {
  FM_TRY_VOID(plan_rules(rules));
  return {};
}

Result<void> FlowLabelMarker::set_rules(std::span<const MarkRule> rules) {
  FM_TRY(auto plan, plan_rules(rules));
  std::vector<std::pair<flowmark_rule_key, flowmark_rule_value>> entries;
  for (const auto& [p, covering] : plan) {
    flowmark_rule_key key{};
    key.prefixlen = p.prefix;
    std::memcpy(key.addr, p.address.bytes(), 16);
    flowmark_rule_value value{};
    value.count = static_cast<std::uint32_t>(covering.size());
    for (std::size_t j = 0; j < covering.size(); ++j) {
      const auto& r = rules[covering[j]];
      auto& slot = value.slots[j];
      slot.port_first = r.port_first;
      slot.port_last = r.port_last;
      slot.label = r.mark.label & 0xFFFFFu & ~(0xC0000u | 0x100u | 0x3u);  // entropy: kernel's
      slot.experiment = r.mark.experiment;
      slot.activity = r.mark.activity;
      slot.ext_header = ext_header_byte(r.mark.ext_header, r.mark.write_label);
    }
    entries.emplace_back(key, value);
  }
  // Replace: remove the old prefixes, then add the new ones.
  std::vector<flowmark_rule_key> old;
  flowmark_rule_key k{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(impl_->rules_fd, prev, &next) == 0) {
    old.push_back(next);
    k = next;
    prev = &k;
  }
  for (const auto& o : old)
    if (int r = bpf_map_delete_elem(impl_->rules_fd, &o); r < 0 && r != -ENOENT)
      return bpf_fail("cannot clear the rule map", r);
  for (const auto& [key, value] : entries)
    if (int r = bpf_map_update_elem(impl_->rules_fd, &key, &value, BPF_ANY); r < 0)
      return bpf_fail("cannot set a marking rule", r);
  return {};
}

Result<bool> FlowLabelMarker::erase(const FlowTuple& flow) {
  FM_TRY(auto key, make_key(flow));
  int r = bpf_map_delete_elem(impl_->flows_fd, &key);
  if (r == -ENOENT) return false;
  if (r < 0) {
    ++impl_->stats.errors;
    return bpf_fail(fmt::format("cannot unmark {}", describe(flow)), r);
  }
  impl_->fill().fetch_sub(1, std::memory_order_relaxed);
  ++impl_->stats.erased;
  return true;
}

std::optional<std::uint32_t> FlowLabelMarker::lookup(const FlowTuple& flow) const {
  auto key = make_key(flow);
  if (!key) return std::nullopt;
  flowmark_flow_value value{};
  if (bpf_map_lookup_elem(impl_->flows_fd, &*key, &value) < 0) return std::nullopt;
  return value.label & 0xFFFFFu;  // without FLOWMARK_LABEL_FROM_KERNEL
}

Result<Counters> FlowLabelMarker::counters() const {
  return detail::read_counters(impl_->counters_fd);
}
MapStats FlowLabelMarker::map_stats() const noexcept {
  MapStats st = impl_->stats;
  st.fill = fill();
  return st;
}
std::size_t FlowLabelMarker::fill() const noexcept {
  return static_cast<std::size_t>(impl_->fill().load(std::memory_order_relaxed));
}
SharedFlowMap FlowLabelMarker::shared_map() const noexcept {
  return {impl_->flows_fd, impl_->fill_fd.get(), impl_->stats.capacity,
          bpf_map__fd(impl_->skel->maps.handshakes)};
}
int FlowLabelMarker::program_fd() const noexcept { return impl_->prog_fd; }
std::uint32_t FlowLabelMarker::program_id() const noexcept { return impl_->prog_id; }

std::vector<std::string> interfaces_with_global_ipv6() {
  std::vector<std::string> names;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return names;
  for (const ifaddrs* p = list; p != nullptr; p = p->ifa_next) {
    if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET6) continue;
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(p->ifa_addr);
    const in6_addr& a = sin6->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a) || IN6_IS_ADDR_LINKLOCAL(&a) || IN6_IS_ADDR_MULTICAST(&a) ||
        IN6_IS_ADDR_UNSPECIFIED(&a) || IN6_IS_ADDR_V4MAPPED(&a))
      continue;
    if (std::find(names.begin(), names.end(), p->ifa_name) == names.end())
      names.emplace_back(p->ifa_name);
  }
  ::freeifaddrs(list);
  std::sort(names.begin(), names.end());
  return names;
}

// ---- hooks of ours, from any process ------------------------------------------------

Result<std::vector<HookInfo>> find_hooks(std::optional<std::string_view> ifname) {
  install_libbpf_log();
  std::vector<std::pair<std::uint32_t, std::string>> links;
  if (ifname) {
    FM_TRY(auto ifc, resolve_interface(*ifname));
    links.emplace_back(ifc.index, ifc.name);
  } else {
    struct if_nameindex* all = ::if_nameindex();
    if (!all) return fail_errno("cannot list the network interfaces");
    for (auto* p = all; p->if_index != 0; ++p) links.emplace_back(p->if_index, p->if_name);
    if_freenameindex(all);
  }
  std::vector<HookInfo> hooks;
  for (const auto& [index, name] : links) {
    FM_TRY(auto slot, detail::query_our_slot(index));
    if (!slot) continue;
    auto info = detail::prog_info(*slot);
    if (!info) return std::unexpected(std::move(info).error());
    if (info->name != kProgramName) continue;  // someone else's filter at that slot
    HookInfo h;
    h.ifname = name;
    h.ifindex = index;
    h.prog_id = *slot;
    h.flows_map_id = detail::find_map(info->map_ids, "flows");
    h.counters_map_id = detail::find_map(info->map_ids, "counters");
    if (auto owner = detail::find_prog_owner(*slot)) {
      h.owner_pid = owner->pid;
      h.owner_comm = owner->comm;
    }
    hooks.push_back(std::move(h));
  }
  return hooks;
}

Result<HookStatus> read_hook_status(const HookInfo& hook) {
  HookStatus st;
  if (hook.flows_map_id) {
    UniqueFd fd(bpf_map_get_fd_by_id(hook.flows_map_id));
    if (!fd) return bpf_fail(fmt::format("cannot open map {}", hook.flows_map_id), errno);
    flowmark_flow_key key{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd.get(), prev, &next) == 0) {
      ++st.fill;
      key = next;
      prev = &key;
    }
  }
  if (hook.counters_map_id) {
    UniqueFd fd(bpf_map_get_fd_by_id(hook.counters_map_id));
    if (!fd) return bpf_fail(fmt::format("cannot open map {}", hook.counters_map_id), errno);
    FM_TRY(st.counters, detail::read_counters(fd.get()));
  }
  return st;
}

Result<std::vector<HookInfo>> clean_hooks(std::optional<std::string_view> ifname,
                                          bool include_live) {
  FM_TRY(auto hooks, find_hooks(ifname));
  std::vector<HookInfo> removed;
  for (auto& h : hooks) {
    if (h.owner_pid && !include_live) {
      spdlog::info("{}: kept the hook of running {} (pid {})", h.ifname, h.owner_comm,
                   *h.owner_pid);
      continue;
    }
    auto hook = detail::tc_hook(h.ifindex, BPF_TC_EGRESS);
    auto opts = detail::tc_opts_of_our_slot();
    if (int r = bpf_tc_detach(&hook, &opts); r < 0 && r != -ENOENT)
      return bpf_fail(fmt::format("cannot remove the flowmark filter from {}", h.ifname), r);
    removed.push_back(std::move(h));
  }
  return removed;
}

}  // namespace flowmark::bpf
