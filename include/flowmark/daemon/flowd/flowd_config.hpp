// flowmark::daemon — flowd's own configuration files, read as they are.
//
// flowd (the Python reference service) executes its config file as Python, so sites write
// `KEY = value` lines with Python literals: quoted strings, numbers, True/False/None, and
// tuples or lists of those. This module reads that subset without a Python interpreter and
// translates the keys flowd knows into flowmarkd's TOML configuration, so a flowd site can
// switch by pointing flowmarkd at its existing /etc/flowd/flowd.cfg.
//
//   FM_TRY(auto cfg, parse_flowd_config(text, "flowd.cfg"));   // syntax only
//   FM_TRY(auto out, translate_flowd_config(cfg));               // meaning of every key
//   for (const auto& w : out.warnings) log_warning(w);
//   auto doc = toml::parse(out.toml);                            // the service's own schema
//
// The translation is TOML text rather than a toml++ table so this header does not pull in
// toml++, and so `flowmarkd --check -c flowd.cfg --print` can show users what their flowd
// file means in the native format.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

// Python's None.
struct FlowdNone {
  friend bool operator==(FlowdNone, FlowdNone) noexcept { return true; }
};

// One element of a tuple or list: flowd's files never nest containers.
using FlowdScalar = std::variant<FlowdNone, bool, std::int64_t, double, std::string>;

// `( ... )` or `[ ... ]`. A parenthesised single value without a trailing comma is not a
// tuple in Python (`('a')` is the string 'a'), and it is not one here either.
struct FlowdList {
  std::vector<FlowdScalar> items;
  bool is_tuple = false;
  friend bool operator==(const FlowdList&, const FlowdList&) = default;
};

using FlowdValue = std::variant<FlowdNone, bool, std::int64_t, double, std::string, FlowdList>;

// One assignment, where it was written (1-based line and column of the key).
struct FlowdEntry {
  std::string key;
  FlowdValue value;
  int line = 0;
  int column = 0;
};

// A key assigned more than once; Python keeps the last value. Lines in file order.
struct FlowdDuplicate {
  std::string key;
  std::vector<int> lines;
};

struct FlowdConfig {
  std::string file_name;            // as given to the parser, used in every message
  std::vector<FlowdEntry> entries;  // every assignment in file order, repeats included

  // The assignment that counts (the last one for the key), or nullptr.
  const FlowdEntry* find(std::string_view key) const noexcept;
  // Keys assigned more than once, in order of their first assignment.
  std::vector<FlowdDuplicate> duplicates() const;
};

// Parses the Python-literal subset flowd's files use: one `KEY = value` per line (spaces
// optional), `#` comments, blank lines, a trailing `\` joining the next line; values are
// strings ('…' or "…", r-prefixed raw strings, backslash escapes), integers (with `_`,
// 0x/0o/0b), floats, True/False/None, and tuples/lists of those, which may span lines.
// The text must be UTF-8, as Python requires of source files. Duplicate keys are kept (see
// FlowdConfig::duplicates), not reported. Errors are Errc::kMalformed with "<file>:<line>:<col>:
// <what was expected>".
Result<FlowdConfig> parse_flowd_config(std::string_view text, std::string_view file_name);

// Format detection for `-c FILE` when the extension does not decide it. A file is taken to
// be flowd's when its first statement (after blank lines and `#` comments) is an
// assignment to an UPPER_CASE name — `[A-Z][A-Z0-9_]*` then optional blanks then `=` not
// followed by another `=` — because a TOML document starts with a `[table]` header or a
// key whose name, in flowmarkd's schema, is lower case. An empty or comment-only file is
// not flowd's (the TOML reader gives the better message for it).
bool looks_like_flowd_config(std::string_view text) noexcept;

// The value as Python would print it (repr), for messages: 'a', 10514, True, ('x',).
std::string to_python(const FlowdValue& value);

struct TranslatedConfig {
  std::string toml;                   // a complete flowmarkd TOML document
  std::vector<std::string> warnings;  // "<file>:<line>: …" — keys ignored, repeats, etc.
};

// Maps every flowd key (PLUGIN, BACKEND, FLOW_MAP_API, IP_DISCOVERY_ENABLED, NETSTAT_*,
// NETLINK_*, FIREFLY_LISTENER_*, UDP_FIREFLY_*, NETWORK_INTERFACE, PROMETHEUS_*) to the
// service's schema: one [source.<plugin>] table, one [backend.<name>] table per backend,
// [service] and [public_address]. Unknown keys, unknown plugin or backend names, and values
// of the wrong type or range are Errc::kInvalidArgument errors naming the file, line, key,
// value and what is allowed. Values are accepted as liberally as flowd accepts them (a port
// may be 10514 or '10514'; a single string where flowd iterates a tuple).
// The document is complete: every key of the schema is written, with flowd's defaults where
// the file says nothing (BACKEND udp_firefly, FIFO /var/run/flowd, ports 10514 and 9000).
// experiment/activity are integers, or strings when flowd's file names them ('atlas'), which
// the service resolves through the registry as flowd does.
Result<TranslatedConfig> translate_flowd_config(const FlowdConfig& config);

}  // namespace flowmark::daemon
