#include "flowmark/daemon/service.hpp"

#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "daemon/builtin.hpp"
#include "daemon/common/systemd_notify.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/pipeline.hpp"
#include "flowmark/netclient/stun.hpp"

namespace flowmark::daemon {
namespace {

template <typename T>
struct Part {
  PartSpec spec;
  std::unique_ptr<T> obj;
  std::unique_ptr<SourceTap> tap;  // sources only
};

// A validated configuration with every part created and nothing started.
struct Plan {
  ConfigDocument doc;
  std::shared_ptr<const scitags::Registry> registry;
  ServiceConfig config;
  std::vector<Part<Source>> sources;
  std::vector<Part<Backend>> backends;
};

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

Result<std::shared_ptr<const scitags::Registry>> load_registry(const ConfigDocument& doc) {
  FM_TRY(auto src, registry_source(doc));
  if (src.first == "builtin" || src.first.empty()) {
    return std::shared_ptr<const scitags::Registry>(std::shared_ptr<void>(),
                                                    &scitags::Registry::builtin());
  }
  auto reg = scitags::Registry::load(src.first, {.verify_tls = src.second});
  if (!reg) {
    // flowd exits here, so a site without internet cannot start; we carry on.
    spdlog::warn("registry {}: {}; using the built-in copy of the public registry instead",
                 src.first, reg.error().message());
    return std::shared_ptr<const scitags::Registry>(std::shared_ptr<void>(),
                                                    &scitags::Registry::builtin());
  }
  spdlog::info("registry: {} experiments from {}", reg->experiments().size(), src.first);
  return std::shared_ptr<const scitags::Registry>(
      std::make_shared<scitags::Registry>(std::move(*reg)));
}

template <typename T>
Result<std::vector<Part<T>>> create_parts(const std::vector<PartSpec>& specs,
                                          const Factories<T>& factories, std::string_view kind,
                                          ServiceContext& ctx) {
  std::vector<Part<T>> out;
  for (const auto& spec : specs) {
    Section s(spec.table, fmt::format("[{}.{}]", kind, spec.name), spec.name);
    s.mark_used("type");
    FM_TRY(auto obj, factories.create(spec.type, s, ctx));
    FM_TRY_VOID(s.finish());
    out.push_back({spec, std::move(obj), nullptr});
  }
  return out;
}

// [public_address] discover: the public addresses fireflies carry for private sources,
// asked of the STUN servers in turn; a manual ipv4/ipv6 wins over what STUN says.
void discover_public(PublicAddressConfig& pa) {
  if (!pa.discover) return;
  if (pa.stun_servers.empty()) {
    spdlog::warn("[public_address] discover = true but stun_servers is empty: no discovery");
    return;
  }
  for (const auto& text : pa.stun_servers) {
    auto server = netclient::resolve_stun_server(text);
    if (!server) {
      spdlog::warn("STUN server {}: {}", text, server.error().message());
      continue;
    }
    auto answer = netclient::stun_query(*server);
    if (!answer) {
      spdlog::warn("STUN server {}: {}", text, answer.error().message());
      continue;
    }
    const auto& a = answer->mapped.address;
    auto& slot = a.is_v4() ? pa.ipv4 : pa.ipv6;
    if (slot) {
      spdlog::info("STUN {}: public address {} (the configured {} wins)", text, a.to_string(),
                   slot->to_string());
    } else {
      spdlog::info("STUN {}: public address {}{}", text, a.to_string(),
                   answer->behind_nat() ? " (behind NAT)" : "");
      slot = a;
    }
    if (pa.ipv4 && pa.ipv6) return;
  }
}

Result<Plan> make_plan(ConfigDocument doc, ServiceContext& ctx, const SourceFactories& sources,
                       const BackendFactories& backends, bool discover = true) {
  Plan p{std::move(doc), nullptr, {}, {}, {}};
  FM_TRY(p.registry, load_registry(p.doc));
  FM_TRY(p.config, ServiceConfig::from(p.doc, *p.registry));
  if (discover) discover_public(p.config.public_address);
  // Parts read the registry and host name while they are created.
  auto saved = ctx;
  ctx.registry = p.registry.get();
  if (!p.config.hostname.empty()) ctx.hostname = p.config.hostname;
  auto restore = [&] {
    ctx.registry = saved.registry;
    ctx.hostname = saved.hostname;
  };
  auto s = create_parts(p.config.sources, sources, "source", ctx);
  if (!s) {
    restore();
    return std::unexpected(std::move(s).error());
  }
  p.sources = std::move(*s);
  auto b = create_parts(p.config.backends, backends, "backend", ctx);
  restore();
  if (!b) return std::unexpected(std::move(b).error());
  p.backends = std::move(*b);
  return p;
}

PipelineOptions pipeline_options(const ServiceConfig& c) {
  PipelineOptions o;
  o.rules = c.rules;
  o.public_address = c.public_address;
  o.flow_timeout = c.flow_timeout;
  o.queue_size = c.queue_size;
  o.max_live_flows = c.max_live_flows;
  o.drain_timeout = c.drain_timeout;
  return o;
}

void notify(std::string_view state) { systemd_notify(state); }

}  // namespace

struct Service::Impl {
  Impl(EventLoop l) : loop(std::move(l)), ctx{counters, nullptr, host_name()} {
    register_builtin(source_factories, backend_factories);
  }

