#include "flowmark/daemon/config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include <toml++/toml.h>

#include "daemon/flowd/flowd_format.hpp"
#include "daemon/flowd_go/flowd_go_config.hpp"

namespace flowmark::daemon {

struct ConfigDocument::Impl {
  toml::table root;
};

ConfigDocument::ConfigDocument() : impl_(std::make_unique<Impl>()) {}
ConfigDocument::ConfigDocument(ConfigDocument&&) noexcept = default;
ConfigDocument& ConfigDocument::operator=(ConfigDocument&&) noexcept = default;
ConfigDocument::~ConfigDocument() = default;

Result<ConfigDocument> ConfigDocument::parse_toml(std::string_view text, std::string name) {
  ConfigDocument doc;
  doc.name_ = std::move(name);
  doc.text_ = std::string(text);
  try {
    doc.impl_->root = toml::parse(doc.text_, doc.name_);
  } catch (const toml::parse_error& e) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}:{}:{}: {}", doc.name_, e.source().begin.line,
                            e.source().begin.column, e.description()));
  }
  return doc;
}

Result<ConfigDocument> ConfigDocument::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_errno(fmt::format("cannot read config {}", path));
  std::ostringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  if (looks_like_flowd_go_config(path, text)) {
    FM_TRY(auto translated, translate_flowd_go_config(text, path));
    FM_TRY(auto doc, parse_toml(translated.toml, path + " (translated from flowd-go's YAML)"));
    doc.name_ = path;
    doc.from_flowd_ = true;
    doc.warnings_ = std::move(translated.warnings);
    return doc;
  }
  if (is_flowd_format(path, text)) {
    FM_TRY(auto translated, flowd_to_toml(text, path));
    FM_TRY(auto doc, parse_toml(translated.toml, path + " (translated from flowd's format)"));
    doc.name_ = path;
    doc.from_flowd_ = true;
    doc.warnings_ = std::move(translated.warnings);
    return doc;
  }
  return parse_toml(text, path);
}

const void* ConfigDocument::root() const noexcept { return &impl_->root; }

const void* ConfigDocument::table(std::string_view key) const noexcept {
  return impl_->root.get_as<toml::table>(key);
}

const void* ConfigDocument::table(std::string_view kind, std::string_view name) const noexcept {
  const auto* outer = impl_->root.get_as<toml::table>(kind);
  return outer ? outer->get_as<toml::table>(name) : nullptr;
}

bool ConfigDocument::same(const void* a, const void* b) noexcept {
  if (!a || !b) return a == b;
  return *static_cast<const toml::table*>(a) == *static_cast<const toml::table*>(b);
}

Result<PortRange> PortRange::parse(std::string_view text) {
  auto dash = text.find('-');
  auto one = [&](std::string_view t) -> Result<std::uint16_t> { return parse_port(t); };
  if (dash == std::string_view::npos) {
    FM_TRY(auto p, one(text));
    return PortRange{p, p};
  }
  FM_TRY(auto lo, one(text.substr(0, dash)));
  FM_TRY(auto hi, one(text.substr(dash + 1)));
  if (lo > hi) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}': the range is empty: write the lower port first", text));
  }
  return PortRange{lo, hi};
}

bool any_contains(std::span<const PortRange> ranges, std::uint16_t port) noexcept {
  for (const auto& r : ranges) {
    if (r.contains(port)) return true;
  }
  return false;
}

bool Rule::matches(const scitags::FlowEvent& e) const noexcept {
  if (protocol && *protocol != e.protocol) return false;
  if (!src.empty() && !any_contains(src, e.src.address)) return false;
  if (!dst.empty() && !any_contains(dst, e.dst.address)) return false;
  if (!src_ports.empty() && !any_contains(src_ports, e.src.port)) return false;
  if (!dst_ports.empty() && !any_contains(dst_ports, e.dst.port)) return false;
  return true;
}

namespace {

const toml::table& as_table(const void* p) { return *static_cast<const toml::table*>(p); }

}  // namespace

Result<std::vector<PortRange>> read_port_ranges(Section& s, std::string_view key) {
  std::vector<PortRange> out;
  FM_TRY(auto texts, s.scalars(key));
  for (const auto& text : texts) {
    auto r = PortRange::parse(text);
    if (!r) return s.error(key, r.error().message());
    out.push_back(*r);
  }
  return out;
}

