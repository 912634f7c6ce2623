// Private seam between the config loader and the reader of flowd's KEY='value' files.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

struct FlowdTranslation {
  std::string toml;
  std::vector<std::string> warnings;
};

// True when `text` (read from `path`) is in flowd's format rather than TOML.
bool is_flowd_format(std::string_view path, std::string_view text);
Result<FlowdTranslation> flowd_to_toml(std::string_view text, std::string_view path);

// TOML text for the translations (flowd's .cfg, flowd-go's YAML): a basic string, quoted and
// escaped, and an array of them.
std::string toml_string(std::string_view s);
std::string toml_strings(const std::vector<std::string>& items);

}  // namespace flowmark::daemon
