#include "daemon/flowd/flowd_format.hpp"

#include <fmt/format.h>

#include "flowmark/daemon/flowd/flowd_config.hpp"

namespace flowmark::daemon {

// flowd's files are named *.cfg; otherwise the content decides (see
// looks_like_flowd_config: UPPER_CASE = value as the first statement).
bool is_flowd_format(std::string_view path, std::string_view text) {
  if (path.ends_with(".toml")) return false;
  if (path.ends_with(".cfg")) return true;
  return looks_like_flowd_config(text);
}

Result<FlowdTranslation> flowd_to_toml(std::string_view text, std::string_view path) {
  FM_TRY(auto cfg, parse_flowd_config(text, path));
  FM_TRY(auto out, translate_flowd_config(cfg));
  return FlowdTranslation{std::move(out.toml), std::move(out.warnings)};
}

std::string toml_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (u < 0x20 || u == 0x7F) {
          out += fmt::format("\\u{:04X}", u);
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

std::string toml_strings(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ", ";
    out += toml_string(items[i]);
  }
  return out + "]";
}

}  // namespace flowmark::daemon
