// Translating flowd-go's conf.yaml into flowmarkd's TOML schema (see flowd_go_config.hpp).
//
// flowd-go's sections are switched on by being present (`api: {}`); absent keys take the
// defaults of its conf.go files. Each key below is either written into the TOML, or
// explained in a warning (a tuning knob of flowd-go's own machinery whose result flowmarkd
// gives anyway), or refused with the reason (a behaviour flowmarkd does not have).
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "daemon/flowd/flowd_format.hpp"
#include "daemon/flowd_go/flowd_go_config.hpp"
#include "flowmark/core/address.hpp"

namespace flowmark::daemon {
namespace {

// ---- text ----------------------------------------------------------------------------------
std::string join(const std::vector<std::string>& items, std::string_view sep = ", ") {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

// "addr:port", IPv6 in brackets.
std::string host_port(const IpAddress& a, std::uint16_t port) {
  return a.is_v6() ? fmt::format("[{}]:{}", a.to_string(), port)
                   : fmt::format("{}:{}", a.to_string(), port);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
  return out;
}

// ---- reading YAML ----------------------------------------------------------------------------
// A mapping node with its path in the document ("backends.firefly").
struct Map {
  YAML::Node node;  // a map, or null (`{}` written as nothing: every key absent)
  std::string path;

  // The value of `key`, or an undefined node (IsDefined() false; a default-constructed
  // YAML::Node is a defined null).
  YAML::Node get(std::string_view key) const {
    if (node.IsMap()) {
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
      }
    }
    return YAML::Node(YAML::NodeType::Undefined);
  }
  bool has(std::string_view key) const { return get(key).IsDefined(); }
  std::string at(std::string_view key) const {
    return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
  }
};

class Translator {
 public:
  Translator(std::string_view text, std::string_view file) : text_(text), file_(file) {}

