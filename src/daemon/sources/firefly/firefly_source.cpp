#include "daemon/sources/firefly/firefly_source.hpp"

#include <spdlog/spdlog.h>

#include "flowmark/scitags/firefly_listener.hpp"

namespace flowmark::daemon {
namespace {

class FireflySource final : public Source, private scitags::FireflySink {
 public:
  FireflySource(std::string name, scitags::ListenerConfig config, std::vector<Network> allow,
                ServiceContext& ctx)
      : name_(std::move(name)), config_(std::move(config)), allow_(std::move(allow)) {
    for (std::size_t i = 0; i < scitags::kRejectKinds; ++i) {
      rejected_[i] = &reject_counter(ctx, scitags::to_string(static_cast<scitags::Reject>(i)));
    }
    not_allowed_ = &reject_counter(ctx, "sender_not_allowed");
    received_ = &ctx.counters.counter("flowmark_firefly_datagrams_total", {{"source", name_}},
                                      "Datagrams received by a firefly source");
  }
  ~FireflySource() override { stop(); }

  Result<void> start(EventLoop& loop, FlowSink& sink) override {
    sink_ = &sink;
    FM_TRY(auto l, scitags::FireflyListener::open(config_));
    listener_ = std::make_unique<scitags::FireflyListener>(std::move(l));
    FM_TRY_VOID(listener_->add_to(loop, *this));
    loop_ = &loop;
    std::string where;
    for (const auto& e : listener_->local_endpoints()) where += " " + e.to_string();
    spdlog::info("source {}: listening for fireflies on{}", name_, where);
    return {};
  }

  void stop() noexcept override {
    if (loop_ && listener_) {
      for (int fd : listener_->fds()) loop_->remove_fd(fd);
    }
    listener_.reset();
    loop_ = nullptr;
    log_.flush();
  }

 private:
  std::atomic<std::uint64_t>& reject_counter(ServiceContext& ctx, std::string_view reason) {
    return ctx.counters.counter("flowmark_source_rejected_total",
                                {{"source", name_}, {"reason", std::string(reason)}},
                                "Input rejected by a source, by reason");
  }

  void on_firefly(const Endpoint& sender, const scitags::Firefly& f) override {
    received_->fetch_add(1, std::memory_order_relaxed);
    if (!allow_.empty() && !any_contains(allow_, sender.address)) {
      not_allowed_->fetch_add(1, std::memory_order_relaxed);
      log_.log(sender, {scitags::Reject::kBadHeader, "sender not in the allow list"});
      return;
    }
    sink_->push(f.event);
  }

  void on_reject(const Endpoint& sender, const scitags::Rejection& r) override {
    received_->fetch_add(1, std::memory_order_relaxed);
    rejected_[static_cast<std::size_t>(r.reason)]->fetch_add(1, std::memory_order_relaxed);
    log_.log(sender, r);
  }

  void on_error(const Error& e) override { spdlog::warn("source {}: {}", name_, e.message()); }

  std::string name_;
  scitags::ListenerConfig config_;
  std::vector<Network> allow_;
  std::unique_ptr<scitags::FireflyListener> listener_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  scitags::RejectLog log_;
  std::array<std::atomic<std::uint64_t>*, scitags::kRejectKinds> rejected_{};
  std::atomic<std::uint64_t>*not_allowed_, *received_;
};

Result<std::optional<IpAddress>> opt_address(Section& s, std::string_view key) {
  FM_TRY(auto text, s.string(key, ""));
  if (text.empty()) return std::optional<IpAddress>{};
  auto a = IpAddress::parse(text);
  if (!a) return s.error(key, a.error().message());
  return std::optional<IpAddress>{*a};
}

}  // namespace

Result<void> register_firefly_source(SourceFactories& factories) {
  return factories.add(
      "firefly", "fireflies received over UDP (flowd's firefly plugin)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Source>> {
        scitags::ListenerConfig c;
        FM_TRY(c.bind, opt_address(s, "bind"));
        FM_TRY(auto port, s.integer("port", scitags::kFireflyPort, 1, 65535));
        c.port = static_cast<std::uint16_t>(port);
        FM_TRY(c.group, opt_address(s, "group"));
        if (c.group && !c.group->is_multicast()) {
          return s.error("group", c.group->to_string() + " is not a multicast group");
        }
        if (c.bind && c.bind->is_unspecified() && !c.group) c.bind.reset();
        FM_TRY(auto iface, s.string("interface", ""));
        if (!iface.empty()) {
          auto i = resolve_interface(iface);
          if (!i) return s.error("interface", i.error().message());
          c.iface = *i;
        }
        FM_TRY(c.decoder.lenient_start_time, s.boolean("lenient_start_time", false));
        FM_TRY(auto allow, s.networks("allow"));
        return std::make_unique<FireflySource>(s.name(), std::move(c), std::move(allow), ctx);
      });
}

}  // namespace flowmark::daemon
