// Translating a parsed flowd.cfg into flowmarkd's TOML schema (see flowd_config.hpp).
//
// Every value is checked first, whether or not the selected plugin and backends use it, so a
// typo is reported even in a key that flowd would have ignored; keys that the selection does
// not use give a warning instead of silently doing nothing.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "daemon/flowd/flowd_format.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/daemon/flowd/flowd_config.hpp"

namespace flowmark::daemon {
namespace {

constexpr std::array<std::string_view, 5> kPlugins = {"firefly", "iperf", "netlink", "netstat",
                                                      "np_api"};
constexpr std::array<std::string_view, 3> kBackends = {"ebpf", "prometheus", "udp_firefly"};

// Who reads a key: a plugin, a backend, or everybody (empty owner).
struct KeyInfo {
  std::string_view key;
  std::string_view plugin1, plugin2;  // PLUGIN values that use it
  std::string_view backend;           // BACKEND value that uses it
};
// Sorted by name: the order of "known keys" in messages.
constexpr KeyInfo kKeys[] = {
    {"BACKEND", {}, {}, {}},
    {"FIREFLY_LISTENER_HOST", "firefly", {}, {}},
    {"FIREFLY_LISTENER_PORT", "firefly", {}, {}},
    {"FLOW_MAP_API", {}, {}, {}},
    {"IP_DISCOVERY_ENABLED", {}, {}, {}},
    {"NETLINK_ACTIVITY", "netlink", {}, {}},
    {"NETLINK_EXPERIMENT", "netlink", {}, {}},
    {"NETLINK_INTERNAL_NETWORKS", "netlink", {}, {}},
    {"NETSTAT_ACTIVITY", "netstat", {}, {}},
    {"NETSTAT_EXPERIMENT", "netstat", {}, {}},
    {"NETSTAT_INTERNAL_NETWORKS", "netstat", "iperf", {}},  // flowd's iperf reads it too
    {"NETWORK_INTERFACE", {}, {}, "ebpf"},
    {"PLUGIN", {}, {}, {}},
    {"PROMETHEUS_SRV_PORT", {}, {}, "prometheus"},
    {"PROMETHEUS_SS_PATH", {}, {}, "prometheus"},
    {"UDP_FIREFLY_DST", {}, {}, "udp_firefly"},
    {"UDP_FIREFLY_IP4_SRC", {}, {}, {}},
    {"UDP_FIREFLY_IP6_SRC", {}, {}, {}},
    {"UDP_FIREFLY_NETLINK", {}, {}, "udp_firefly"},
};

template <typename Range>
std::string join(const Range& names, std::string_view sep = ", ") {
  std::string out;
  bool first = true;
  for (const auto& n : names) {
    if (!first) out += sep;
    out += n;
    first = false;
  }
  return out;
}

std::string known_keys() {
  std::vector<std::string_view> keys;
  for (const KeyInfo& k : kKeys) keys.push_back(k.key);
  return join(keys);
}

const KeyInfo* key_info(std::string_view key) {
  for (const KeyInfo& k : kKeys) {
    if (k.key == key) return &k;
  }
  return nullptr;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// An experiment or activity: a number, or a registry name that the service resolves.
using Id = std::variant<std::int64_t, std::string>;
std::string toml_id(const Id& id) {
  if (const auto* n = std::get_if<std::int64_t>(&id)) return std::to_string(*n);
  return toml_string(std::get<std::string>(id));
}

class Translator {
 public:
  explicit Translator(const FlowdConfig& cfg) : cfg_(cfg) {}

  Result<TranslatedConfig> run() {
    for (const FlowdEntry& e : cfg_.entries) {
      if (key_info(e.key) == nullptr) {
        return fail(Errc::kInvalidArgument,
                    fmt::format("{}:{}: unknown flowd key {}; known keys: {}", cfg_.file_name,
                                e.line, e.key, known_keys()));
      }
    }
    for (const FlowdDuplicate& d : cfg_.duplicates()) {
      std::vector<std::string> earlier;
      for (std::size_t i = 0; i + 1 < d.lines.size(); ++i) {
        earlier.push_back(std::to_string(d.lines[i]));
      }
      warn(d.lines.back(), fmt::format("{} is set again (also on line {}); the last value wins, "
                                       "as in flowd",
                                       d.key, join(earlier)));
    }
    FM_TRY_VOID(select());
    FM_TRY_VOID(read_values());
    warn_unused();
    // By line; std::sort with the order of writing as tie-break (stable_sort draws a
    // deprecation warning from clang with libstdc++ 12).
    std::sort(warnings_.begin(), warnings_.end(), [](const Warning& a, const Warning& b) {
      return std::pair(a.line, a.seq) < std::pair(b.line, b.seq);
    });
    TranslatedConfig out;
    out.toml = emit();
    for (Warning& w : warnings_) out.warnings.push_back(std::move(w.text));
    return out;
  }

 private:
  // ---- messages ----------------------------------------------------------------------
  void warn(int line, std::string text) {
    warnings_.push_back(
        {line, warnings_.size(), fmt::format("{}:{}: {}", cfg_.file_name, line, text)});
  }
  std::unexpected<Error> bad(const FlowdEntry& e, std::string_view allowed) const {
    return fail(Errc::kInvalidArgument, fmt::format("{}:{}: {} = {}: {}", cfg_.file_name, e.line,
                                                    e.key, to_python(e.value), allowed));
  }

  // ---- typed readers, as liberal as flowd ----------------------------------------------
  Result<std::string> string_of(const FlowdEntry& e, std::string_view what) const {
    if (const auto* s = std::get_if<std::string>(&e.value)) return *s;
    return bad(e, fmt::format("expected {} in quotes", what));
  }

  // A list of names: a string (split on commas when `commas`) or a tuple/list of strings.
  Result<std::vector<std::string>> strings_of(const FlowdEntry& e, std::string_view what,
                                              bool commas) const {
    std::vector<std::string> raw;
    if (const auto* s = std::get_if<std::string>(&e.value)) {
      if (!commas) {
        raw.push_back(*s);
      } else {
        std::string_view rest = *s;
        while (true) {
          const auto comma = rest.find(',');
          raw.emplace_back(rest.substr(0, comma));
          if (comma == std::string_view::npos) break;
          rest.remove_prefix(comma + 1);
        }
      }
    } else if (const auto* l = std::get_if<FlowdList>(&e.value)) {
      for (const FlowdScalar& item : l->items) {
        const auto* text = std::get_if<std::string>(&item);
        if (text == nullptr) {
          return bad(e, fmt::format("every element must be {} in quotes", what));
        }
        raw.push_back(*text);
      }
    } else {
      return bad(e, fmt::format("expected {} in quotes, or a tuple or list of them", what));
    }
    std::vector<std::string> out;
    for (const std::string& r : raw) {
      const std::string_view t = trim(r);
      if (t.empty()) {
        // 'a,,b' or ' ' — harmless in a comma list, but an empty element of a tuple is not.
        if (std::holds_alternative<FlowdList>(e.value)) {
          return bad(e, fmt::format("an element is empty; expected {}", what));
        }
        continue;
      }
      out.emplace_back(t);
    }
    return out;
  }

  Result<std::uint16_t> port_of(const FlowdEntry& e) const {
    constexpr std::string_view kAllowed = "expected a port number 1..65535 (10514 or '10514')";
    if (const auto* n = std::get_if<std::int64_t>(&e.value)) {
      if (*n < 1 || *n > 65535) return bad(e, kAllowed);
      return static_cast<std::uint16_t>(*n);
    }
    if (const auto* s = std::get_if<std::string>(&e.value)) {
      auto p = parse_port(trim(*s));
      if (!p) return bad(e, kAllowed);
      return *p;
    }
    return bad(e, kAllowed);
  }

  // flowd tests these for truth; accept what is unambiguous and reject strings like 'no',
  // which Python would take as true.
  Result<bool> bool_of(const FlowdEntry& e) const {
    constexpr std::string_view kAllowed = "expected True or False (or 1/0)";
    if (const auto* b = std::get_if<bool>(&e.value)) return *b;
    if (std::holds_alternative<FlowdNone>(e.value)) return false;
    if (const auto* n = std::get_if<std::int64_t>(&e.value)) {
      if (*n == 0 || *n == 1) return *n == 1;
      return bad(e, kAllowed);
    }
    if (const auto* s = std::get_if<std::string>(&e.value)) {
      std::string lower;
      for (const char c : trim(*s)) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      if (lower == "true") return true;
      if (lower == "false") return false;
    }
    return bad(e, kAllowed);
  }

  Result<Id> id_of(const FlowdEntry& e, std::int64_t min, std::int64_t max,
                   std::string_view what) const {
    const std::string allowed = fmt::format(
        "expected an {} id {}..{} or its name in the registry ('atlas')", what, min, max);
    std::optional<std::int64_t> n;
    if (const auto* i = std::get_if<std::int64_t>(&e.value)) {
      n = *i;
    } else if (const auto* s = std::get_if<std::string>(&e.value)) {
      const std::string_view t = trim(*s);
      if (t.empty()) return bad(e, allowed);
      if (std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        if (t.size() > 6) return bad(e, allowed);
        n = std::stoll(std::string(t));
      } else {
        return Id(std::string(t));
      }
    } else {
      return bad(e, allowed);
    }
    if (*n < min || *n > max) return bad(e, allowed);
    return Id(*n);
  }

  Result<std::vector<std::string>> networks_of(const FlowdEntry& e) const {
    FM_TRY(auto nets, strings_of(e, "a network ('192.168.0.0/16')", true));
    for (const std::string& net : nets) {
      const auto slash = net.find('/');
      auto addr = IpAddress::parse(std::string_view(net).substr(0, slash));
      bool ok = addr.has_value() && net.find('%') == std::string::npos;
      if (ok && slash != std::string::npos) {
        const std::string_view len = std::string_view(net).substr(slash + 1);
        const int max = addr->is_v4() ? 32 : 128;
        int v = -1;
        const auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), v);
        ok = !len.empty() && ec == std::errc() && end == len.data() + len.size() && v >= 0 &&
             v <= max;
      }
      if (!ok) {
        return bad(e, fmt::format("'{}' is not a network; expected address/prefix-length such "
                                  "as '192.168.0.0/16' or '2001:db8::/32'",
                                  net));
      }
    }
    return nets;
  }

