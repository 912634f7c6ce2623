#include "daemon/backends/flowlabel/flowlabel_backend.hpp"

#include <net/if.h>
#include <sys/random.h>

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "daemon/backends/flowlabel/link_watch.hpp"
#include "daemon/common/connection_options.hpp"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/daemon/config.hpp"
#include "flowmark/scitags/flow_label.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;

struct LabelOptions {
  std::vector<std::string> interfaces;
  bool auto_interfaces = false;  // interfaces = "auto": followed through rtnetlink
  std::size_t capacity = bpf::kDefaultCapacity;
  std::size_t handshake_capacity = bpf::kDefaultHandshakeCapacity;
  bpf::ExtHeader ext = bpf::ExtHeader::kNone;
  bool write_label = true;  // false: flowd-go's extension-header-only strategies
  std::vector<bpf::MarkRule> rules;
};

// In auto mode the tick also reads the rtnetlink socket: an interface is hooked within this.
constexpr std::chrono::milliseconds kAutoTick{200};
// ... and the interfaces are listed again this often even without a notification.
constexpr std::chrono::seconds kAutoRescan{10};

class FlowLabelBackend final : public Backend {
 public:
  FlowLabelBackend(std::string name, LabelOptions o, ServiceContext& ctx)
      : name_(std::move(name)), o_(std::move(o)), shelf_(ctx.flow_maps) {
    auto c = [&](std::string_view what, std::string_view help) {
      return &ctx.counters.counter(std::string("flowmark_flowlabel_") + std::string(what),
                                   {{"backend", name_}}, help);
    };
    auto k = [&](std::string_view outcome) {
      return &ctx.counters.counter("flowmark_flowlabel_packets_total",
                                   {{"backend", name_}, {"outcome", std::string(outcome)}},
                                   "Packets seen by the TC flow-label program, by outcome");
    };
    marked_ = k("marked");
    marked_rule_ = k("marked_rule");
    marked_handshake_ = k("marked_handshake");
    not_in_map_ = k("not_in_map");
    not_ipv6_ = k("not_ipv6");
    parse_error_ = k("parse_error");
    not_tcp_udp_ = k("not_tcp_udp");
    inserted_ = c("flows_inserted_total", "Flows put in the kernel map");
    erased_ = c("flows_erased_total", "Flows removed from the kernel map");
    full_ = c("map_full_total", "Flows refused because the kernel map was full");
    errors_ = c("map_errors_total", "Failed kernel map updates (other than full)");
    skipped_v4_ = c("events_ipv4_total", "Events of IPv4 flows (no flow label to write)");
    fill_ = &ctx.counters.gauge("flowmark_flowlabel_map_fill", {{"backend", name_}},
                                "Flows in the kernel map");
    interfaces_ = &ctx.counters.gauge("flowmark_flowlabel_interfaces", {{"backend", name_}},
                                      "Interfaces whose egress the TC program marks");
    hooked_ = c("interfaces_hooked_total",
                "Interfaces hooked (at start, and later ones with interfaces = \"auto\")");
    released_ = c("interfaces_released_total",
                  "Interfaces released because they or their global IPv6 address went away");
  }

