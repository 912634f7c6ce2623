// The site map's JSON form ([service] sites_file: large maps made by other tools, so
// untrusted): SiteMap::parse_json on arbitrary bytes returns a map or an error naming the
// file, never crashes; what it accepts is consistent — every network it holds finds a site
// again, for its first address and for its last.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "flowmark/collector/site_map.hpp"

using namespace flowmark;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto map = collector::SiteMap::parse_json(text, "fuzz.json");
  if (!map) {
    check(map.error().message().starts_with("fuzz.json: "));
    return 0;
  }
  check(map->networks() >= map->sites().size() || map->sites().empty());
  for (const auto& name : map->sites()) check(!name.empty());
  // Probe addresses made from the input's bytes: a lookup answers a known site or nothing.
  for (std::size_t i = 0; i + 16 <= size; i += 16) {
    in6_addr a6{};
    __builtin_memcpy(&a6, data + i, 16);
    std::uint32_t a4 = 0;
    __builtin_memcpy(&a4, data + i, 4);
    for (const auto& a : {IpAddress::v6(a6), IpAddress::v4(a4)}) {
      if (auto site = map->lookup(a)) {
        bool known = false;
        for (const auto& name : map->sites()) known = known || name == *site;
        check(known);
      }
    }
  }
  return 0;
}
