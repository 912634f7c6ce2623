// flowmark::daemon — the service's own counters: events by source, rejects by reason, drops
// by backend, queue depths. Registered by name and labels when a part starts (allocates),
// then bumped lock-free on the data path through the reference returned. The Prometheus
// backend exports them; `flowmarkd` logs them at exit; tests read them by name.
//
//   Counters counters;
//   auto& rejected = counters.counter("flowmark_source_rejected_total",
//                                     {{"source", "pipe"}, {"reason", "bad_port"}},
//                                     "Input rejected by a source, by reason");
//   rejected.fetch_add(1, std::memory_order_relaxed);
//   counters.value("flowmark_source_rejected_total", {{"source", "pipe"}, {"reason", "bad_port"}});
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flowmark::daemon {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counters {
 public:
  enum class Kind : std::uint8_t { kCounter, kGauge };

  struct Sample {
    std::string name;
    std::string help;
    Kind kind = Kind::kCounter;
    Labels labels;
    std::uint64_t value = 0;
  };

  // Finds or registers the series (name, labels). The reference stays valid as long as the
  // Counters object. Thread-safe; meant for start-up, not for every event.
  std::atomic<std::uint64_t>& counter(std::string_view name, const Labels& labels = {},
                                      std::string_view help = "");
  // The same for a value that goes up and down (set with store()).
  std::atomic<std::uint64_t>& gauge(std::string_view name, const Labels& labels = {},
                                    std::string_view help = "");

  // Every series, in registration order.
  std::vector<Sample> snapshot() const;
  // One series' value (0 when not registered).
  std::uint64_t value(std::string_view name, const Labels& labels = {}) const;
  // The sum over every series of this name whose labels include `subset`.
  std::uint64_t sum(std::string_view name, const Labels& subset = {}) const;
  // {"name{k=v,...}": value, ...} on one line, for logs and tests.
  std::string to_json(bool nonzero_only = false) const;

 private:
  struct Series {
    std::string name;
    std::string help;
    Kind kind;
    Labels labels;
    std::atomic<std::uint64_t> value{0};
  };
  std::atomic<std::uint64_t>& find_or_add(std::string_view name, const Labels& labels,
                                          std::string_view help, Kind kind);

  mutable std::mutex mutex_;
  std::deque<Series> series_;  // deque: references stay valid as it grows
};

}  // namespace flowmark::daemon
