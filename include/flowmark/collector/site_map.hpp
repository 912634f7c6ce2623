// flowmark::collector — the map of networks to site names that lets a collector account for
// traffic between sites (what the Scitags collector asks of CRIC). Longest prefix wins;
// IPv4 and IPv6 alike. Built from [[site]] tables of the service configuration and/or a JSON
// file of the same shape:
//
//   [{"name": "CERN-PROD", "networks": ["128.142.0.0/16", "2001:1458::/32"]}, ...]
//   (or {"sites": [ ...the same... ]})
//
//   SiteMap m;
//   FM_TRY_VOID(m.add("CERN-PROD", *Network::parse("128.142.0.0/16")));
//   m.lookup(*IpAddress::parse("128.142.1.2"));   // "CERN-PROD"
//   FM_TRY(auto big, SiteMap::load_json("/etc/flowmark/sites.json"));
//
// Immutable once built; lookups are thread-safe. A SiteMapHandle is what running parts keep:
// a reload (SIGHUP) swaps the map inside it, and every holder sees the new map at its next
// lookup.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::collector {

class SiteMap {
 public:
  // Adds one network of a site. The same network given to two different sites is an error
  // naming both; given twice to the same site it is accepted once.
  Result<void> add(std::string_view site, const Network& network);
  // Adds every site of `other` (errors as add()).
  Result<void> merge(const SiteMap& other);

  // Parses the JSON form; `where` (a file name) prefixes errors, which name the element:
  // "sites.json: [3].networks[1]: 10.0.0.1/8 has host bits set ...".
  static Result<SiteMap> parse_json(std::string_view text, std::string_view where);
  static Result<SiteMap> load_json(const std::string& path);

  // The site of the longest network containing `a`; nullopt when none does. The view lives
  // as long as the map.
  std::optional<std::string_view> lookup(const IpAddress& a) const noexcept;

  std::size_t networks() const noexcept { return entries_; }
  const std::vector<std::string>& sites() const noexcept { return names_; }
  bool empty() const noexcept { return entries_ == 0; }

 private:
  struct Key {
    std::uint64_t hi = 0, lo = 0;
    friend bool operator==(const Key&, const Key&) = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const noexcept {
      std::uint64_t h = (k.hi ^ (k.lo * 0x9E3779B97F4A7C15ULL)) * 0xC2B2AE3D27D4EB4FULL;
      return static_cast<std::size_t>(h ^ (h >> 29));
    }
  };
  // One table per (family, prefix length); lookups try the lengths present, longest first.
  struct Level {
    std::uint8_t prefix = 0;
    std::unordered_map<Key, std::uint32_t, KeyHash> nets;  // masked address -> site index
  };
  static Key masked(const IpAddress& a, std::uint8_t prefix) noexcept;
  std::uint32_t site_index(std::string_view name);

  std::vector<std::string> names_;
  std::vector<Level> v4_, v6_;  // sorted by prefix, longest first
  std::size_t entries_ = 0;
};

// The running service's current site map, shared by the parts that read it.
class SiteMapHandle {
 public:
  SiteMapHandle() : map_(std::make_shared<const SiteMap>()) {}
  explicit SiteMapHandle(SiteMap m) : map_(std::make_shared<const SiteMap>(std::move(m))) {}
  std::shared_ptr<const SiteMap> get() const noexcept { return map_.load(); }
  void set(SiteMap m) { map_.store(std::make_shared<const SiteMap>(std::move(m))); }

 private:
  std::atomic<std::shared_ptr<const SiteMap>> map_;
};

}  // namespace flowmark::collector
