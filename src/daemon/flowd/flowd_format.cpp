#include "daemon/flowd/flowd_format.hpp"

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

}  // namespace flowmark::daemon