  Result<std::string> address_of(const FlowdEntry& e, Family family) const {
    const std::string_view what = family == Family::kV4 ? "an IPv4 address" : "an IPv6 address";
    FM_TRY(auto s, string_of(e, what));
    const std::string_view t = trim(s);
    if (t.empty()) return std::string();
    auto addr = IpAddress::parse(t);
    if (!addr || addr->family() != family || t.find('%') != std::string_view::npos) {
      return bad(e, fmt::format("expected {}", what));
    }
    return std::string(t);
  }

  // ---- the selection: PLUGIN and BACKEND ------------------------------------------------
  Result<void> select() {
    const FlowdEntry* p = cfg_.find("PLUGIN");
    if (p == nullptr) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: PLUGIN is not set; flowd needs one plugin: {}", cfg_.file_name,
                              join(kPlugins)));
    }
    FM_TRY(auto plugin, string_of(*p, "one plugin name"));
    plugin = std::string(trim(plugin));
    if (std::find(kPlugins.begin(), kPlugins.end(), plugin) == kPlugins.end()) {
      return bad(*p, fmt::format("unknown plugin '{}'; flowd runs exactly one of: {}", plugin,
                                 join(kPlugins)));
    }
    plugin_ = plugin;

    backends_ = {"udp_firefly"};  // flowd's default backend
    if (const FlowdEntry* b = cfg_.find("BACKEND")) {
      FM_TRY(auto names, strings_of(*b, "backend names", true));
      if (names.empty()) {
        return bad(*b, fmt::format("expected at least one backend of: {}", join(kBackends)));
      }
      backends_.clear();
      for (const std::string& name : names) {
        if (std::find(kBackends.begin(), kBackends.end(), name) == kBackends.end()) {
          return bad(*b, fmt::format("unknown backend '{}'; known: {}", name, join(kBackends)));
        }
        if (uses_backend(name)) {
          warn(b->line, fmt::format("BACKEND names {} twice; it runs once", name));
          continue;
        }
        backends_.push_back(name);
      }
    }
    return {};
  }

  bool uses_backend(std::string_view name) const {
    return std::find(backends_.begin(), backends_.end(), name) != backends_.end();
  }

  // ---- every value, checked --------------------------------------------------------------
  Result<void> read_values() {
    if (const FlowdEntry* e = cfg_.find("FLOW_MAP_API")) {
      FM_TRY(auto s, string_of(*e, "an http(s):// URL or a file path"));
      std::string_view v = trim(s);
      if (v.starts_with("file://")) v.remove_prefix(7);
      const bool url = v.starts_with("http://") || v.starts_with("https://");
      if (v.empty() || (!url && v.find("://") != std::string_view::npos)) {
        return bad(*e, "expected an http:// or https:// URL or a file path");
      }
      registry_ = std::string(v);
      registry_line_ = e->line;
    }
    if (const FlowdEntry* e = cfg_.find("IP_DISCOVERY_ENABLED")) {
      FM_TRY(discover_, bool_of(*e));
    }
    if (const FlowdEntry* e = cfg_.find("UDP_FIREFLY_IP4_SRC")) {
      FM_TRY(ipv4_, address_of(*e, Family::kV4));
    }
    if (const FlowdEntry* e = cfg_.find("UDP_FIREFLY_IP6_SRC")) {
      FM_TRY(ipv6_, address_of(*e, Family::kV6));
    }
    for (const char* prefix : {"NETSTAT", "NETLINK"}) {
      Scanner& s = std::string_view(prefix) == "NETSTAT" ? netstat_ : netlink_;
      if (const FlowdEntry* e = cfg_.find(fmt::format("{}_EXPERIMENT", prefix))) {
        FM_TRY(s.experiment, id_of(*e, 1, 1023, "experiment"));
      }
      if (const FlowdEntry* e = cfg_.find(fmt::format("{}_ACTIVITY", prefix))) {
        FM_TRY(s.activity, id_of(*e, 0, 63, "activity"));
      }
      if (const FlowdEntry* e = cfg_.find(fmt::format("{}_INTERNAL_NETWORKS", prefix))) {
        FM_TRY(s.networks, networks_of(*e));
      }
    }
    if (const FlowdEntry* e = cfg_.find("FIREFLY_LISTENER_HOST")) {
      FM_TRY(auto host, string_of(*e, "an address to listen on"));
      listen_host_ = std::string(trim(host));
      if (listen_host_.empty()) listen_host_ = "0.0.0.0";  // Python binds '' to all addresses
    }
    if (const FlowdEntry* e = cfg_.find("FIREFLY_LISTENER_PORT")) {
      FM_TRY(listen_port_, port_of(*e));
    }
    if (const FlowdEntry* e = cfg_.find("UDP_FIREFLY_DST")) {
      FM_TRY(collectors_, strings_of(*e, "a collector host[:port]", true));
    }
    if (const FlowdEntry* e = cfg_.find("UDP_FIREFLY_NETLINK")) {
      FM_TRY(tcp_info_, bool_of(*e));
    }
    if (const FlowdEntry* e = cfg_.find("NETWORK_INTERFACE")) {
      FM_TRY(interfaces_, strings_of(*e, "an interface name", true));
    }
    if (const FlowdEntry* e = cfg_.find("PROMETHEUS_SRV_PORT")) {
      FM_TRY(prometheus_port_, port_of(*e));
    }
    if (const FlowdEntry* e = cfg_.find("PROMETHEUS_SS_PATH")) {
      FM_TRY(auto path, string_of(*e, "a path"));
      (void)path;
      warn(e->line,
           "PROMETHEUS_SS_PATH is accepted and ignored: flowmarkd reads TCP "
           "statistics from netlink (INET_DIAG_INFO), not from ss");
    }

    // What the selection needs.
    if (plugin_ == "netstat" || plugin_ == "netlink") {
      const Scanner& s = plugin_ == "netstat" ? netstat_ : netlink_;
      const std::string prefix = plugin_ == "netstat" ? "NETSTAT" : "NETLINK";
      if (!s.experiment || !s.activity) {
        return fail(Errc::kInvalidArgument,
                    fmt::format("{}: PLUGIN '{}' needs {}_EXPERIMENT and {}_ACTIVITY (the ids "
                                "given to every connection it reports)",
                                cfg_.file_name, plugin_, prefix, prefix));
      }
    }
    if (uses_backend("ebpf") && interfaces_.empty()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: BACKEND 'ebpf' needs NETWORK_INTERFACE, the interfaces whose "
                              "IPv6 packets get flow labels ('eth0' or 'eth0,eth1')",
                              cfg_.file_name));
    }
    if (uses_backend("prometheus")) {
      warn(line_of("BACKEND"),
           fmt::format("the prometheus backend listens on 0.0.0.0:{} (all addresses) as flowd "
                       "does; to keep it local, use a TOML config with listen = "
                       "\"127.0.0.1:{}\"",
                       prometheus_port_, prometheus_port_));
    }
    return {};
  }

  int line_of(std::string_view key) const {
    const FlowdEntry* e = cfg_.find(key);
    return e ? e->line : 0;
  }

  void warn_unused() {
    for (const FlowdEntry& e : cfg_.entries) {
      if (cfg_.find(e.key) != &e) continue;  // once per key
      const KeyInfo* k = key_info(e.key);
      if (!k->plugin1.empty() && plugin_ != k->plugin1 && plugin_ != k->plugin2) {
        warn(e.line,
             fmt::format("{} is ignored: only PLUGIN '{}'{} uses it, and PLUGIN is '{}'", e.key,
                         k->plugin1, k->plugin2.empty() ? "" : fmt::format(" or '{}'", k->plugin2),
                         plugin_));
      }
      if (!k->backend.empty() && !uses_backend(k->backend) && e.key != "PROMETHEUS_SS_PATH") {
        warn(e.line, fmt::format("{} is ignored: only BACKEND '{}' uses it, and BACKEND is '{}'",
                                 e.key, k->backend, join(backends_, ",")));
      }
    }
  }

  // ---- the TOML document -----------------------------------------------------------------
  std::string emit() const {
    std::string name = cfg_.file_name;  // in a comment: no line breaks or control bytes
    std::replace_if(
        name.begin(), name.end(),
        [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }, '?');
    std::string t = fmt::format(
        "# flowmarkd configuration translated from flowd's {}\n"
        "# (PLUGIN '{}', BACKEND '{}').\n\n",
        name, plugin_, join(backends_, ","));
    t += "[service]\n";
    t += fmt::format("registry = {}{}\n", toml_string(registry_),
                     registry_line_ ? "  # FLOW_MAP_API" : "  # built in: FLOW_MAP_API not set");
    t += "hostname = \"\"\n\n";

    t += "[public_address]\n";
    t += fmt::format("discover = {}\n", discover_ ? "true" : "false");
    t += "stun_servers = []\n";
    t += fmt::format("ipv4 = {}\n", toml_string(ipv4_));
    t += fmt::format("ipv6 = {}\n\n", toml_string(ipv6_));

    t += fmt::format("[source.{}]\n", plugin_);
    if (plugin_ == "np_api") {
      t += "type = \"named-pipe\"\n";
      t += "path = \"/var/run/flowd\"\n";
    } else if (plugin_ == "firefly") {
      t += "type = \"firefly\"\n";
      t += fmt::format("bind = {}\n", toml_string(listen_host_));
      t += fmt::format("port = {}\n", listen_port_);
    } else {
      t += "type = \"sockets\"\n";
      const Scanner& s = plugin_ == "netlink" ? netlink_ : netstat_;
      if (plugin_ == "iperf") {
        t += "preset = \"iperf\"\n";
      } else if (s.experiment && s.activity) {  // read_values() made sure of both
        t += fmt::format("experiment = {}\n", toml_id(*s.experiment));
        t += fmt::format("activity = {}\n", toml_id(*s.activity));
      }
      t += fmt::format("internal_networks = {}\n", toml_strings(s.networks));
      t += "period = 2.0\n";
      t += "protocols = [\"tcp\"]\n";
    }

    for (const std::string& b : backends_) {
      t += fmt::format("\n[backend.{}]\n", b);
      if (b == "udp_firefly") {
        t += "type = \"firefly\"\n";
        t += "to_destination = true\n";
        t += fmt::format("collectors = {}\n", toml_strings(collectors_));
        t += fmt::format("tcp_info = {}\n", tcp_info_ ? "true" : "false");
      } else if (b == "prometheus") {
        t += "type = \"prometheus\"\n";
        t += "# flowd binds all addresses; kept for compatibility (127.0.0.1 keeps it local)\n";
        t += fmt::format("listen = \"0.0.0.0:{}\"\n", prometheus_port_);
      } else if (b == "ebpf") {
        t += "type = \"flowlabel\"\n";
        t += fmt::format("interfaces = {}\n", toml_strings(interfaces_));
      }
    }
    return t;
  }

  struct Scanner {
    std::optional<Id> experiment;
    std::optional<Id> activity;
    std::vector<std::string> networks;
  };

  const FlowdConfig& cfg_;
  struct Warning {
    int line;
    std::size_t seq;
    std::string text;
  };
  std::vector<Warning> warnings_;
  std::string plugin_;
  std::vector<std::string> backends_;
  std::string registry_ = "builtin";
  int registry_line_ = 0;
  bool discover_ = false;
  std::string ipv4_, ipv6_;
  Scanner netstat_, netlink_;
  std::string listen_host_ = "0.0.0.0";
  std::uint16_t listen_port_ = 10514;
  std::vector<std::string> collectors_;
  bool tcp_info_ = false;
  std::vector<std::string> interfaces_;
  std::uint16_t prometheus_port_ = 9000;
};

}  // namespace

Result<TranslatedConfig> translate_flowd_config(const FlowdConfig& config) {
  return Translator(config).run();
}

}  // namespace flowmark::daemon
