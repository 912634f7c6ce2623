// Command-line and environment values: NUL-separated fields fill RawOptions.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "flowmark/mcast/options.hpp"

using namespace flowmark::mcast;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> f;
  std::string cur;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      f.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  f.push_back(cur);
  f.resize(12);
  RawOptions r;
  auto set = [](std::optional<std::string>& o, const std::string& v) {
    if (!v.empty()) o = v;
  };
  set(r.group, f[0]);
  set(r.port, f[1]);
  set(r.ttl, f[2]);
  set(r.interval, f[3]);
  set(r.count, f[4]);
  set(r.size, f[5]);
  set(r.timeout, f[6]);
  set(r.buffer_size, f[7]);
  if (!f[8].empty()) r.message = {f[8]};
  if (!f[9].empty()) r.groups = {f[9]};
  if (!f[10].empty()) r.sources = {f[10]};
  r.pipe = !f[11].empty() && f[11][0] == 'p';
  EnvLookup env = [&](std::string_view name) -> std::optional<std::string> {
    if (name == "MULTICAST_PORT" && f[11].size() > 1) return f[11].substr(1);
    return std::nullopt;
  };
  if (auto s = resolve_say(r, env)) {
    if (s->port == 0 || s->ttl > 255 || !s->group.is_multicast()) __builtin_trap();
  }
  if (auto v = resolve_recv(r, env)) {
    if (v->groups.empty()) __builtin_trap();
  }
  return 0;
}