  Result<void> start() override {
    FM_TRY(auto m, bpf::FlowLabelMarker::load(
                           {.capacity = o_.capacity, .handshake_capacity = o_.handshake_capacity}));
    marker_ = std::make_unique<bpf::FlowLabelMarker>(std::move(m));
    if (!o_.rules.empty()) {
      auto r = marker_->set_rules(o_.rules);
      if (!r) return std::unexpected(std::move(r).error().with_context("backend " + name_));
      spdlog::info("backend {}: {} rule(s) evaluated in the kernel for flows without an entry{}",
                   name_, o_.rules.size(),
                   o_.rules.size() == 1 && o_.rules[0].destination.prefix == 0 &&
                           o_.rules[0].port_first == 0 && o_.rules[0].port_last == 65535
                       ? " (all outgoing IPv6 TCP/UDP: perfSONAR / matchAll mode)"
                       : "");
    }
    if (o_.auto_interfaces) {
      FM_TRY_VOID(watch_.open());
      reconcile();
      if (marker_->attachments().empty())
        spdlog::info("backend {}: no interface has a global IPv6 address yet: waiting for one",
                     name_);
      return {};
    }
    auto ifaces = o_.interfaces;
    if (ifaces.empty()) {
      ifaces = bpf::interfaces_with_global_ipv6();
      if (ifaces.empty()) {
        return fail(Errc::kNotFound,
                    "backend " + name_ +
                        ": no interface has a global IPv6 address: name the interfaces to mark "
                        "on in interfaces = [...], or follow them with interfaces = \"auto\"");
      }
    }
    for (const auto& i : ifaces) {
      auto r = marker_->attach(i);
      if (!r) return std::unexpected(std::move(r).error().with_context("backend " + name_));
      hooked_->fetch_add(1, std::memory_order_relaxed);
    }
    std::string list;
    for (const auto& i : ifaces) list += (list.empty() ? "" : ", ") + i;
    spdlog::info("backend {}: IPv6 flow labels written on egress of {}", name_, list);
    interfaces_->store(ifaces.size(), std::memory_order_relaxed);
    // Lent to the kernel-events source, which marks connections from their first packet.
    if (shelf_) {
      const auto shared = marker_->shared_map();
      shelf_->offer(name_, shared.flows_fd, shared.fill_fd, shared.capacity,
                    bpf::ext_header_byte(o_.ext, o_.write_label), shared.handshakes_fd);
    }
    return {};
  }

