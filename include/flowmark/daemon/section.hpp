// flowmark::daemon — one table of the configuration ([service], [source.NAME],
// [backend.NAME], ...), read through typed getters that record which keys were used, so
// that finish() can reject every key nobody asked for. Errors name the table, the key, the
// value and what is allowed:
//   "[backend.fireflies] ttl: 300 is out of range 0..255"
//   "[source.pipe] unknown key 'pth' (known: group, max_line, mode, path, type)"
//
//   FM_TRY(auto path, s.string("path", "/run/flowmark/flowmark.pipe"));
//   FM_TRY(auto ttl, s.integer("ttl", 1, 0, 255));
//   FM_TRY_VOID(s.finish());
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::daemon {

class Section {
 public:
  // `table` is a toml::table owned by the caller (kept opaque here so that users of this
  // header need not include toml++). `where` is "[source.pipe]" and the like.
  Section(const void* table, std::string where, std::string name = "");
  Section(Section&&) noexcept;
  ~Section();

  const std::string& where() const noexcept { return where_; }
  // The part's name: "pipe" for [source.pipe] ("" for other tables).
  const std::string& name() const noexcept { return name_; }
  bool has(std::string_view key) const;

  Result<std::string> string(std::string_view key, std::string_view fallback);
  Result<std::optional<std::string>> optional_string(std::string_view key);
  Result<std::int64_t> integer(std::string_view key, std::int64_t fallback, std::int64_t min,
                               std::int64_t max);
  // Integers are accepted too.
  Result<double> number(std::string_view key, double fallback, double min, double max);
  Result<bool> boolean(std::string_view key, bool fallback);
  // A list of strings; a single string is a list of one.
  Result<std::vector<std::string>> strings(std::string_view key);
  Result<std::vector<Network>> networks(std::string_view key);
  // A string or an integer, as text (ids or names; ports or port ranges); nullopt if absent.
  Result<std::optional<std::string>> scalar(std::string_view key);
  // A list of strings or integers, as text; a single one is a list of one.
  Result<std::vector<std::string>> scalars(std::string_view key);
  // A string that must be one of `allowed`.
  Result<std::string> choice(std::string_view key, std::string_view fallback,
                             std::initializer_list<std::string_view> allowed);
  // A nested table ("[backend.x.overrides]"), if present.
  Result<std::optional<Section>> table(std::string_view key);
  // An array of tables ("[[backend.x.rule]]"), each a Section named "[[backend.x.rule]] #N"
  // (N from 1) for its errors; empty if absent.
  Result<std::vector<Section>> tables(std::string_view key);
  // The keys of this table, in order (for free-form maps like address overrides).
  std::vector<std::string> keys() const;
  // Marks a key as used without reading it through a getter.
  void mark_used(std::string_view key) { used_.insert(std::string(key)); }

  // Every key present that no getter asked for is an error.
  Result<void> finish() const;

  // "[source.pipe] path: <message>"
  std::unexpected<Error> error(std::string_view key, std::string_view message) const;

 private:
  const void* table_;
  std::string where_;
  std::string name_;
  std::set<std::string, std::less<>> used_;
};

}  // namespace flowmark::daemon
