#include "daemon/flowd_format.hpp"

namespace flowmark::daemon {

// Replaced by the flowd config reader (flowd_config.cpp) when it lands.
bool is_flowd_format(std::string_view path, std::string_view) {
  return path.ends_with(".cfg");
}

Result<FlowdTranslation> flowd_to_toml(std::string_view, std::string_view path) {
  return fail(Errc::kUnsupported, std::string(path) + ": flowd's format is not read yet");
}

}  // namespace flowmark::daemon
