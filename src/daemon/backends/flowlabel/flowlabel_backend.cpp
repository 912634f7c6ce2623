#include "daemon/backends/flowlabel/flowlabel_backend.hpp"

#include <sys/random.h>

#include <spdlog/spdlog.h>

#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/core/log_limit.hpp"
#include "flowmark/scitags/flow_label.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowState;

struct LabelOptions {
  std::vector<std::string> interfaces;
  std::size_t capacity = bpf::kDefaultCapacity;
  bpf::ExtHeader ext = bpf::ExtHeader::kNone;
};

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
  }

  Result<void> start() override {
    FM_TRY(auto m, bpf::FlowLabelMarker::load({.capacity = o_.capacity}));
    marker_ = std::make_unique<bpf::FlowLabelMarker>(std::move(m));
    auto ifaces = o_.interfaces;
    if (ifaces.empty()) {
      ifaces = bpf::interfaces_with_global_ipv6();
      if (ifaces.empty()) {
        return fail(Errc::kNotFound,
                    "backend " + name_ +
                        ": no interface has a global IPv6 address: name the interfaces to mark "
                        "on in interfaces = [...]");
      }
    }
    for (const auto& i : ifaces) {
      auto r = marker_->attach(i);
      if (!r) return std::unexpected(std::move(r).error().with_context("backend " + name_));
    }
    std::string list;
    for (const auto& i : ifaces) list += (list.empty() ? "" : ", ") + i;
    spdlog::info("backend {}: IPv6 flow labels written on egress of {}", name_, list);
    // Lent to the kernel-events source, which marks connections from their first packet.
    if (shelf_) {
      const auto shared = marker_->shared_map();
      shelf_->offer(name_, shared.flows_fd, shared.fill_fd, shared.capacity,
                    static_cast<std::uint8_t>(o_.ext));
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
                   static_cast<std::uint8_t>(e.activity)};
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
    return std::chrono::seconds(1);
  }

  void on_tick() noexcept override {
    if (!marker_) return;
    if (auto c = marker_->counters()) {
      marked_->store(c->marked, std::memory_order_relaxed);
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
    if (marker_) marker_->detach_all();
    marker_.reset();
  }

  bool wants_public_addresses() const noexcept override { return false; }

 private:
  std::string name_;
  LabelOptions o_;
  std::shared_ptr<FlowMapShelf> shelf_;
  std::unique_ptr<bpf::FlowLabelMarker> marker_;
  std::atomic<std::uint64_t>*marked_, *not_in_map_, *not_ipv6_, *parse_error_, *not_tcp_udp_,
      *inserted_, *erased_, *full_, *errors_, *skipped_v4_, *fill_;
  // One failure a second on stderr, with the count of those not shown.
  LogLimiter log_{1, std::chrono::seconds(1), LogLimiter::Report::kSuffix};
};

}  // namespace

Result<void> register_flowlabel_backend(BackendFactories& factories) {
  return factories.add(
      "flowlabel", "the IPv6 flow label written by an eBPF TC program (flowd's ebpf)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        LabelOptions o;
        FM_TRY(o.interfaces, s.strings("interfaces"));
        FM_TRY(auto cap, s.integer("capacity", bpf::kDefaultCapacity, 1, 1 << 24));
        o.capacity = static_cast<std::size_t>(cap);
        FM_TRY(auto ext,
               s.choice("ext_header", "none", {"none", "hop-by-hop", "destination-options"}));
        if (ext == "hop-by-hop") o.ext = bpf::ExtHeader::kHopByHop;
        if (ext == "destination-options") o.ext = bpf::ExtHeader::kDestinationOptions;
        return std::make_unique<FlowLabelBackend>(s.name(), std::move(o), ctx);
      });
}

}  // namespace flowmark::daemon
