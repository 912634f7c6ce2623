// The site map: one hash table per (family, prefix length) of masked addresses; a lookup
// tries the lengths present, longest first (a handful for a real map), so its cost does not
// grow with the number of networks. The JSON form is read with simdjson (DOM, error codes).
#include "flowmark/collector/site_map.hpp"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace flowmark::collector {

SiteMap::Key SiteMap::masked(const IpAddress& a, std::uint8_t prefix) noexcept {
  std::uint64_t hi = 0, lo = 0;
  const std::uint8_t* b = a.bytes();
  if (a.is_v4()) {
    // bytes() holds the 4 bytes first (network order) for IPv4.
    hi = static_cast<std::uint64_t>(b[0]) << 24 | static_cast<std::uint64_t>(b[1]) << 16 |
         static_cast<std::uint64_t>(b[2]) << 8 | b[3];
    hi = prefix == 0 ? 0 : hi & (~0ULL << (32 - prefix)) & 0xFFFFFFFFULL;
    return {hi, 0};
  }
  for (int i = 0; i < 8; ++i) hi = hi << 8 | b[i];
  for (int i = 8; i < 16; ++i) lo = lo << 8 | b[i];
  if (prefix <= 64) {
    hi = prefix == 0 ? 0 : hi & (~0ULL << (64 - prefix));
    lo = 0;
  } else {
    lo = prefix == 128 ? lo : lo & (~0ULL << (128 - prefix));
  }
  return {hi, lo};
}

std::uint32_t SiteMap::site_index(std::string_view name) {
  for (std::size_t i = 0; i < names_.size(); ++i) {
    if (names_[i] == name) return static_cast<std::uint32_t>(i);
  }
  names_.emplace_back(name);
  return static_cast<std::uint32_t>(names_.size() - 1);
}

Result<void> SiteMap::add(std::string_view site, const Network& network) {
  if (site.empty()) return fail(Errc::kInvalidArgument, "a site name must not be empty");
  auto& levels = network.address.is_v4() ? v4_ : v6_;
  auto it = std::find_if(levels.begin(), levels.end(),
                         [&](const Level& l) { return l.prefix == network.prefix; });
  if (it == levels.end()) {
    Level l;
    l.prefix = network.prefix;
    levels.push_back(std::move(l));
    std::sort(levels.begin(), levels.end(),
              [](const Level& a, const Level& b) { return a.prefix > b.prefix; });
    it = std::find_if(levels.begin(), levels.end(),
                      [&](const Level& lv) { return lv.prefix == network.prefix; });
  }
  const Key k = masked(network.address, network.prefix);
  if (auto found = it->nets.find(k); found != it->nets.end()) {
    if (names_[found->second] == site) return {};
    return fail(Errc::kInvalidArgument,
                fmt::format("network {} is given to two sites: {} and {}", network.to_string(),
                            names_[found->second], site));
  }
  it->nets.emplace(k, site_index(site));
  ++entries_;
  return {};
}

Result<void> SiteMap::merge(const SiteMap& other) {
  auto copy = [&](const std::vector<Level>& levels, bool v4) -> Result<void> {
    for (const auto& l : levels) {
      for (const auto& [k, idx] : l.nets) {
        std::array<std::uint8_t, 16> b{};
        for (int i = 0; i < 8; ++i) b[i] = static_cast<std::uint8_t>(k.hi >> (56 - 8 * i));
        for (int i = 0; i < 8; ++i) b[8 + i] = static_cast<std::uint8_t>(k.lo >> (56 - 8 * i));
        Network n;
        if (v4) {
          n.address = IpAddress::v4(static_cast<std::uint32_t>(k.hi));
        } else {
          in6_addr a{};
          std::memcpy(&a, b.data(), 16);
          n.address = IpAddress::v6(a);
        }
        n.prefix = l.prefix;
        FM_TRY_VOID(add(other.names_[idx], n));
      }
    }
    return {};
  };
  FM_TRY_VOID(copy(other.v4_, true));
  return copy(other.v6_, false);
}

std::optional<std::string_view> SiteMap::lookup(const IpAddress& a) const noexcept {
  const auto& levels = a.is_v4() ? v4_ : v6_;
  for (const auto& l : levels) {
    if (auto it = l.nets.find(masked(a, l.prefix)); it != l.nets.end()) {
      return std::string_view(names_[it->second]);
    }
  }
  return std::nullopt;
}

Result<SiteMap> SiteMap::parse_json(std::string_view text, std::string_view where) {
  using simdjson::dom::array;
  using simdjson::dom::element;
  using simdjson::dom::object;
  auto bad = [&](std::string_view path, std::string_view what) {
    return fail(Errc::kMalformed, fmt::format("{}: {}: {}", where, path, what));
  };
  simdjson::dom::parser parser;
  simdjson::padded_string padded(text.data(), text.size());
  element doc;
  if (auto err = parser.parse(padded).get(doc); err != simdjson::SUCCESS) {
    return fail(Errc::kMalformed,
                fmt::format("{}: not valid JSON: {}", where, simdjson::error_message(err)));
  }
  array sites;
  std::string prefix;
  if (doc.is_object()) {
    element inner;
    if (doc.at_key("sites").get(inner) != simdjson::SUCCESS ||
        inner.get(sites) != simdjson::SUCCESS) {
      return bad("(top)", "expected an array of sites, or an object with a \"sites\" array");
    }
    prefix = "sites";
  } else if (doc.get(sites) != simdjson::SUCCESS) {
    return bad("(top)", "expected an array of sites, or an object with a \"sites\" array");
  }
  SiteMap map;
  std::size_t i = 0;
  for (element site : sites) {
    const std::string path = fmt::format("{}[{}]", prefix, i++);
    object obj;
    if (site.get(obj) != simdjson::SUCCESS) {
      return bad(path, "expected an object {\"name\": ..., \"networks\": [...]}");
    }
    std::string_view name;
    if (obj.at_key("name").get(name) != simdjson::SUCCESS || name.empty()) {
      return bad(path + ".name", "expected a non-empty string");
    }
    array nets;
    if (obj.at_key("networks").get(nets) != simdjson::SUCCESS) {
      return bad(path + ".networks", "expected an array of networks (\"10.0.0.0/8\")");
    }
    for (auto field : obj) {
      if (field.key != "name" && field.key != "networks") {
        return bad(path, fmt::format("unknown key \"{}\" (a site has name and networks)",
                                     std::string_view(field.key)));
      }
    }
    std::size_t j = 0;
    for (element n : nets) {
      const std::string npath = fmt::format("{}.networks[{}]", path, j++);
      std::string_view t;
      if (n.get(t) != simdjson::SUCCESS) return bad(npath, "expected a string (\"10.0.0.0/8\")");
      auto net = Network::parse(t);
      if (!net) return bad(npath, net.error().message());
      if (auto r = map.add(name, *net); !r) return bad(npath, r.error().message());
    }
  }
  return map;
}

Result<SiteMap> SiteMap::load_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(Errc::kNotFound,
                fmt::format("cannot read the site map {}: {}", path, std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_json(ss.str(), path);
}

}  // namespace flowmark::collector
