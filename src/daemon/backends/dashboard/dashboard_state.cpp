#include "daemon/backends/dashboard/dashboard_state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>

#include "flowmark/core/json.hpp"

namespace flowmark::daemon::dashboard {
namespace {

constexpr std::string_view kOther = "other";

std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept {
  h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
  return h * 0xC2B2AE3D27D4EB4FULL;
}

std::uint64_t hash_endpoint(std::uint64_t h, const Endpoint& e) noexcept {
  const std::uint8_t* b = e.address.bytes();
  for (std::size_t i = 0; i < e.address.size(); i += 4) {
    std::uint32_t word = 0;
    std::memcpy(&word, b + i, 4);
    h = mix(h, word);
  }
  return mix(h, e.port);
}

void append_site(std::string& out, std::string_view site) {
  if (site.empty()) {
    out += "null";
  } else {
    append_json_string(out, site);
  }
}

}  // namespace

std::size_t DashboardState::FlowIdHash::operator()(const FlowId& id) const noexcept {
  std::uint64_t h = static_cast<std::uint64_t>(id.protocol);
  h = hash_endpoint(h, id.src);
  h = hash_endpoint(h, id.dst);
  h = mix(h, static_cast<std::uint64_t>(id.start_time));
  return static_cast<std::size_t>(h ^ (h >> 31));
}

DashboardState::DashboardState(DashboardLimits limits) : limits_(limits) {
  // The backend checks its keys: at least one bin of at least one second, two series.
  bins_.resize(limits_.bins);
}

DashboardState::FlowId DashboardState::id_of(const collector::Record& r) {
  return FlowId{r.protocol, r.src, r.dst, r.start_time};
}

// The experiment's name, or its id where the registry does not name it.
std::size_t DashboardState::series_of(const collector::Record& r) {
  std::string label = r.experiment.empty() ? std::to_string(r.experiment_id) : r.experiment;
  if (auto it = series_index_.find(label); it != series_index_.end()) return it->second;
  if (series_.size() + 1 < limits_.max_series) {
    series_.push_back(label);
    series_index_.emplace(std::move(label), series_.size() - 1);
    return series_.size() - 1;
  }
  // Full: one slot is kept for "other", which sums the experiments past the bound.
  ++folded_series_;
  if (other_series_ == SIZE_MAX) {
    series_.emplace_back(kOther);
    other_series_ = series_.size() - 1;
  }
  return other_series_;
}

void DashboardState::add(const collector::Record& r, std::uint64_t added_bytes, bool ended,
                         Micros now) {
  std::string pair_key;
  pair_key.reserve(r.src_site.size() + r.dst_site.size() + 1);
  pair_key.append(r.src_site).push_back('\0');
  pair_key.append(r.dst_site);
  const FlowId id = id_of(r);

  std::lock_guard lock(mutex_);
  // A flow is counted at its first event; it is open until its end event.
  bool known;
  if (ended) {
    known = open_.erase(id) > 0;
  } else {
    known = open_.contains(id);
    if (!known) {
      if (open_.size() < limits_.max_open) {
        open_.insert(id);
      } else {
        ++untracked_;
      }
    }
  }
  if (!known) ++flows_;
  bytes_ += added_bytes;

  // Site pairs: a new pair past the bound goes to the "other" row.
  PairTotals* pair;
  if (auto it = pairs_.find(pair_key); it != pairs_.end()) {
    pair = &it->second;
  } else if (pairs_.size() < limits_.max_pairs) {
    pair = &pairs_.emplace(std::move(pair_key), PairTotals{}).first->second;
  } else {
    ++folded_pairs_;
    pair = &other_pair_;
  }
  pair->bytes += added_bytes;
  if (!known) ++pair->flows;

  if (added_bytes > 0) {
    const std::size_t s = series_of(r);
    const std::int64_t slot = now / limits_.bin;
    Bin& bin = bins_[static_cast<std::size_t>(slot) % bins_.size()];
    if (bin.slot != slot) {
      bin.slot = slot;
      std::fill(bin.bytes.begin(), bin.bytes.end(), 0);
    }
    if (bin.bytes.size() <= s) bin.bytes.resize(s + 1, 0);
    bin.bytes[s] += added_bytes;
  }

  // Latest records, newest first; a flow's newer record replaces its older one.
  const std::size_t hash = FlowIdHash{}(id);
  auto same = std::find_if(latest_.begin(), latest_.end(), [&](const Latest& x) {
    return x.hash == hash && id_of(x.record) == id;
  });
  if (same != latest_.end()) latest_.erase(same);
  latest_.push_front(Latest{hash, r});
  if (latest_.size() > limits_.latest) latest_.pop_back();
}

std::string DashboardState::summary_json(Micros now) const {
  const std::int64_t last = now / limits_.bin;
  const std::int64_t first = last - static_cast<std::int64_t>(limits_.bins) + 1;
  const Micros bin_seconds = limits_.bin / 1'000'000;
  std::string out;
  out.reserve(4096);

  std::lock_guard lock(mutex_);
  out += fmt::format(
      "{{\"now\":{},\"bin_seconds\":{},\"window_seconds\":{},\"totals\":{{\"flows\":{},"
      "\"open_flows\":{},\"bytes\":{}}},",
      now, bin_seconds, bin_seconds * static_cast<Micros>(limits_.bins), flows_, open_.size(),
      bytes_);

  // Throughput: every series with bytes in the window, one number per bin, oldest first.
  out += fmt::format("\"throughput\":{{\"start\":{},\"bin_seconds\":{},\"series\":[",
                     first * limits_.bin, bin_seconds);
  bool first_series = true;
  std::vector<std::uint64_t> values(limits_.bins);
  for (std::size_t s = 0; s < series_.size(); ++s) {
    bool any = false;
    for (std::size_t i = 0; i < limits_.bins; ++i) {
      const std::int64_t slot = first + static_cast<std::int64_t>(i);
      const Bin& bin = bins_[static_cast<std::size_t>(slot) % bins_.size()];
      values[i] = (bin.slot == slot && s < bin.bytes.size()) ? bin.bytes[s] : 0;
      any = any || values[i] != 0;
    }
    if (!any) continue;
    if (!first_series) out.push_back(',');
    first_series = false;
    out += "{\"experiment\":";
    append_json_string(out, series_[s]);
    out += ",\"bytes\":[";
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i) out.push_back(',');
      out += fmt::format("{}", values[i]);
    }
    out += "]}";
  }
  out += "]},";

  // The top site pairs by bytes (then by flows, then by name: a stable order).
  using Entry = std::pair<const std::string*, const PairTotals*>;
  std::vector<Entry> pairs;
  pairs.reserve(pairs_.size());
  for (const auto& [key, totals] : pairs_) pairs.emplace_back(&key, &totals);
  const std::size_t top = std::min(limits_.top_pairs, pairs.size());
  std::partial_sort(pairs.begin(), pairs.begin() + static_cast<std::ptrdiff_t>(top), pairs.end(),
                    [](const Entry& a, const Entry& b) {
                      if (a.second->bytes != b.second->bytes) {
                        return a.second->bytes > b.second->bytes;
                      }
                      if (a.second->flows != b.second->flows) {
                        return a.second->flows > b.second->flows;
                      }
                      return *a.first < *b.first;
                    });
  out += "\"site_pairs\":[";
  for (std::size_t i = 0; i < top; ++i) {
    if (i) out.push_back(',');
    std::string_view key = *pairs[i].first;
    auto nul = key.find('\0');
    out += "{\"src_site\":";
    append_site(out, key.substr(0, nul));
    out += ",\"dst_site\":";
    append_site(out, key.substr(nul + 1));
    out +=
        fmt::format(",\"bytes\":{},\"flows\":{}}}", pairs[i].second->bytes, pairs[i].second->flows);
  }
  if (other_pair_.flows != 0 || other_pair_.bytes != 0) {
    if (top) out.push_back(',');
    out += fmt::format(
        "{{\"src_site\":null,\"dst_site\":null,\"bytes\":{},\"flows\":{},\"other\":true}}",
        other_pair_.bytes, other_pair_.flows);
  }
  out += "],\"latest\":[";
  bool first_record = true;
  for (const auto& x : latest_) {
    if (!first_record) out.push_back(',');
    first_record = false;
    collector::append_json(x.record, out);
  }
  out += "]}";
  return out;
}

std::uint64_t DashboardState::untracked() const {
  std::lock_guard lock(mutex_);
  return untracked_;
}
std::uint64_t DashboardState::folded_pairs() const {
  std::lock_guard lock(mutex_);
  return folded_pairs_;
}
std::uint64_t DashboardState::folded_series() const {
  std::lock_guard lock(mutex_);
  return folded_series_;
}

}  // namespace flowmark::daemon::dashboard