  Counters counters;
  EventLoop loop;
  ServiceContext ctx;
  SourceFactories source_factories{"source"};
  BackendFactories backend_factories{"backend"};
  std::string config_path;
  std::unique_ptr<Plan> plan;  // the running configuration
  std::unique_ptr<Pipeline> pipeline;
  std::atomic<std::uint64_t>*reloads_ok = nullptr, *reloads_rejected = nullptr;

  Result<void> start_source(Part<Source>& part) {
    part.tap = std::make_unique<SourceTap>(part.spec.name, counters, *pipeline);
    auto r = part.obj->start(loop, *part.tap);
    if (!r) return std::unexpected(std::move(r).error().with_context("source " + part.spec.name));
    return {};
  }

  void status() {
    notify(fmt::format("STATUS={} live flows, {} events received",
                       pipeline ? pipeline->live_flows() : 0,
                       counters.value("flowmark_pipeline_received_total")));
  }

  void reload() {
    notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", monotonic_ns() / 1000));
    spdlog::info("SIGHUP: reloading {}", config_path);
    auto doc = ConfigDocument::load(config_path);
    Result<Plan> next = doc ? make_plan(std::move(*doc), ctx, source_factories, backend_factories)
                            : Result<Plan>(std::unexpected(std::move(doc).error()));
    if (!next) {
      reloads_rejected->fetch_add(1, std::memory_order_relaxed);
      spdlog::error("reload rejected, the running configuration is kept: {}",
                    next.error().message());
      pipeline->reopen();
      notify("READY=1");
      return;
    }
    apply(std::move(*next));
    reloads_ok->fetch_add(1, std::memory_order_relaxed);
    notify("READY=1");
    status();
  }

  template <typename T>
  static const Part<T>* find(const std::vector<Part<T>>& parts, std::string_view name) {
    for (const auto& p : parts) {
      if (p.spec.name == name) return &p;
    }
    return nullptr;
  }

