// flowd config files (operator-written, but read by a root service and often copied between
// sites): parse_flowd_config and translate_flowd_config on arbitrary bytes must return a value
// or an error, never crash. What they accept must be consistent: every entry is found again,
// each value printed as Python parses back to itself, and a translation is always a TOML
// document with the service's sections.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "flowmark/daemon/flowd/flowd_config.hpp"

using namespace flowmark;
using namespace flowmark::daemon;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  (void)looks_like_flowd_config(text);
  auto cfg = parse_flowd_config(text, "fuzz.cfg");
  if (!cfg) {
    check(cfg.error().code() == Errc::kMalformed);
    check(cfg.error().message().starts_with("fuzz.cfg:"));
    return 0;
  }
  std::string printed;
  for (const FlowdEntry& e : cfg->entries) {
    check(e.line >= 1 && e.column >= 1 && !e.key.empty());
    const FlowdEntry* last = cfg->find(e.key);
    check(last != nullptr && last->key == e.key && last->line >= e.line);
    printed += e.key + " = " + to_python(e.value) + "\n";
  }
  // The Python text of every value reads back as the same value.
  auto again = parse_flowd_config(printed, "printed.cfg");
  check(again.has_value());
  check(again->entries.size() == cfg->entries.size());
  for (std::size_t i = 0; i < cfg->entries.size(); ++i) {
    check(again->entries[i].key == cfg->entries[i].key);
    check(again->entries[i].value == cfg->entries[i].value);
    check(again->entries[i].line == static_cast<int>(i) + 1);
  }
  for (const FlowdDuplicate& d : cfg->duplicates()) check(d.lines.size() >= 2);

  auto out = translate_flowd_config(*cfg);
  if (!out) {
    check(out.error().code() == Errc::kInvalidArgument);
    check(out.error().message().starts_with("fuzz.cfg"));
    return 0;
  }
  for (const std::string& w : out->warnings) check(w.starts_with("fuzz.cfg:"));
  try {
    const toml::table doc = toml::parse(out->toml);
    check(doc["service"]["registry"].is_string());
    check(doc["public_address"]["discover"].is_boolean());
    check(doc["source"].is_table() && doc["source"].as_table()->size() == 1);
    check(doc["backend"].is_table() && !doc["backend"].as_table()->empty());
  } catch (const toml::parse_error&) {
    check(false);
  }
  return 0;
}
