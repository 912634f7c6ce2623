// flowmark::daemon — factories of sources and backends by type name. Every kind is
// registered from one explicit list (register_builtin() in src/daemon/builtin.cpp calls
// each register_*_source / register_*_backend); a config names the type, and an unknown one
// fails with the list of known ones:
//   "[backend.x] type: unknown backend 'promethus' (known: firefly, flowlabel, prometheus,
//   records)"
//
//   BackendFactories backends("backend");
//   backends.add("records", "JSON lines of every event, to a file",
//                [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {...});
//   FM_TRY(auto b, backends.create("records", section, context));
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/daemon/plugin.hpp"
#include "flowmark/daemon/section.hpp"

namespace flowmark::daemon {

template <typename T>
class Factories {
 public:
  // Reads its keys from the section (which the caller then finish()es).
  using Factory = std::function<Result<std::unique_ptr<T>>(Section&, ServiceContext&)>;

  explicit Factories(std::string kind) : kind_(std::move(kind)) {}

  Result<void> add(std::string name, std::string description, Factory factory) {
    if (entries_.contains(name)) {
      return fail(Errc::kInvalidArgument, fmt::format("{} '{}' registered twice", kind_, name));
    }
    entries_.emplace(std::move(name), Entry{std::move(description), std::move(factory)});
    return {};
  }
  bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }
  // Sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& [name, e] : entries_) out.push_back(name);
    return out;
  }
  std::string_view description(std::string_view name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? std::string_view() : std::string_view(it->second.description);
  }
  Result<std::unique_ptr<T>> create(std::string_view type, Section& section,
                                    ServiceContext& context) const {
    auto it = entries_.find(type);
    if (it == entries_.end()) {
      return section.error("type", fmt::format("unknown {} '{}' (known: {})", kind_, type,
                                               fmt::join(names(), ", ")));
    }
    return it->second.factory(section, context);
  }

 private:
  struct Entry {
    std::string description;
    Factory factory;
  };
  std::string kind_;
  std::map<std::string, Entry, std::less<>> entries_;
};

using SourceFactories = Factories<Source>;
using BackendFactories = Factories<Backend>;

}  // namespace flowmark::daemon