  void apply(Plan next) {
    ctx.registry = next.registry.get();
    if (next.config.sites.networks() != plan->config.sites.networks() ||
        next.config.sites.sites() != plan->config.sites.sites()) {
      spdlog::info("reload: site map of {} network(s), {} site(s)", next.config.sites.networks(),
                   next.config.sites.sites().size());
    }
    ctx.sites->set(next.config.sites);
    ctx.hostname = next.config.hostname.empty() ? host_name() : next.config.hostname;
    // Sources that go away or change stop first (a changed one may reuse its port or path).
    std::vector<Part<Source>> kept_sources;
    for (auto& old : plan->sources) {
      const auto* n = find(next.sources, old.spec.name);
      if (n && n->spec.type == old.spec.type &&
          ConfigDocument::same(n->spec.table, old.spec.table)) {
        old.spec = n->spec;  // the table now lives in the new document
        kept_sources.push_back(std::move(old));
      } else {
        spdlog::info("reload: stopping source {}", old.spec.name);
        old.obj->stop();
      }
    }
    pipeline->set_options(pipeline_options(next.config));
    std::vector<Part<Backend>> kept_backends;
    for (auto& old : plan->backends) {
      const auto* n = find(next.backends, old.spec.name);
      if (n && n->spec.type == old.spec.type &&
          ConfigDocument::same(n->spec.table, old.spec.table)) {
        old.spec = n->spec;
        kept_backends.push_back(std::move(old));
      } else {
        spdlog::info("reload: stopping backend {}", old.spec.name);
        pipeline->remove_backend(old.spec.name);
      }
    }
    for (auto& b : next.backends) {
      if (find(kept_backends, b.spec.name)) continue;
      spdlog::info("reload: starting backend {} ({} live flows adopted)", b.spec.name,
                   pipeline->live_flows());
      if (auto r = pipeline->add_backend(b.spec.name, std::move(b.obj), true); !r) {
        spdlog::error("reload: {}", r.error().message());
      }
    }
    for (auto& s : next.sources) {
      if (const auto* k = find(kept_sources, s.spec.name)) {
        (void)k;
        continue;
      }
      spdlog::info("reload: starting source {}", s.spec.name);
      if (auto r = start_source(s); !r) {
        spdlog::error("reload: {}", r.error().message());
        continue;
      }
      kept_sources.push_back(std::move(s));
    }
    // Backend objects now belong to the pipeline; keep the specs for the next comparison.
    std::vector<Part<Backend>> backends;
    backends.reserve(next.backends.size());
    for (auto& b : next.backends) backends.push_back({b.spec, nullptr, nullptr});
    next.sources = std::move(kept_sources);
    next.backends = std::move(backends);
    pipeline->reopen();
    plan = std::make_unique<Plan>(std::move(next));
  }
};

Service::Service(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Service::~Service() = default;

Counters& Service::counters() noexcept { return impl_->counters; }
const std::string& Service::log_level() const noexcept { return impl_->plan->config.log_level; }

Result<std::unique_ptr<Service>> Service::create(ConfigDocument doc, std::string config_path) {
  FM_TRY(auto loop, EventLoop::create());
  auto impl = std::make_unique<Impl>(std::move(loop));
  impl->config_path = std::move(config_path);
  for (const auto& w : doc.warnings()) {  // a translation's start with the file and place
    if (w.starts_with(doc.name())) {
      spdlog::warn("{}", w);
    } else {
      spdlog::warn("{}: {}", doc.name(), w);
    }
  }
  FM_TRY(auto plan,
         make_plan(std::move(doc), impl->ctx, impl->source_factories, impl->backend_factories));
  impl->plan = std::make_unique<Plan>(std::move(plan));
  impl->ctx.registry = impl->plan->registry.get();
  impl->ctx.sites->set(impl->plan->config.sites);
  if (!impl->plan->config.hostname.empty()) impl->ctx.hostname = impl->plan->config.hostname;
  impl->reloads_ok = &impl->counters.counter("flowmark_reloads_total", {{"outcome", "applied"}},
                                             "Configuration reloads (SIGHUP), by outcome");
  impl->reloads_rejected =
      &impl->counters.counter("flowmark_reloads_total", {{"outcome", "rejected"}},
                              "Configuration reloads (SIGHUP), by outcome");
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Result<std::string> Service::check(const ConfigDocument& doc) {
  Counters counters;
  ServiceContext ctx{counters, nullptr, host_name()};
  SourceFactories sources{"source"};
  BackendFactories backends{"backend"};
  register_builtin(sources, backends);
  FM_TRY(auto text_doc, ConfigDocument::parse_toml(doc.toml_text(), doc.name()));
  FM_TRY(auto plan, make_plan(std::move(text_doc), ctx, sources, backends, /*discover=*/false));
  std::string out = fmt::format("{}: OK\n", doc.name());
  for (const auto& s : plan.sources)
    out += fmt::format("  source  {} ({})\n", s.spec.name, s.spec.type);
  for (const auto& b : plan.backends) {
    out += fmt::format("  backend {} ({})\n", b.spec.name, b.spec.type);
  }
  out += fmt::format("  {} classification rule(s); registry: {}\n", plan.config.rules.size(),
                     plan.config.registry);
  if (!plan.config.sites.empty()) {
    out += fmt::format("  site map: {} network(s) of {} site(s)\n", plan.config.sites.networks(),
                       plan.config.sites.sites().size());
  }
  return out;
}

void Service::stop() noexcept { impl_->loop.stop(); }

Result<void> Service::run() {
  auto& d = *impl_;
  auto& cfg = d.plan->config;
  // Signals first: they are blocked in this thread, and the worker threads started below
  // inherit the mask, so that only the loop sees them.
  auto on_stop = [&](int signo) {
    spdlog::info("{}: stopping", signo == SIGINT ? "SIGINT" : "SIGTERM");
    d.loop.stop();
  };
  FM_TRY_VOID(d.loop.on_signal(SIGTERM, on_stop));
  FM_TRY_VOID(d.loop.on_signal(SIGINT, on_stop));
  FM_TRY_VOID(d.loop.on_signal(SIGHUP, [&](int) { d.reload(); }));
  (void)::signal(SIGPIPE, SIG_IGN);
  d.pipeline = std::make_unique<Pipeline>(d.ctx, pipeline_options(cfg));
  d.pipeline->set_deferred_wakeups(true);
  FM_TRY_VOID(d.pipeline->attach(d.loop));
  d.loop.after_dispatch([&d] { d.pipeline->wake_backends(); });
  auto fail_start = [&](Error e) -> Result<void> {
    for (auto& s : d.plan->sources) s.obj->stop();
    d.pipeline->shutdown();
    return std::unexpected(std::move(e));
  };
  for (auto& b : d.plan->backends) {
    if (auto r = d.pipeline->add_backend(b.spec.name, std::move(b.obj)); !r) {
      return fail_start(std::move(r).error());
    }
  }
  for (auto& s : d.plan->sources) {
    if (auto r = d.start_source(s); !r) return fail_start(std::move(r).error());
  }

  if (cfg.flow_timeout > 0) {
    auto period = std::chrono::milliseconds(
        static_cast<std::int64_t>(std::clamp(cfg.flow_timeout / 10, 0.1, 60.0) * 1000));
    FM_TRY(auto t, d.loop.add_timer(period, period, [&] { d.pipeline->expire(); }));
    (void)t;
  }
  if (const std::uint64_t watchdog_us = systemd_watchdog_usec(); watchdog_us > 0) {
    auto half = std::chrono::microseconds(watchdog_us / 2);
    FM_TRY(auto t, d.loop.add_timer(half, half, [] { notify("WATCHDOG=1"); }));
    (void)t;
  }
  FM_TRY(auto status_timer,
         d.loop.add_timer(std::chrono::seconds(10), std::chrono::seconds(10), [&] { d.status(); }));
  (void)status_timer;

  spdlog::info("flowmarkd running: {} source(s), {} backend(s), {} rule(s)", d.plan->sources.size(),
               d.pipeline->backend_names().size(), cfg.rules.size());
  notify("READY=1");
  d.status();
  auto r = d.loop.run();

  notify("STOPPING=1");
  for (auto& s : d.plan->sources) s.obj->stop();
  const auto live = d.pipeline->live_flows();
  d.pipeline->shutdown();
  spdlog::info("stopped: {} live flow(s) ended; counters {}", live,
               d.counters.to_json(/*nonzero_only=*/true));
  return r;
}

}  // namespace flowmark::daemon
