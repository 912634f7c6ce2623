// Private seam between the config loader and the reader of flowd-go's YAML configuration
// (/etc/flowd-go/conf.yaml), read as it is and translated into flowmarkd's TOML schema.
//
//   if (looks_like_flowd_go_config(path, text)) {
//     FM_TRY(auto out, translate_flowd_go_config(text, path));   // every key checked
//     for (const auto& w : out.warnings) log_warning(w);          // keys explained, not used
//     auto doc = toml::parse(out.toml);                           // the service's own schema
//   }
//
// Every key flowd-go v2.4 reads (cmd/conf.go and the plugins', backends' and enrichers'
// conf.go) is either translated or refused with "<file>:<line>:<col>: <path>: <why>", the
// path written as flowd-go's (backends.firefly.stun.stunServers). Keys flowd-go does not
// read are errors, as unknown keys are in flowmarkd's TOML.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

struct FlowdGoTranslation {
  std::string toml;                   // a complete flowmarkd TOML document
  std::vector<std::string> warnings;  // "<file>:<line>:<col>: <path>: …" — keys not used, why
};

// A file named *.yaml or *.yml, or whose first statement (after blank lines, `#` comments
// and a `---` document start) is a YAML mapping key of flowd-go's top level (`plugins:`,
// `backends:`, `enrichers:`, `pidPath:`, `workDir:`): TOML has no `key:` form.
bool looks_like_flowd_go_config(std::string_view path, std::string_view text) noexcept;

// YAML parsed by yaml-cpp; errors are Errc::kInvalidArgument naming file, line, column and
// the key's path.
Result<FlowdGoTranslation> translate_flowd_go_config(std::string_view text,
                                                     std::string_view file_name);

}  // namespace flowmark::daemon