Result<std::pair<std::uint32_t, std::uint32_t>> read_classification(Section& s,
                                                                    const scitags::Registry& reg) {
  FM_TRY(auto exp_text, s.scalar("experiment"));
  FM_TRY(auto act_text, s.scalar("activity"));
  if (!exp_text && !act_text) return std::pair<std::uint32_t, std::uint32_t>{0, 0};
  if (!exp_text || !act_text) {
    return s.error(exp_text ? "activity" : "experiment",
                   "missing: experiment and activity go together");
  }
  auto exp = reg.resolve_experiment(*exp_text);
  if (!exp) return s.error("experiment", exp.error().message());
  auto act = reg.resolve_activity(*exp, *act_text);
  if (!act) return s.error("activity", act.error().message());
  return std::pair{*exp, *act};
}

namespace {

Result<Rule> read_rule(Section& s, const scitags::Registry& reg) {
  Rule r;
  FM_TRY(r.src, s.networks("src"));
  FM_TRY(r.dst, s.networks("dst"));
  FM_TRY(r.src_ports, read_port_ranges(s, "src_ports"));
  FM_TRY(r.dst_ports, read_port_ranges(s, "dst_ports"));
  FM_TRY(auto proto, s.choice("protocol", "any", {"any", "tcp", "udp"}));
  if (proto != "any") r.protocol = scitags::parse_protocol(proto);
  if (!s.has("experiment") || !s.has("activity")) {
    return s.error(s.has("experiment") ? "activity" : "experiment",
                   "missing: a rule needs an experiment and an activity (ids or names)");
  }
  FM_TRY(auto ea, read_classification(s, reg));
  r.experiment = ea.first;
  r.activity = ea.second;
  FM_TRY_VOID(s.finish());
  return r;
}

Result<std::optional<IpAddress>> address(Section& s, std::string_view key, Family family) {
  FM_TRY(auto text, s.string(key, ""));
  if (text.empty()) return std::optional<IpAddress>{};
  auto a = IpAddress::parse(text);
  if (!a) return s.error(key, a.error().message());
  if (a->family() != family) {
    return s.error(
        key, fmt::format("'{}' is not an IPv{} address", text, family == Family::kV4 ? 4 : 6));
  }
  return std::optional<IpAddress>{*a};
}

Result<std::vector<PartSpec>> parts(const toml::table& root, std::string_view kind) {
  std::vector<PartSpec> out;
  const auto* node = root.get(kind);
  if (!node) return out;
  const auto* t = node->as_table();
  if (!t) {
    return fail(Errc::kInvalidArgument,
                fmt::format("'{}' must be a table of named {}s ([{}.NAME])", kind, kind, kind));
  }
  for (const auto& [name, value] : *t) {
    const auto* part = value.as_table();
    if (!part) {
      return fail(Errc::kInvalidArgument, fmt::format("[{}.{}] must be a table (line {})", kind,
                                                      name.str(), value.source().begin.line));
    }
    PartSpec spec;
    spec.name = std::string(name.str());
    spec.type =
        part->get_as<std::string>("type") ? part->get_as<std::string>("type")->get() : spec.name;
    spec.table = part;
    out.push_back(std::move(spec));
  }
  return out;
}

}  // namespace

Result<std::pair<std::string, bool>> registry_source(const ConfigDocument& doc) {
  const auto* svc = doc.table("service");
  if (!svc) return std::pair<std::string, bool>{"builtin", true};
  Section s(svc, "[service]");
  FM_TRY(auto reg, s.string("registry", "builtin"));
  FM_TRY(auto verify, s.boolean("registry_verify_tls", true));
  return std::pair{reg, verify};
}

