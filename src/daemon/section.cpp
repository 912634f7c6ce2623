#include "flowmark/daemon/section.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <sstream>

#include <toml++/toml.h>

namespace flowmark::daemon {
namespace {

const toml::table& tbl(const void* p) { return *static_cast<const toml::table*>(p); }

std::string show(const toml::node& n) {
  if (auto s = n.as_string()) return fmt::format("'{}'", s->get());
  if (n.is_table()) return "a table";
  if (n.is_array()) return "a list";
  std::ostringstream out;
  n.visit([&](auto&& v) { out << v; });
  return out.str();
}

std::string at(const toml::node& n) {
  const auto& src = n.source();
  if (src.begin.line == 0) return "";
  return fmt::format(" (line {})", src.begin.line);
}

}  // namespace

Section::Section(const void* table, std::string where, std::string name)
    : table_(table), where_(std::move(where)), name_(std::move(name)) {}
Section::Section(Section&&) noexcept = default;
Section::~Section() = default;

std::unexpected<Error> Section::error(std::string_view key, std::string_view message) const {
  const auto* n = tbl(table_).get(key);
  return fail(Errc::kInvalidArgument,
              fmt::format("{} {}: {}{}", where_, key, message, n ? at(*n) : std::string()));
}

bool Section::has(std::string_view key) const { return tbl(table_).contains(key); }

Result<std::optional<std::string>> Section::optional_string(std::string_view key) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return std::optional<std::string>{};
  if (auto s = n->as_string()) return std::optional<std::string>{s->get()};
  return error(key, fmt::format("{} is not a string", show(*n)));
}

Result<std::string> Section::string(std::string_view key, std::string_view fallback) {
  FM_TRY(auto v, optional_string(key));
  return v ? *v : std::string(fallback);
}

Result<std::int64_t> Section::integer(std::string_view key, std::int64_t fallback, std::int64_t min,
                                      std::int64_t max) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return fallback;
  auto v = n->value_exact<std::int64_t>();
  if (!v) return error(key, fmt::format("{} is not an integer", show(*n)));
  if (*v < min || *v > max) {
    return error(key, fmt::format("{} is out of range {}..{}", *v, min, max));
  }
  return *v;
}

Result<double> Section::number(std::string_view key, double fallback, double min, double max) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return fallback;
  std::optional<double> v;
  if (auto i = n->value_exact<std::int64_t>()) v = static_cast<double>(*i);
  if (auto d = n->value_exact<double>()) v = d;
  if (!v) return error(key, fmt::format("{} is not a number", show(*n)));
  if (!(*v >= min && *v <= max)) {
    return error(key, fmt::format("{} is out of range {}..{}", *v, min, max));
  }
  return *v;
}

Result<bool> Section::boolean(std::string_view key, bool fallback) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return fallback;
  auto v = n->value_exact<bool>();
  if (!v) return error(key, fmt::format("{} is not true or false", show(*n)));
  return *v;
}

Result<std::vector<std::string>> Section::strings(std::string_view key) {
  used_.insert(std::string(key));
  std::vector<std::string> out;
  const auto* n = tbl(table_).get(key);
  if (!n) return out;
  if (auto s = n->as_string()) {
    out.push_back(s->get());
    return out;
  }
  const auto* arr = n->as_array();
  if (!arr) return error(key, fmt::format("{} is not a string or a list of strings", show(*n)));
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const auto* s = (*arr)[i].as_string();
    if (!s) {
      return error(key, fmt::format("item {} ({}) is not a string", i + 1, show((*arr)[i])));
    }
    out.push_back(s->get());
  }
  return out;
}

namespace {
std::optional<std::string> scalar_text(const toml::node& n) {
  if (auto s = n.as_string()) return s->get();
  if (auto i = n.value_exact<std::int64_t>()) return std::to_string(*i);
  return std::nullopt;
}
}  // namespace

Result<std::optional<std::string>> Section::scalar(std::string_view key) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return std::optional<std::string>{};
  auto t = scalar_text(*n);
  if (!t) return error(key, fmt::format("{} is not a string or an integer", show(*n)));
  return t;
}

Result<std::vector<std::string>> Section::scalars(std::string_view key) {
  used_.insert(std::string(key));
  std::vector<std::string> out;
  const auto* n = tbl(table_).get(key);
  if (!n) return out;
  if (auto t = scalar_text(*n)) {
    out.push_back(*t);
    return out;
  }
  const auto* arr = n->as_array();
  if (!arr) return error(key, fmt::format("{} is not a value or a list", show(*n)));
  for (std::size_t i = 0; i < arr->size(); ++i) {
    auto t = scalar_text((*arr)[i]);
    if (!t) {
      return error(
          key, fmt::format("item {} ({}) is not a string or an integer", i + 1, show((*arr)[i])));
    }
    out.push_back(*t);
  }
  return out;
}

Result<std::vector<Network>> Section::networks(std::string_view key) {
  FM_TRY(auto texts, strings(key));
  std::vector<Network> out;
  for (const auto& t : texts) {
    auto n = Network::parse(t);
    if (!n) return error(key, n.error().message());
    out.push_back(*n);
  }
  return out;
}

Result<std::string> Section::choice(std::string_view key, std::string_view fallback,
                                    std::initializer_list<std::string_view> allowed) {
  FM_TRY(auto v, string(key, fallback));
  for (auto a : allowed) {
    if (v == a) return v;
  }
  return error(key, fmt::format("'{}' is not one of: {}", v, fmt::join(allowed, ", ")));
}

Result<std::optional<Section>> Section::table(std::string_view key) {
  used_.insert(std::string(key));
  const auto* n = tbl(table_).get(key);
  if (!n) return std::optional<Section>{};
  const auto* t = n->as_table();
  if (!t) return error(key, fmt::format("{} is not a table", show(*n)));
  auto inner = where_;
  if (!inner.empty() && inner.back() == ']') inner.pop_back();
  return std::optional<Section>{Section(t, fmt::format("{}.{}]", inner, key))};
}

Result<std::vector<Section>> Section::tables(std::string_view key) {
  used_.insert(std::string(key));
  std::vector<Section> out;
  const auto* n = tbl(table_).get(key);
  if (!n) return out;
  const auto* arr = n->as_array();
  if (!arr || !arr->is_array_of_tables())
    return error(
        key, fmt::format("{} is not an array of tables (write [[...{}]] tables)", show(*n), key));
  auto inner = where_;
  if (!inner.empty() && inner.front() == '[') inner.erase(0, 1);
  if (!inner.empty() && inner.back() == ']') inner.pop_back();
  for (std::size_t i = 0; i < arr->size(); ++i) {
    out.emplace_back((*arr)[i].as_table(), fmt::format("[[{}.{}]] #{}", inner, key, i + 1));
  }
  return out;
}

std::vector<std::string> Section::keys() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : tbl(table_)) out.emplace_back(k.str());
  return out;
}

Result<void> Section::finish() const {
  std::vector<std::string> unknown;
  for (const auto& [k, v] : tbl(table_)) {
    if (!used_.contains(k.str())) unknown.emplace_back(k.str());
  }
  if (unknown.empty()) return {};
  const auto* n = tbl(table_).get(unknown.front());
  return fail(
      Errc::kInvalidArgument,
      fmt::format("{} unknown key{} {}{} (known: {})", where_, unknown.size() > 1 ? "s" : "",
                  fmt::join(unknown, ", "), n ? at(*n) : std::string(), fmt::join(used_, ", ")));
}

}  // namespace flowmark::daemon