  void on_event(const FlowEvent& e) noexcept override {
    if (!e.src.address.is_v6()) {
      skipped_v4_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    bpf::FlowTuple t{e.src.address, e.dst.address, e.src.port, e.dst.port,
                     static_cast<std::uint8_t>(
                         e.protocol == scitags::Protocol::kTcp ? IPPROTO_TCP : IPPROTO_UDP)};
    if (e.state == FlowState::kEnd) {
      auto r = marker_->erase(t);
      if (r && *r) erased_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Already marked (an ongoing event, or the kernel put the connection in before its
    // SYN): the label stays as it is, entropy included.
    if (marker_->lookup(t)) return;
    std::uint8_t entropy = 0;
    if (::getrandom(&entropy, 1, 0) != 1) entropy = static_cast<std::uint8_t>(monotonic_ns());
    auto label = scitags::encode_flow_label(e.experiment, e.activity, entropy & 0x1F);
    if (!label) {
      errors_->fetch_add(1, std::memory_order_relaxed);
      log_.log(spdlog::level::warn, [&] {
        return fmt::format("backend {}: flow {} -> {}: {}", name_, e.src.to_string(),
                           e.dst.to_string(), label.error().message());
      });
      return;
    }
    bpf::Mark mark{*label, o_.ext, static_cast<std::uint16_t>(e.experiment),
                   static_cast<std::uint8_t>(e.activity), o_.write_label};
    auto r = marker_->set(t, mark);
    if (r) {
      inserted_->fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (r.error().code() == make_error_code(Errc::kTruncated)) {
      full_->fetch_add(1, std::memory_order_relaxed);
    } else {
      errors_->fetch_add(1, std::memory_order_relaxed);
    }
    log_.log(spdlog::level::warn, [&] {
      return fmt::format("backend {}: flow {} -> {} not marked: {}", name_, e.src.to_string(),
                         e.dst.to_string(), r.error().message());
    });
  }

  std::chrono::milliseconds tick_interval() const noexcept override {
    if (o_.auto_interfaces) return kAutoTick;
    return std::chrono::seconds(1);
  }

  void on_tick() noexcept override {
    if (!marker_) return;
    if (o_.auto_interfaces) {
      const auto now = std::chrono::steady_clock::now();
      if (watch_.changed() || now >= next_rescan_) reconcile();
    }
    if (auto c = marker_->counters()) {
      marked_->store(c->marked, std::memory_order_relaxed);
      marked_rule_->store(c->marked_rule, std::memory_order_relaxed);
      marked_handshake_->store(c->marked_handshake, std::memory_order_relaxed);
      not_in_map_->store(c->not_in_map, std::memory_order_relaxed);
      not_ipv6_->store(c->not_ipv6, std::memory_order_relaxed);
      parse_error_->store(c->parse_error, std::memory_order_relaxed);
      not_tcp_udp_->store(c->not_tcp_udp, std::memory_order_relaxed);
    }
    fill_->store(marker_->fill(), std::memory_order_relaxed);
  }

  void stop() noexcept override {
    if (shelf_) shelf_->withdraw(name_);
    on_tick();
    if (marker_) {
      for (const auto& a : marker_->attachments())
        spdlog::info("backend {}: releasing {} (stopping)", name_, a.ifname);
      marker_->detach_all();
    }
    marker_.reset();
    interfaces_->store(0, std::memory_order_relaxed);
  }

  bool wants_public_addresses() const noexcept override { return false; }

 private:
  std::string name_;
  LabelOptions o_;
  // interfaces = "auto": hooks every interface with a global IPv6 address that is not hooked
  // yet, releases those that lost it or went away (and a name now on another interface).
  void reconcile() noexcept {
    next_rescan_ = std::chrono::steady_clock::now() + kAutoRescan;
    try {
      const auto want = bpf::interfaces_with_global_ipv6();
      std::vector<std::string> drop;
      for (const auto& a : marker_->attachments()) {
        const bool wanted = std::find(want.begin(), want.end(), a.ifname) != want.end();
        if (!wanted || ::if_nametoindex(a.ifname.c_str()) != a.ifindex) drop.push_back(a.ifname);
      }
      for (const auto& name : drop) {
        auto r = marker_->detach(name);
        released_->fetch_add(1, std::memory_order_relaxed);
        if (r) {
          spdlog::info("backend {}: released {} (gone, or no global IPv6 address left)", name_,
                       name);
        } else {
          spdlog::warn("backend {}: releasing {}: {}", name_, name, r.error().message());
        }
      }
      std::set<std::string> refused;
      for (const auto& name : want) {
        const auto& att = marker_->attachments();
        if (std::any_of(att.begin(), att.end(), [&](const auto& a) { return a.ifname == name; }))
          continue;
        auto r = marker_->attach(name);
        if (r) {
          hooked_->fetch_add(1, std::memory_order_relaxed);
          spdlog::info("backend {}: hooked {} (global IPv6 address; egress marked)", name_, name);
          continue;
        }
        refused.insert(name);
        // Said once per interface while it keeps being refused (a tunnel without Ethernet
        // header, a foreign filter in our slot).
        if (!refused_.contains(name))
          spdlog::warn("backend {}: not hooking {}: {}", name_, name, r.error().message());
      }
      refused_ = std::move(refused);
      interfaces_->store(marker_->attachments().size(), std::memory_order_relaxed);
    } catch (const std::exception& e) {  // out of memory: try again at the next rescan
      spdlog::error("backend {}: following the interfaces: {}", name_, e.what());
    }
  }

  std::shared_ptr<FlowMapShelf> shelf_;
  std::unique_ptr<bpf::FlowLabelMarker> marker_;
  LinkWatch watch_;
  std::chrono::steady_clock::time_point next_rescan_{};
  std::set<std::string> refused_;
  std::atomic<std::uint64_t>*marked_, *marked_rule_, *marked_handshake_, *not_in_map_, *not_ipv6_,
      *parse_error_, *not_tcp_udp_, *inserted_, *erased_, *full_, *errors_, *skipped_v4_, *fill_,
      *interfaces_, *hooked_, *released_;
  // One failure a second on stderr, with the count of those not shown.
  LogLimiter log_{1, std::chrono::seconds(1), LogLimiter::Report::kSuffix};
};

// One [[backend.NAME.rule]] table: a rule per port range of `ports` (all ports if absent).
Result<std::vector<bpf::MarkRule>> read_mark_rule(Section& r, const scitags::Registry* registry,
                                                  const LabelOptions& o) {
  FM_TRY(auto dest_text, r.string("destination", "::/0"));
  auto dest = Network::parse(dest_text);
  if (!dest) return r.error("destination", dest.error().message());
  if (!dest->address.is_v6())
    return r.error(
        "destination",
        fmt::format("'{}' is not an IPv6 prefix: only IPv6 packets carry a flow label", dest_text));
  FM_TRY(auto ports, read_port_ranges(r, "ports"));
  if (ports.empty()) ports.push_back(PortRange{0, 65535});
  if (!r.has("experiment") || !r.has("activity"))
    return r.error(r.has("experiment") ? "activity" : "experiment",
                   "missing: a rule needs an experiment and an activity (ids or names)");
  // Ids as written (flowd-go's perfSONAR ids need not be in the registry), names through the
  // registry, as the sources' experiment/activity keys.
  FM_TRY(auto exp_text, r.scalar("experiment"));
  FM_TRY(auto act_text, r.scalar("activity"));
  auto tag = sockets::resolve_tag(*exp_text, *act_text, registry);
  if (!tag) {
    // The message names the first key it is about.
    const auto& m = tag.error().message();
    const bool act_fault = m.find("activity") < m.find("experiment");
    return r.error(act_fault ? "activity" : "experiment", tag.error().message());
  }
  if (tag->experiment == 0)
    return r.error("experiment", "0 is no mark: give the experiment and activity to write");
  const std::uint32_t exp = tag->experiment, act = tag->activity;
  auto label = scitags::encode_flow_label(exp, act, 0);
  if (!label)
    return r.error(exp > scitags::kMaxLabelExperiment ? "experiment" : "activity",
                   label.error().message());
  FM_TRY_VOID(r.finish());
  std::vector<bpf::MarkRule> out;
  for (const auto& p : ports) {
    bpf::MarkRule m;
    m.destination = *dest;
    m.port_first = p.first;
    m.port_last = p.last;
    m.mark = bpf::Mark{*label, o.ext, static_cast<std::uint16_t>(exp),
                       static_cast<std::uint8_t>(act), o.write_label};
    out.push_back(m);
  }
  return out;
}

}  // namespace

Result<void> register_flowlabel_backend(BackendFactories& factories) {
  return factories.add(
      "flowlabel", "the IPv6 flow label written by an eBPF TC program (flowd's ebpf)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        LabelOptions o;
        FM_TRY(o.interfaces, s.strings("interfaces"));
        if (std::find(o.interfaces.begin(), o.interfaces.end(), "auto") != o.interfaces.end()) {
          if (o.interfaces.size() != 1)
            return s.error("interfaces",
                           "\"auto\" stands alone: either interfaces = \"auto\" or a list of "
                           "interface names");
          o.interfaces.clear();
          o.auto_interfaces = true;
        }
        FM_TRY(auto cap, s.integer("capacity", bpf::kDefaultCapacity, 1, 1 << 24));
        o.capacity = static_cast<std::size_t>(cap);
        FM_TRY(auto hs, s.integer("handshake_capacity", bpf::kDefaultHandshakeCapacity, 64,
                                  bpf::kMaxHandshakeCapacity));
        o.handshake_capacity = static_cast<std::size_t>(hs);
        if (s.has("ext_header") && s.has("strategy"))
          return s.error("strategy", "give strategy (flowd-go's names) or ext_header, not both");
        FM_TRY(auto ext,
               s.choice("ext_header", "none", {"none", "hop-by-hop", "destination-options"}));
        if (ext == "hop-by-hop") o.ext = bpf::ExtHeader::kHopByHop;
        if (ext == "destination-options") o.ext = bpf::ExtHeader::kDestinationOptions;
        FM_TRY(auto strategy,
               s.choice("strategy", "label",
                        {"label", "hopByHop", "destination", "hopByHopDestination"}));
        // As flowd-go: the extension-header strategies leave the flow label alone.
        if (strategy != "label") o.write_label = false;
        if (strategy == "hopByHop") o.ext = bpf::ExtHeader::kHopByHop;
        if (strategy == "destination") o.ext = bpf::ExtHeader::kDestinationOptions;
        if (strategy == "hopByHopDestination") o.ext = bpf::ExtHeader::kBoth;
        FM_TRY(auto rule_tables, s.tables("rule"));
        for (auto& r : rule_tables) {
          FM_TRY(auto rules, read_mark_rule(r, ctx.registry, o));
          o.rules.insert(o.rules.end(), rules.begin(), rules.end());
        }
        if (auto ok = bpf::check_rules(o.rules); !ok) return s.error("rule", ok.error().message());
        return std::make_unique<FlowLabelBackend>(s.name(), std::move(o), ctx);
      });
}

}  // namespace flowmark::daemon