Result<ServiceConfig> ServiceConfig::from(const ConfigDocument& doc,
                                          const scitags::Registry& registry) {
  ServiceConfig c;
  const auto& root = as_table(doc.root());
  static constexpr std::string_view kTop[] = {"service", "public_address", "rule",
                                              "site",    "source",         "backend"};
  for (const auto& [k, v] : root) {
    if (std::find(std::begin(kTop), std::end(kTop), std::string_view(k.str())) == std::end(kTop)) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: unknown table or key '{}' (line {}; known: {})", doc.name(),
                              k.str(), v.source().begin.line, fmt::join(kTop, ", ")));
    }
  }
  if (const auto* svc = doc.table("service")) {
    Section s(svc, "[service]");
    FM_TRY(c.registry, s.string("registry", c.registry));
    FM_TRY(c.registry_verify_tls, s.boolean("registry_verify_tls", true));
    FM_TRY(c.hostname, s.string("hostname", ""));
    FM_TRY(c.flow_timeout, s.number("flow_timeout", c.flow_timeout, 0, 1e9));
    FM_TRY(auto q, s.integer("queue_size", static_cast<std::int64_t>(c.queue_size), 16, 1 << 24));
    c.queue_size = static_cast<std::size_t>(q);
    FM_TRY(auto m, s.integer("max_live_flows", static_cast<std::int64_t>(c.max_live_flows), 0,
                             std::int64_t{1} << 32));
    c.max_live_flows = static_cast<std::size_t>(m);
    FM_TRY(c.drain_timeout, s.number("drain_timeout", c.drain_timeout, 0.1, 3600));
    FM_TRY(c.sites_file, s.string("sites_file", ""));
    FM_TRY(c.log_level,
           s.choice("log_level", "info", {"debug", "info", "warning", "error", "off"}));
    FM_TRY_VOID(s.finish());
  } else if (root.contains("service")) {
    return fail(Errc::kInvalidArgument, "'service' must be a table ([service])");
  }
  if (const auto* pa = doc.table("public_address")) {
    Section s(pa, "[public_address]");
    FM_TRY(c.public_address.discover, s.boolean("discover", false));
    FM_TRY(c.public_address.stun_servers, s.strings("stun_servers"));
    // flowd asks a public STUN server; so do we when none is named.
    if (c.public_address.discover && c.public_address.stun_servers.empty()) {
      c.public_address.stun_servers = {"stun.l.google.com:19302", "stun.cloudflare.com:3478"};
    }
    FM_TRY(c.public_address.ipv4, address(s, "ipv4", Family::kV4));
    FM_TRY(c.public_address.ipv6, address(s, "ipv6", Family::kV6));
    FM_TRY(auto map, s.table("map"));
    if (map) {
      for (const auto& key : map->keys()) {
        auto from = IpAddress::parse(key);
        if (!from) return map->error(key, from.error().message());
        FM_TRY(auto to_text, map->string(key, ""));
        auto to = IpAddress::parse(to_text);
        if (!to) return map->error(key, to.error().message());
        if (to->family() != from->family()) {
          return map->error(key,
                            fmt::format("'{}' and '{}' are of different families", key, to_text));
        }
        c.public_address.map.emplace_back(*from, *to);
      }
      FM_TRY_VOID(map->finish());
    }
    FM_TRY_VOID(s.finish());
  }
  if (const auto* rules = root.get("rule")) {
    const auto* arr = rules->as_array();
    if (!arr) return fail(Errc::kInvalidArgument, "'rule' must be an array of tables ([[rule]])");
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const auto* t = (*arr)[i].as_table();
      if (!t) return fail(Errc::kInvalidArgument, fmt::format("rule {} is not a table", i + 1));
      Section s(t, fmt::format("[[rule]] #{}", i + 1));
      FM_TRY(auto r, read_rule(s, registry));
      c.rules.push_back(std::move(r));
    }
  }
  if (const auto* sites = root.get("site")) {
    const auto* arr = sites->as_array();
    if (!arr) return fail(Errc::kInvalidArgument, "'site' must be an array of tables ([[site]])");
    for (std::size_t i = 0; i < arr->size(); ++i) {
      const auto* t = (*arr)[i].as_table();
      if (!t) return fail(Errc::kInvalidArgument, fmt::format("site {} is not a table", i + 1));
      Section s(t, fmt::format("[[site]] #{}", i + 1));
      FM_TRY(auto name, s.string("name", ""));
      if (name.empty()) return s.error("name", "missing: a site needs a name");
      FM_TRY(auto nets, s.networks("networks"));
      if (nets.empty()) return s.error("networks", "missing: a site needs at least one network");
      for (const auto& n : nets) {
        if (auto r = c.sites.add(name, n); !r) return s.error("networks", r.error().message());
      }
      FM_TRY_VOID(s.finish());
    }
  }
  if (!c.sites_file.empty()) {
    auto file = collector::SiteMap::load_json(c.sites_file);
    if (!file) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("[service] sites_file: {}", file.error().message()));
    }
    if (auto r = c.sites.merge(*file); !r) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("[service] sites_file {}: {}", c.sites_file, r.error().message()));
    }
  }
  FM_TRY(c.sources, parts(root, "source"));
  FM_TRY(c.backends, parts(root, "backend"));
  // A flowlabel backend with rules marks in the kernel on its own (perfSONAR mode): no
  // source is needed then.
  const bool marks_alone = std::any_of(c.backends.begin(), c.backends.end(), [](const auto& b) {
    return b.type == "flowlabel" && as_table(b.table).contains("rule");
  });
  if (c.sources.empty() && !marks_alone) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: no [source.NAME] table: nothing would find flows (a "
                            "flowlabel backend with [[backend.NAME.rule]] tables needs none)",
                            doc.name()));
  }
  if (c.backends.empty()) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: no [backend.NAME] table: nothing would mark flows", doc.name()));
  }
  return c;
}

}  // namespace flowmark::daemon
