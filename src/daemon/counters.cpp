#include "flowmark/daemon/counters.hpp"

#include <algorithm>

#include "flowmark/core/json.hpp"

namespace flowmark::daemon {

std::atomic<std::uint64_t>& Counters::find_or_add(std::string_view name, const Labels& labels,
                                                  std::string_view help, Kind kind) {
  std::lock_guard lock(mutex_);
  for (auto& s : series_) {
    if (s.name == name && s.labels == labels) return s.value;
  }
  auto& s = series_.emplace_back();
  s.name = name;
  s.help = help;
  s.kind = kind;
  s.labels = labels;
  return s.value;
}

std::atomic<std::uint64_t>& Counters::counter(std::string_view name, const Labels& labels,
                                              std::string_view help) {
  return find_or_add(name, labels, help, Kind::kCounter);
}

std::atomic<std::uint64_t>& Counters::gauge(std::string_view name, const Labels& labels,
                                            std::string_view help) {
  return find_or_add(name, labels, help, Kind::kGauge);
}

std::vector<Counters::Sample> Counters::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<Sample> out;
  out.reserve(series_.size());
  for (const auto& s : series_) {
    out.push_back({s.name, s.help, s.kind, s.labels, s.value.load(std::memory_order_relaxed)});
  }
  return out;
}

std::uint64_t Counters::value(std::string_view name, const Labels& labels) const {
  std::lock_guard lock(mutex_);
  for (const auto& s : series_) {
    if (s.name == name && s.labels == labels) return s.value.load(std::memory_order_relaxed);
  }
  return 0;
}

std::uint64_t Counters::sum(std::string_view name, const Labels& subset) const {
  std::lock_guard lock(mutex_);
  std::uint64_t total = 0;
  for (const auto& s : series_) {
    if (s.name != name) continue;
    bool match = std::all_of(subset.begin(), subset.end(), [&](const auto& want) {
      return std::find(s.labels.begin(), s.labels.end(), want) != s.labels.end();
    });
    if (match) total += s.value.load(std::memory_order_relaxed);
  }
  return total;
}

std::string Counters::to_json(bool nonzero_only) const {
  std::string out = "{";
  bool first = true;
  for (const auto& s : snapshot()) {
    if (nonzero_only && s.value == 0) continue;
    std::string key = s.name;
    if (!s.labels.empty()) {
      key += '{';
      for (std::size_t i = 0; i < s.labels.size(); ++i) {
        if (i) key += ',';
        key += s.labels[i].first + "=" + s.labels[i].second;
      }
      key += '}';
    }
    if (!first) out += ',';
    first = false;
    append_json_string(out, key);
    out += ':';
    out += std::to_string(s.value);
  }
  out += '}';
  return out;
}

}  // namespace flowmark::daemon