  Result<FlowdGoTranslation> run() {
    YAML::Node root;
    try {
      root = YAML::Load(std::string(text_));
    } catch (const YAML::Exception& e) {
      return fail(Errc::kInvalidArgument, fmt::format("{}:{}:{}: not YAML: {}", file_,
                                                      e.mark.line + 1, e.mark.column + 1, e.msg));
    }
    if (!root.IsDefined() || root.IsNull()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: no plugin and no backend: flowd-go would run and do nothing "
                              "(every section of its sample conf.yaml is commented out); "
                              "enable a plugin and a backend",
                              file_));
    }
    if (!root.IsMap()) return bad(root, "(top level)", "expected a mapping of flowd-go's keys");
    const Map top{root, ""};
    FM_TRY_VOID(keys(top, {"pidPath", "workDir", "plugins", "backends", "enrichers"}));
    try {
      FM_TRY_VOID(read(top));
    } catch (const YAML::Exception& e) {  // a bug here rather than bad input; say where
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}:{}:{}: {}", file_, e.mark.line + 1, e.mark.column + 1, e.msg));
    }
    FlowdGoTranslation out;
    out.toml = emit();
    out.warnings = std::move(warnings_);
    return out;
  }

 private:
  // ---- messages --------------------------------------------------------------------------
  std::string where(const YAML::Node& n) const {
    const YAML::Mark m = n.Mark();
    if (m.line < 0) return std::string(file_);
    return fmt::format("{}:{}:{}", file_, m.line + 1, m.column + 1);
  }
  std::unexpected<Error> bad(const YAML::Node& n, std::string_view path,
                             std::string_view why) const {
    return fail(Errc::kInvalidArgument, fmt::format("{}: {}: {}", where(n), path, why));
  }
  std::unexpected<Error> bad(const Map& m, std::string_view key, std::string_view why) const {
    const YAML::Node n = m.get(key);
    return bad(n.IsDefined() ? n : m.node, m.at(key), why);
  }
  void warn(const Map& m, std::string_view key, std::string_view why) {
    const YAML::Node n = m.get(key);
    warnings_.push_back(
        fmt::format("{}: {}: {}", where(n.IsDefined() ? n : m.node), m.at(key), why));
  }

  // Every key of `m` is one of `known` and appears once.
  Result<void> keys(const Map& m, std::initializer_list<std::string_view> known) const {
    if (!m.node.IsMap()) return {};
    std::set<std::string> seen;
    for (auto it = m.node.begin(); it != m.node.end(); ++it) {
      if (!it->first.IsScalar()) return bad(it->first, m.path, "a key must be a plain name");
      const std::string& k = it->first.Scalar();
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        std::vector<std::string> names(known.begin(), known.end());
        return bad(
            it->first, m.at(k),
            fmt::format("unknown key (flowd-go does not read it); known here: {}", join(names)));
      }
      if (!seen.insert(k).second) return bad(it->first, m.at(k), "given twice");
    }
    return {};
  }

  // A section switched on by being present: a mapping, or `{}`. `name:` with nothing after
  // it is null, which flowd-go takes as absent: said, and left off.
  Result<std::optional<Map>> section(const Map& parent, std::string_view key) {
    const YAML::Node n = parent.get(key);
    if (!n.IsDefined()) return std::optional<Map>{};
    if (n.IsNull()) {
      warn(parent, key,
           "empty (null), which flowd-go takes as absent: left off; write `{}` to switch it "
           "on with its defaults");
      return std::optional<Map>{};
    }
    if (!n.IsMap()) return bad(n, parent.at(key), "expected a mapping (or {} for the defaults)");
    return std::optional<Map>{Map{n, parent.at(key)}};
  }

  Result<std::optional<std::string>> string(const Map& m, std::string_view key) const {
    const YAML::Node n = m.get(key);
    if (!n.IsDefined()) return std::optional<std::string>{};
    if (n.IsNull()) return std::optional<std::string>{""};
    if (!n.IsScalar()) return bad(n, m.at(key), "expected a string");
    return std::optional<std::string>{n.Scalar()};
  }

  Result<std::optional<bool>> boolean(const Map& m, std::string_view key) const {
    const YAML::Node n = m.get(key);
    if (!n.IsDefined()) return std::optional<bool>{};
    if (n.IsScalar() && n.Tag() != "!") {
      const std::string v = lower(n.Scalar());
      if (v == "true") return std::optional<bool>{true};
      if (v == "false") return std::optional<bool>{false};
    }
    return bad(n, m.at(key),
               fmt::format("'{}' is not a boolean: expected true or false",
                           n.IsScalar() ? n.Scalar() : "(not a scalar)"));
  }

  Result<std::int64_t> integer_of(const YAML::Node& n, std::string_view path, std::int64_t min,
                                  std::int64_t max) const {
    const std::string allowed = fmt::format("expected an integer {}..{}", min, max);
    if (!n.IsScalar() || n.Tag() == "!") {
      return bad(n, path,
                 fmt::format("'{}' is not a number: {}",
                             n.IsScalar() ? n.Scalar() : "(not a scalar)", allowed));
    }
    const std::string& s = n.Scalar();
    std::size_t i = (s.starts_with('-') || s.starts_with('+')) ? 1 : 0;
    if (i == s.size() || s.size() - i > 18 ||
        !std::all_of(s.begin() + static_cast<std::ptrdiff_t>(i), s.end(),
                     [](char c) { return c >= '0' && c <= '9'; })) {
      return bad(n, path, fmt::format("'{}' is not an integer: {}", s, allowed));
    }
    const std::int64_t v = std::stoll(s);
    if (v < min || v > max) return bad(n, path, fmt::format("{} is out of range: {}", v, allowed));
    return v;
  }

  Result<std::optional<std::int64_t>> integer(const Map& m, std::string_view key, std::int64_t min,
                                              std::int64_t max) const {
    const YAML::Node n = m.get(key);
    if (!n.IsDefined()) return std::optional<std::int64_t>{};
    FM_TRY(auto v, integer_of(n, m.at(key), min, max));
    return std::optional<std::int64_t>{v};
  }

  Result<std::optional<std::vector<YAML::Node>>> sequence(const Map& m,
                                                          std::string_view key) const {
    const YAML::Node n = m.get(key);
    if (!n.IsDefined()) return std::optional<std::vector<YAML::Node>>{};
    if (n.IsNull()) return std::optional<std::vector<YAML::Node>>{std::vector<YAML::Node>{}};
    if (!n.IsSequence()) return bad(n, m.at(key), "expected a list ([a, b] or - lines)");
    std::vector<YAML::Node> items;
    for (const auto& item : n) items.push_back(item);
    return std::optional<std::vector<YAML::Node>>{std::move(items)};
  }

  Result<std::optional<std::vector<std::string>>> strings(const Map& m, std::string_view key,
                                                          std::string_view what) const {
    FM_TRY(auto items, sequence(m, key));
    if (!items) return std::optional<std::vector<std::string>>{};
    std::vector<std::string> out;
    for (std::size_t i = 0; i < items->size(); ++i) {
      const YAML::Node& n = (*items)[i];
      if (!n.IsScalar() || n.Scalar().empty()) {
        return bad(n, fmt::format("{}[{}]", m.at(key), i), fmt::format("expected {}", what));
      }
      out.push_back(n.Scalar());
    }
    return std::optional<std::vector<std::string>>{std::move(out)};
  }

  Result<IpAddress> address(const Map& m, std::string_view key, std::string_view fallback) const {
    FM_TRY(auto text, string(m, key));
    const std::string t = text.value_or(std::string(fallback));
    auto a = IpAddress::parse(t);
    if (!a || t.find('%') != std::string::npos) {
      return bad(m, key,
                 fmt::format("'{}' is not an IP address (flowd-go binds an address, not "
                             "a host name)",
                             t));
    }
    return *a;
  }

  Result<std::uint16_t> port(const Map& m, std::string_view key, std::int64_t fallback) const {
    FM_TRY(auto p, integer(m, key, 0, 65535));
    const std::int64_t v = p.value_or(fallback);
    if (v == 0) {
      return bad(m, key,
                 "0: flowd-go would take a port the kernel chooses, which nobody can "
                 "reach; give a port 1..65535");
    }
    return static_cast<std::uint16_t>(v);
  }

  // ---- the document ------------------------------------------------------------------------
  Result<void> read(const Map& top) {
    if (top.has("pidPath")) {
      FM_TRY(auto pid, string(top, "pidPath"));
      if (!pid.value_or("").empty()) {
        warn(top, "pidPath",
             "not written: flowmarkd keeps no PID file; systemd knows its PID (Type=notify; "
             "`systemctl show -p MainPID flowmarkd`)");
      }
    }
    if (top.has("workDir")) {
      FM_TRY(auto dir, string(top, "workDir"));
      (void)dir;
      warn(top, "workDir",
           "not used: flowd-go keeps nothing there and flowmarkd needs no working directory");
    }
    FM_TRY(auto plugins, section(top, "plugins"));
    FM_TRY(auto backends, section(top, "backends"));
    FM_TRY(auto enrichers, section(top, "enrichers"));
    if (plugins) {
      FM_TRY_VOID(keys(*plugins, {"namedPipe", "firefly", "api", "perfsonar", "iperf3"}));
    }
    if (backends) FM_TRY_VOID(keys(*backends, {"marker", "firefly", "prometheus"}));
    // Enrichers first: the firefly and prometheus backends use their period.
    if (enrichers) FM_TRY_VOID(read_enrichers(*enrichers));
    if (plugins) {
      FM_TRY(auto np, section(*plugins, "namedPipe"));
      if (np) FM_TRY_VOID(read_named_pipe(*np));
      FM_TRY(auto ff, section(*plugins, "firefly"));
      if (ff) FM_TRY_VOID(read_firefly_plugin(*ff));
      FM_TRY(auto api, section(*plugins, "api"));
      if (api) FM_TRY_VOID(read_api(*api));
      FM_TRY(auto ps, section(*plugins, "perfsonar"));
      if (ps) FM_TRY_VOID(read_perfsonar(*ps));
      FM_TRY(auto ip, section(*plugins, "iperf3"));
      if (ip) FM_TRY_VOID(read_iperf3(*ip));
    }
    if (backends) {
      FM_TRY(auto ff, section(*backends, "firefly"));
      if (ff) FM_TRY_VOID(read_firefly_backend(*ff));
      FM_TRY(auto marker, section(*backends, "marker"));
      if (marker) FM_TRY_VOID(read_marker(*marker));
      FM_TRY(auto prom, section(*backends, "prometheus"));
      if (prom) FM_TRY_VOID(read_prometheus(*prom));
    }
    if (perfsonar_ && !marker_) {
      return bad(perfsonar_section_, "plugins.perfsonar",
                 "the perfsonar plugin only feeds the marker backend's matchAll mode (one "
                 "experiment and activity on every IPv6 packet), and backends.marker is not "
                 "configured: add `marker: {}` under backends");
    }
    if (marker_ && marker_match_all_ && !perfsonar_) {
      return bad(marker_section_, "matchAll",
                 "true without plugins.perfsonar: flowd-go then marks every IPv6 packet with "
                 "the mark of a flow event for [::]:0 -> [::]:0, which only the perfsonar plugin "
                 "sends, so in effect nothing; to mark everything, add plugins.perfsonar with "
                 "experimentId and activityId (or write a [[backend.NAME.rule]] in TOML)");
    }
    if (!plugins_used() && !backend_used()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: no plugin and no backend: flowd-go would run and do nothing; "
                              "enable a plugin and a backend",
                              file_));
    }
    if (enrichers && !tcp_stats_used_) {
      warn(top, "enrichers",
           "nothing uses them: only backends.firefly with enrich: true and backends.prometheus "
           "do (flowmarkd reads the TCP statistics when one of those asks)");
    }
    return {};
  }

  bool plugins_used() const {
    return named_pipe_ || firefly_source_ || api_ || perfsonar_ || iperf3_;
  }
  bool backend_used() const { return firefly_backend_ || marker_ || prometheus_; }

  // ---- enrichers ---------------------------------------------------------------------------
  Result<void> read_enrichers(const Map& e) {
    FM_TRY_VOID(keys(e, {"period", "netlink", "skops"}));
    FM_TRY(auto period, integer(e, "period", 1, 86400000));
    period_ms_ = period.value_or(1000);
    FM_TRY(auto netlink, section(e, "netlink"));
    if (netlink) {
      FM_TRY_VOID(keys(*netlink, {"protocol", "ext", "state"}));
      FM_TRY(auto proto, integer(*netlink, "protocol", 0, 255));
      if (proto && *proto != 6) {
        return bad(*netlink, "protocol",
                   fmt::format("{}: flowmarkd's TCP statistics are TCP's (6, IPPROTO_TCP); "
                               "it has no per-socket statistics of other protocols",
                               *proto));
      }
      FM_TRY(auto ext, integer(*netlink, "ext", 0, 255));
      if (ext && *ext != 255) {
        warn(*netlink, "ext",
             "not used: flowmarkd asks sock_diag for what its fireflies and metrics carry "
             "(INET_DIAG_INFO, congestion control), whatever other extensions are asked");
      }
      FM_TRY(auto state, integer(*netlink, "state", 0, 0xFFFFFFFF));
      if (state && *state != 3071) {
        warn(*netlink, "state",
             "not used: flowmarkd reads the statistics of the flows its sources report, in "
             "whatever TCP state they are");
      }
      enricher_ = true;
      enricher_names_.push_back("netlink");
    }
    FM_TRY(auto skops, section(e, "skops"));
    if (skops) {
      FM_TRY_VOID(keys(*skops, {"cgroupPath", "programPath", "debugMode", "strategy"}));
      FM_TRY(auto cgroup, string(*skops, "cgroupPath"));
      if (cgroup && *cgroup != "/sys/fs/cgroup" && !cgroup->empty()) {
        warn(*skops, "cgroupPath",
             "not used: flowmarkd reads the TCP statistics of the flows its sources report "
             "through netlink sock_diag, whatever their cgroup; no sock_ops program is loaded");
      }
      FM_TRY(auto program, string(*skops, "programPath"));
      if (program && !program->empty()) {
        return bad(*skops, "programPath",
                   fmt::format("'{}': flowmarkd loads no flowd-go eBPF program; it reads the "
                               "same TCP statistics through netlink sock_diag: remove the key",
                               *program));
      }
      FM_TRY(auto debug, boolean(*skops, "debugMode"));
      if (debug.value_or(false)) {
        warn(*skops, "debugMode",
             "not used: no sock_ops program is loaded (flowmarkd reads the statistics through "
             "netlink sock_diag)");
      }
      FM_TRY(auto strategy, string(*skops, "strategy"));
      const std::string s = lower(strategy.value_or("poll"));
      if (s == "transition") {
        return bad(*skops, "strategy",
                   "'transition' (statistics only when a connection changes state) has no "
                   "equivalent: flowmarkd's ongoing fireflies and metrics are periodic, as "
                   "with 'poll'");
      }
      if (s != "poll") {
        return bad(*skops, "strategy",
                   fmt::format("'{}' is not one of: poll, transition", strategy.value_or("")));
      }
      enricher_ = true;
      enricher_names_.push_back("skops");
    }
    if (netlink && skops) {
      warn(e, "skops",
           "with netlink too, flowd-go sends two ongoing fireflies a period (one per enricher); "
           "flowmarkd sends one, with the statistics read through netlink");
    }
    return {};
  }

  // ---- plugins -----------------------------------------------------------------------------
  Result<void> read_named_pipe(const Map& m) {
    FM_TRY_VOID(keys(m, {"maxReaders", "buffSize", "pipePath"}));
    FM_TRY(auto readers, integer(m, "maxReaders", 1, 1 << 20));
    if (readers && *readers != 5) {
      warn(m, "maxReaders",
           "not used: flowmarkd reads the FIFO itself, stopping while its backends are busy, "
           "so a writer is slowed by the kernel's pipe rather than an event lost");
    }
    FM_TRY(auto buff, integer(m, "buffSize", 1, 1 << 20));
    if (buff && *buff > 4096) max_line_ = *buff;
    FM_TRY(auto path, string(m, "pipePath"));
    pipe_path_ = path.value_or("/var/run/flowd-go/np");
    if (pipe_path_.empty()) return bad(m, "pipePath", "empty: give the FIFO's path");
    named_pipe_ = true;
    return {};
  }

  Result<void> read_firefly_plugin(const Map& m) {
    FM_TRY_VOID(keys(m, {"bindAddress", "bindPort", "bufferSize", "deadline", "hasSyslogHeader"}));
    FM_TRY(listen_bind_, address(m, "bindAddress", "127.0.0.1"));
    FM_TRY(listen_port_, port(m, "bindPort", 10514));
    FM_TRY(auto buffer, integer(m, "bufferSize", 0, 0xFFFFFFFF));
    if (buffer && *buffer < 2048) {
      return bad(m, "bufferSize",
                 fmt::format("{}: below 2048, which flowd-go refuses too", *buffer));
    }
    FM_TRY(auto deadline, integer(m, "deadline", 0, 0xFFFFFFFF));
    if (deadline && *deadline != 0) {
      warn(m, "deadline",
           "not used: flowmarkd's listener waits for datagrams without a deadline, as flowd-go "
           "with 0");
    }
    FM_TRY(auto syslog, boolean(m, "hasSyslogHeader"));
    (void)syslog;  // the decoder takes fireflies with and without the header
    firefly_source_ = true;
    return {};
  }

  Result<void> read_api(const Map& m) {
    FM_TRY_VOID(keys(m, {"bindAddress", "bindPort"}));
    FM_TRY(auto a, address(m, "bindAddress", "127.0.0.1"));
    FM_TRY(auto p, port(m, "bindPort", 7777));
    api_listen_ = host_port(a, p);
    api_ = true;
    return {};
  }

  // Both spellings: the code's experimentId and the sample conf.yaml's experimentID.
  Result<std::int64_t> id_either(const Map& m, std::string_view a, std::string_view b,
                                 std::int64_t min, std::int64_t max, std::string_view what) {
    if (m.has(a) && m.has(b)) {
      return bad(m, b, fmt::format("given together with {}: write one of them", a));
    }
    const std::string_view key = m.has(b) ? b : a;
    FM_TRY(auto v, integer(m, key, 0, max));
    const std::int64_t id = v.value_or(0);
    if (id < min) {
      return bad(m, key,
                 fmt::format("{} (flowd-go's default): an {} id {}..{} is needed, as {} 0 "
                             "is no mark",
                             id, what, min, max, what));
    }
    return id;
  }

  Result<void> read_perfsonar(const Map& m) {
    FM_TRY_VOID(keys(m, {"experimentId", "activityId", "experimentID", "activityID"}));
    FM_TRY(ps_experiment_, id_either(m, "experimentId", "experimentID", 1, 511, "experiment"));
    FM_TRY(ps_activity_, id_either(m, "activityId", "activityID", 0, 63, "activity"));
    perfsonar_ = true;
    perfsonar_section_ = m.node;
    return {};
  }

  Result<void> read_iperf3(const Map& m) {
    FM_TRY_VOID(keys(m, {"minSourcePort", "maxSourcePort", "minDestinationPort",
                         "maxDestinationPort", "cgroupPath", "programPath", "debugMode",
                         "randomIDs", "activityIDs", "experimentIDs"}));
    std::int64_t b[4];
    const char* names[4] = {"minSourcePort", "maxSourcePort", "minDestinationPort",
                            "maxDestinationPort"};
    for (int i = 0; i < 4; ++i) {
      FM_TRY(auto v, integer(m, names[i], 0, 65535));
      b[i] = v.value_or(0);
    }
    const bool src = b[0] != 0 || b[1] != 0, dst = b[2] != 0 || b[3] != 0;
    if (src && dst) {
      return bad(m, "minDestinationPort",
                 "a source and a destination port range together cannot be expressed: "
                 "flowmarkd's port filter takes a connection when either end's port is in the "
                 "range; give one of the two ranges");
    }
    const int lo = src ? 0 : 2;
    std::int64_t first = b[lo] == 0 ? 1 : b[lo];
    std::int64_t last = b[lo + 1] == 0 ? 65535 : b[lo + 1];
    if (first > last) {
      return bad(
          m, names[lo],
          fmt::format("{} is above {} {}: the range is empty", b[lo], names[lo + 1], b[lo + 1]));
    }
    iperf3_ports_ = first == last ? fmt::format("{}", first) : fmt::format("{}-{}", first, last);
    if (src || dst) {
      warn(m, names[lo],
           fmt::format("flowmarkd takes a connection when the port of either end is in {}; "
                       "flowd-go only when its {} port is",
                       iperf3_ports_, src ? "local (source)" : "remote (destination)"));
    }
    FM_TRY(auto cgroup, string(m, "cgroupPath"));
    if (cgroup && !cgroup->empty() && *cgroup != "/sys/fs/cgroup") {
      return bad(m, "cgroupPath",
                 fmt::format("'{}': the iperf3 plugin's translation polls every socket of the "
                             "host (the sockets source); a cgroup filter is the kernel-events "
                             "source's `cgroup` key, which has no experiment/activity lists: "
                             "write a TOML config",
                             *cgroup));
    }
    FM_TRY(auto program, string(m, "programPath"));
    if (program && !program->empty()) {
      return bad(
          m, "programPath",
          fmt::format("'{}': flowmarkd loads no flowd-go eBPF program: remove the key", *program));
    }
    FM_TRY(auto debug, boolean(m, "debugMode"));
    if (debug.value_or(false)) {
      warn(m, "debugMode", "not used: no flowd-go eBPF program is loaded");
    }
    FM_TRY(auto random, boolean(m, "randomIDs"));
    if (!random.value_or(false)) {
      warn(m, m.has("randomIDs") ? "randomIDs" : "experimentIDs",
           "flowd-go takes the ids in turn; flowmarkd draws each connection's pair at random "
           "from the lists (the same mix over many connections)");
    }
    std::vector<std::int64_t> ids[2];
    const char* lists[2] = {"experimentIDs", "activityIDs"};
    const std::int64_t mins[2] = {1, 0}, maxs[2] = {1023, 63};
    for (int l = 0; l < 2; ++l) {
      FM_TRY(auto items, sequence(m, lists[l]));
      if (!items) {
        ids[l] = {0, 1, 2};  // flowd-go's default
        if (l == 0) {
          return bad(m, "experimentIDs",
                     "absent: flowd-go's default [0, 1, 2] starts with experiment 0, which is "
                     "no mark; give the experiment ids (1..1023)");
        }
        continue;
      }
      for (std::size_t i = 0; i < items->size(); ++i) {
        FM_TRY(auto v,
               integer_of((*items)[i], fmt::format("{}[{}]", m.at(lists[l]), i), 0, maxs[l]));
        if (v < mins[l]) {
          return bad((*items)[i], fmt::format("{}[{}]", m.at(lists[l]), i),
                     "experiment 0 is no mark: give ids 1..1023");
        }
        ids[l].push_back(v);
      }
    }
    if (ids[0].size() != ids[1].size() || ids[0].empty()) {
      return bad(m, "activityIDs",
                 fmt::format("{} experiment ids and {} activity ids: flowd-go requires lists of "
                             "the same, non-zero length (pairs taken by index)",
                             ids[0].size(), ids[1].size()));
    }
    for (std::size_t i = 0; i < ids[0].size(); ++i) {
      iperf3_choices_.push_back(fmt::format("{}:{}", ids[0][i], ids[1][i]));
    }
    iperf3_ = true;
    return {};
  }

  // ---- backends ----------------------------------------------------------------------------
  Result<void> read_firefly_backend(const Map& m) {
    FM_TRY_VOID(keys(m, {"destinationPort", "prependSyslog", "sendToCollector", "collectorAddress",
                         "collectorPort", "enrich", "enrichmentMode", "stun"}));
    FM_TRY(ff_port_, port(m, "destinationPort", 10514));
    FM_TRY(auto syslog, boolean(m, "prependSyslog"));
    ff_syslog_ = syslog.value_or(true);
    FM_TRY(auto to_collector, boolean(m, "sendToCollector"));
    FM_TRY(auto caddr, string(m, "collectorAddress"));
    FM_TRY(auto cport, integer(m, "collectorPort", 0, 65535));
    if (to_collector.value_or(false)) {
      const std::string host = caddr.value_or("127.0.0.1");
      if (host.empty()) return bad(m, "collectorAddress", "empty: give the collector's address");
      if (cport.value_or(10514) == 0) {
        return bad(m, "collectorPort", "0: give the collector's port 1..65535");
      }
      const auto p = static_cast<std::uint16_t>(cport.value_or(10514));
      auto a = IpAddress::parse(host);
      if (a) {
        ff_collectors_.push_back(host_port(*a, p));
      } else if (host.find(':') != std::string::npos || host.find('/') != std::string::npos) {
        return bad(m, "collectorAddress",
                   fmt::format("'{}' is neither an IP address nor a host name", host));
      } else {
        ff_collectors_.push_back(fmt::format("{}:{}", host, p));
      }
    } else if (caddr || cport) {
      warn(m, caddr ? "collectorAddress" : "collectorPort",
           "not used, as in flowd-go: sendToCollector is not true");
    }
    FM_TRY(auto enrich, boolean(m, "enrich"));
    FM_TRY(auto mode, string(m, "enrichmentMode"));
    const std::string md = mode.value_or("lean");
    if (md == "lean") {
      ff_shape_ = "lean";
    } else if (md == "compatible") {
      ff_shape_ = "compatible";
    } else if (md.empty()) {
      ff_shape_ = "flowmark";  // flowd-go's "everything"; ours carries the most
    } else {
      return bad(
          m, "enrichmentMode",
          fmt::format("'{}' is not one of: \"lean\", \"compatible\", \"\" (everything)", md));
    }
    if (enrich.value_or(false)) {
      if (enricher_) {
        ff_ongoing_ = true;
        tcp_stats_used_ = true;
      } else {
        warn(m, "enrich",
             "no enricher is configured (enrichers.netlink or enrichers.skops), so flowd-go "
             "sends no periodic firefly; neither does flowmarkd (ongoing_interval = 0)");
      }
    }
    FM_TRY(auto stun, section(m, "stun"));
    if (stun) FM_TRY_VOID(read_stun(*stun));
    firefly_backend_ = true;
    return {};
  }

  Result<void> read_stun(const Map& m) {
    FM_TRY_VOID(keys(m, {"manualMapping", "stunServers"}));
    const YAML::Node mapping = m.get("manualMapping");
    if (mapping.IsDefined() && !mapping.IsNull()) {
      if (!mapping.IsMap()) {
        return bad(mapping, m.at("manualMapping"),
                   "expected a mapping of addresses (\"10.0.0.1\": 192.0.2.1)");
      }
      std::set<std::string> seen;
      for (auto it = mapping.begin(); it != mapping.end(); ++it) {
        const std::string path = fmt::format("{}.{}", m.at("manualMapping"),
                                             it->first.IsScalar() ? it->first.Scalar() : "?");
        if (!it->first.IsScalar() || !it->second.IsScalar()) {
          return bad(it->first, path, "expected address: address");
        }
        auto from = IpAddress::parse(it->first.Scalar());
        if (!from) {
          return bad(it->first, path, fmt::format("'{}' is not an IP address", it->first.Scalar()));
        }
        auto to = IpAddress::parse(it->second.Scalar());
        if (!to) {
          return bad(it->second, path,
                     fmt::format("'{}' is not an IP address", it->second.Scalar()));
        }
        if (from->family() != to->family()) {
          return bad(it->second, path,
                     fmt::format("'{}' and '{}' are of different families: a source address is "
                                 "rewritten within its family",
                                 it->first.Scalar(), it->second.Scalar()));
        }
        if (!seen.insert(from->to_string()).second) return bad(it->first, path, "given twice");
        stun_map_.emplace_back(from->to_string(), to->to_string());
      }
    }
    FM_TRY(auto servers, strings(m, "stunServers", "a STUN server host:port"));
    if (servers) {
      for (std::string s : *servers) {
        if (s.starts_with("stun:")) s.erase(0, 5);  // a STUN URI (RFC 7064)
        stun_servers_.push_back(std::move(s));
      }
    } else {
      stun_servers_ = {"stun.l.google.com:3478", "stun1.l.google.com:3478",
                       "stun2.l.google.com:3478", "stun3.l.google.com:3478",
                       "stun4.l.google.com:3478"};  // flowd-go's default list
    }
    stun_ = true;
    return {};
  }

  Result<void> read_marker(const Map& m) {
    FM_TRY_VOID(keys(m, {"targetInterfaces", "discoverInterfaces", "removeQdisc", "programPath",
                         "markingStrategy", "matchAll", "debugMode"}));
    FM_TRY(auto ifaces, strings(m, "targetInterfaces", "an interface name"));
    marker_interfaces_ = ifaces.value_or(std::vector<std::string>{"lo"});
    FM_TRY(auto discover, boolean(m, "discoverInterfaces"));
    marker_auto_ = discover.value_or(false);
    if (marker_auto_ && ifaces) {
      warn(m, "targetInterfaces",
           "not used, as in flowd-go: discoverInterfaces is true (interfaces = \"auto\")");
    }
    if (!marker_auto_ && marker_interfaces_.empty()) {
      return bad(m, "targetInterfaces",
                 "empty: name the interfaces to mark on, or set discoverInterfaces: true");
    }
    FM_TRY(auto remove, boolean(m, "removeQdisc"));
    if (!remove.value_or(true)) {
      warn(m, "removeQdisc",
           "not followed: at exit flowmarkd removes the hooks (and a clsact qdisc) it added "
           "and leaves everything it found; `flowmark bpf clean` removes leftovers");
    }
    FM_TRY(auto program, string(m, "programPath"));
    if (program && !program->empty()) {
      return bad(m, "programPath",
                 fmt::format("'{}': flowmarkd loads its own eBPF program (its maps and section "
                             "names differ from flowd-go's): remove the key",
                             *program));
    }
    FM_TRY(auto strategy, string(m, "markingStrategy"));
    const std::string s = lower(strategy.value_or("label"));
    static constexpr std::string_view kStrategies[] = {"label", "hopByHop", "destination",
                                                       "hopByHopDestination"};
    marker_strategy_.clear();
    for (std::string_view k : kStrategies) {
      if (lower(k) == s) marker_strategy_ = k;  // flowd-go compares without case
    }
    if (marker_strategy_.empty()) {
      return bad(m, "markingStrategy",
                 fmt::format("'{}' is not one of: label, hopByHop, destination, "
                             "hopByHopDestination",
                             strategy.value_or("")));
    }
    FM_TRY(auto match_all, boolean(m, "matchAll"));
    marker_match_all_ = match_all.value_or(false);
    FM_TRY(auto debug, boolean(m, "debugMode"));
    if (debug.value_or(false)) {
      warn(m, "debugMode",
           "not used: flowmarkd's eBPF program has no debug build; `flowmark bpf status` shows "
           "its counters");
    }
    marker_ = true;
    marker_section_ = m;
    return {};
  }

  Result<void> read_prometheus(const Map& m) {
    FM_TRY_VOID(keys(m, {"log", "bindAddress", "netlinkPort", "skopsPort"}));
    FM_TRY(auto log, boolean(m, "log"));
    if (!log.value_or(true)) {
      warn(m, "log",
           "flowmarkd's prometheus backend logs only its errors, at the service's log level");
    }
    FM_TRY(auto a, address(m, "bindAddress", "127.0.0.1"));
    FM_TRY(auto netlink_port, integer(m, "netlinkPort", 0, 65535));
    FM_TRY(auto skops_port, integer(m, "skopsPort", 0, 65535));
    const std::int64_t np = netlink_port.value_or(8080), sp = skops_port.value_or(8081);
    if (np == 0 && sp == 0) {
      return bad(m, "netlinkPort",
                 "0, and skopsPort 0: nothing would be exported; give a port, or remove the "
                 "prometheus backend");
    }
    prom_listen_ = host_port(a, static_cast<std::uint16_t>(np != 0 ? np : sp));
    if (np != 0 && sp != 0) {
      warn(m, "skopsPort",
           fmt::format("not opened: flowmarkd serves every metric on one endpoint, {} (the "
                       "per-flow TCP statistics are read through netlink)",
                       prom_listen_));
    } else if (np == 0) {
      warn(m, "netlinkPort",
           fmt::format("0: flowmarkd serves every metric on one endpoint, skopsPort's ({})",
                       prom_listen_));
    }
    if (enricher_) tcp_stats_used_ = true;
    prometheus_ = true;
    return {};
  }

  // ---- the TOML document -------------------------------------------------------------------
  std::string emit() const {
    std::string name(file_);  // in a comment: no line breaks or control bytes
    std::replace_if(
        name.begin(), name.end(),
        [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7F; }, '?');
    std::vector<std::string> plugins, backends;
    if (named_pipe_) plugins.push_back("namedPipe");
    if (firefly_source_) plugins.push_back("firefly");
    if (api_) plugins.push_back("api");
    if (perfsonar_) plugins.push_back("perfsonar");
    if (iperf3_) plugins.push_back("iperf3");
    if (firefly_backend_) backends.push_back("firefly");
    if (marker_) backends.push_back("marker");
    if (prometheus_) backends.push_back("prometheus");
    std::string t = fmt::format(
        "# flowmarkd configuration translated from flowd-go's {}\n"
        "# (plugins: {}; backends: {}; enrichers: {}).\n\n",
        name, plugins.empty() ? "none" : join(plugins), backends.empty() ? "none" : join(backends),
        enricher_names_.empty() ? "none" : join(enricher_names_));
    t += "[service]\n";
    t += "registry = \"builtin\"  # flowd-go takes experiment and activity ids as numbers\n";

    if (stun_) {
      t += "\n[public_address]  # backends.firefly.stun\n";
      t += "discover = true\n";
      t += fmt::format("stun_servers = {}\n", toml_strings(stun_servers_));
      if (!stun_map_.empty()) {
        t += "\n[public_address.map]  # backends.firefly.stun.manualMapping\n";
        for (const auto& [from, to] : stun_map_) {
          t += fmt::format("{} = {}\n", toml_string(from), toml_string(to));
        }
      }
    }

    if (named_pipe_) {
      t += "\n[source.namedPipe]\n";
      t += "type = \"named-pipe\"\n";
      t += fmt::format("path = {}\n", toml_string(pipe_path_));
      if (max_line_) t += fmt::format("max_line = {}  # buffSize\n", *max_line_);
    }
    if (firefly_source_) {
      t += "\n[source.firefly]\n";
      t += "type = \"firefly\"\n";
      t += fmt::format("bind = {}\n", toml_string(listen_bind_.to_string()));
      t += fmt::format("port = {}\n", listen_port_);
    }
    if (api_) {
      t += "\n[source.api]\n";
      t += "type = \"api\"\n";
      t += fmt::format("listen = {}\n", toml_string(api_listen_));
    }
    if (iperf3_) {
      t += "\n[source.iperf3]\n";
      t += "type = \"sockets\"  # every TCP connection of the host, polled over netlink\n";
      t += "preset = \"iperf\"\n";
      t += "protocols = [\"tcp\"]\n";
      t += fmt::format("ports = [{}]\n", toml_string(iperf3_ports_));
      t += fmt::format("choices = {}\n", toml_strings(iperf3_choices_));
      t += "skip_private = false\n";
      t += "period = 1.0\n";
    }

    if (firefly_backend_) {
      t += "\n[backend.firefly]\n";
      t += "type = \"firefly\"\n";
      t += "to_destination = true\n";
      t += fmt::format("port = {}\n", ff_port_);
      t += fmt::format("collectors = {}\n", toml_strings(ff_collectors_));
      t += fmt::format("syslog_header = {}\n", ff_syslog_ ? "true" : "false");
      if (ff_ongoing_) {
        t += fmt::format("ongoing_interval = {}  # enrichers.period, {} ms\n", seconds(),
                         period_ms_);
        t += fmt::format("ongoing_shape = {}\n", toml_string(ff_shape_));
      } else {
        t += "ongoing_interval = 0\n";
      }
    }
    if (marker_) {
      t += "\n[backend.marker]\n";
      t += "type = \"flowlabel\"\n";
      if (marker_auto_) {
        t += "interfaces = \"auto\"  # discoverInterfaces\n";
      } else {
        t += fmt::format("interfaces = {}\n", toml_strings(marker_interfaces_));
      }
      // "label" is what the flowlabel backend does by default: written only when not.
      if (marker_strategy_ != "label") {
        t += fmt::format("strategy = {}\n", toml_string(marker_strategy_));
      }
      if (perfsonar_) {
        t += "\n[[backend.marker.rule]]  # plugins.perfsonar: every IPv6 packet (matchAll)\n";
        t += "destination = \"::/0\"\n";
        t += fmt::format("experiment = {}\n", ps_experiment_);
        t += fmt::format("activity = {}\n", ps_activity_);
      }
    }
    if (prometheus_) {
      t += "\n[backend.prometheus]\n";
      t += "type = \"prometheus\"\n";
      t += fmt::format("listen = {}\n", toml_string(prom_listen_));
      if (enricher_) {
        t += "flow_metrics = true\n";
        t += fmt::format("poll_interval = {}  # enrichers.period, {} ms\n",
                         std::max<std::int64_t>(1, (period_ms_ + 500) / 1000), period_ms_);
      } else {
        t += "flow_metrics = false  # no enricher: flowd-go exports no flow's statistics\n";
      }
    }
    return t;
  }

  // enrichers.period in seconds, as TOML: 1.0, 0.25.
  std::string seconds() const {
    std::string s = fmt::format("{}", static_cast<double>(period_ms_) / 1000.0);
    if (s.find('.') == std::string::npos && s.find('e') == std::string::npos) s += ".0";
    return s;
  }

  std::string_view text_;
  std::string_view file_;
  std::vector<std::string> warnings_;

  std::int64_t period_ms_ = 1000;
  bool enricher_ = false, tcp_stats_used_ = false;
  std::vector<std::string> enricher_names_;

  bool named_pipe_ = false;
  std::string pipe_path_;
  std::optional<std::int64_t> max_line_;

  bool firefly_source_ = false;
  IpAddress listen_bind_;
  std::uint16_t listen_port_ = 10514;

  bool api_ = false;
  std::string api_listen_;

  bool perfsonar_ = false;
  YAML::Node perfsonar_section_;
  std::int64_t ps_experiment_ = 0, ps_activity_ = 0;

  bool iperf3_ = false;
  std::string iperf3_ports_;
  std::vector<std::string> iperf3_choices_;

  bool firefly_backend_ = false;
  std::uint16_t ff_port_ = 10514;
  bool ff_syslog_ = true;
  std::vector<std::string> ff_collectors_;
  bool ff_ongoing_ = false;
  std::string ff_shape_;

  bool stun_ = false;
  std::vector<std::string> stun_servers_;
  std::vector<std::pair<std::string, std::string>> stun_map_;

  bool marker_ = false;
  Map marker_section_;
  std::vector<std::string> marker_interfaces_;
  bool marker_auto_ = false;
  std::string marker_strategy_;
  bool marker_match_all_ = false;

  bool prometheus_ = false;
  std::string prom_listen_;
};

}  // namespace

bool looks_like_flowd_go_config(std::string_view path, std::string_view text) noexcept {
  if (path.ends_with(".yaml") || path.ends_with(".yml")) return true;
  if (path.ends_with(".toml") || path.ends_with(".cfg")) return false;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    std::size_t i = 0;
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    line.remove_prefix(i);
    if (line.empty() || line.starts_with('#')) continue;
    if (line == "---") continue;
    for (std::string_view key : {"pidPath", "workDir", "plugins", "backends", "enrichers"}) {
      if (line.starts_with(key)) {
        std::string_view rest = line.substr(key.size());
        while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t'))
          rest.remove_prefix(1);
        if (rest.starts_with(':')) return true;
      }
    }
    return false;
  }
  return false;
}

Result<FlowdGoTranslation> translate_flowd_go_config(std::string_view text,
                                                     std::string_view file_name) {
  return Translator(text, file_name).run();
}

}  // namespace flowmark::daemon
