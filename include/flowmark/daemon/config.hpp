// flowmark::daemon — the service configuration: a TOML file (default
// /etc/flowmark/flowmark.toml), or flowd's own KEY='value' file, which is translated into
// the same TOML document first, so both behave the same way. See packaging/flowmark.toml for
// every key.
//
//   [service]           registry, registry_verify_tls, hostname, flow_timeout, queue_size,
//                       max_live_flows, drain_timeout, sites_file, log_level
//   [[site]]            name, networks: the site map of the collector backends
//   [public_address]    discover, stun_servers, ipv4, ipv6, [public_address.map]
//   [[rule]]            classification: first match wins
//   [source.NAME]       type = "named-pipe" | "firefly" | "sockets" | "observer" |
//                       "kernel-events"
//   [backend.NAME]      type = "firefly" | "prometheus" | "records" | "flowlabel"
// (the source and backend types are those registered in src/daemon/builtin.cpp;
// "kernel-events" and "flowlabel" only in a build with BPF.)
//
//   FM_TRY(auto doc, ConfigDocument::load("/etc/flowmark/flowmark.toml"));
//   FM_TRY(auto cfg, ServiceConfig::from(doc));
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmark/collector/site_map.hpp"
#include "flowmark/core/address.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/daemon/section.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon {

inline constexpr std::string_view kDefaultConfigPath = "/etc/flowmark/flowmark.toml";

// A parsed configuration file (TOML, or flowd's format translated to TOML).
class ConfigDocument {
 public:
  // Reads and parses `path`; the format is detected from the content (and a .cfg name).
  static Result<ConfigDocument> load(const std::string& path);
  // Parses TOML text; `name` appears in errors ("flowmark.toml:3:7: ...").
  static Result<ConfigDocument> parse_toml(std::string_view text, std::string name);

  ConfigDocument(ConfigDocument&&) noexcept;
  ConfigDocument& operator=(ConfigDocument&&) noexcept;
  ~ConfigDocument();

  const std::string& name() const noexcept { return name_; }
  bool from_flowd() const noexcept { return from_flowd_; }
  // The TOML text the document was built from (the translation for a flowd file).
  const std::string& toml_text() const noexcept { return text_; }
  // Warnings from the translation of a flowd file (ignored keys and the like).
  const std::vector<std::string>& warnings() const noexcept { return warnings_; }

  const void* root() const noexcept;  // toml::table
  // A top-level table ("service") or a named one ("source", "pipe"); nullptr if absent.
  const void* table(std::string_view key) const noexcept;
  const void* table(std::string_view kind, std::string_view name) const noexcept;
  // True if the two tables are equal (to keep a running part across a reload).
  static bool same(const void* a, const void* b) noexcept;

 private:
  ConfigDocument();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string name_;
  std::string text_;
  bool from_flowd_ = false;
  std::vector<std::string> warnings_;
};

struct PortRange {
  std::uint16_t first = 0;
  std::uint16_t last = 0;
  // "5201" or "20000-20100" (1..65535, first ≤ last).
  static Result<PortRange> parse(std::string_view text);
  bool contains(std::uint16_t p) const noexcept { return p >= first && p <= last; }
  friend bool operator==(const PortRange&, const PortRange&) = default;
};
bool any_contains(std::span<const PortRange> ranges, std::uint16_t port) noexcept;

// A classification rule: every condition given must hold (an empty list holds always).
struct Rule {
  std::vector<Network> src, dst;
  std::vector<PortRange> src_ports, dst_ports;
  std::optional<scitags::Protocol> protocol;
  std::uint32_t experiment = 0;
  std::uint32_t activity = 0;
  bool matches(const scitags::FlowEvent& e) const noexcept;
};

struct PublicAddressConfig {
  bool discover = false;  // STUN when a flow's source is not a global address
  std::vector<std::string> stun_servers;
  std::optional<IpAddress> ipv4, ipv6;               // manual public addresses
  std::vector<std::pair<IpAddress, IpAddress>> map;  // private → public, checked first
};

struct PartSpec {
  std::string name;  // [source.NAME]
  std::string type;  // its type key (defaults to NAME)
  const void* table = nullptr;
};

struct ServiceConfig {
  std::string registry = "builtin";
  bool registry_verify_tls = true;
  std::string hostname;
  double flow_timeout = 86400;  // seconds; a live flow with no event for so long is ended
  std::size_t queue_size = 65536;
  // Live flows the pipeline keeps at most (0: no bound); past it the flow idle longest is
  // ended with reason evicted. ~170 bytes a flow: the default bounds the table near 170 MB.
  std::size_t max_live_flows = 1'000'000;
  // Seconds a backend gets to drain its queue when it stops (SIGTERM: the end events of every
  // live flow; a reload that removes it); what it still holds then is dropped, counted.
  double drain_timeout = 30;
  std::string sites_file;    // JSON site map, merged with the [[site]] tables
  collector::SiteMap sites;  // [[site]] tables + sites_file
  std::string log_level = "info";
  PublicAddressConfig public_address;
  std::vector<Rule> rules;
  std::vector<PartSpec> sources, backends;

  // Reads [service], [public_address] and [[rule]] (names resolved through `registry`);
  // lists the source and backend tables (their keys are read by their factories). Unknown
  // top-level keys and tables fail, naming them.
  static Result<ServiceConfig> from(const ConfigDocument& doc, const scitags::Registry& registry);
};

// Reads [service] registry from the document without checking the rest (the registry has
// to be loaded before rules can resolve names).
Result<std::pair<std::string, bool>> registry_source(const ConfigDocument& doc);

}  // namespace flowmark::daemon

namespace flowmark::daemon {

// Reads "experiment" and "activity" (ids or registry names) from a section; both absent →
// (0, 0), meaning "classify by the rules". One without the other is an error.
Result<std::pair<std::uint32_t, std::uint32_t>> read_classification(
    Section& s, const scitags::Registry& registry);
// A list of ports and ranges (integers or "20000-20100").
Result<std::vector<PortRange>> read_port_ranges(Section& s, std::string_view key);

}  // namespace flowmark::daemon
