// A bounded map with entries that age out on the packet clock: the observer's set of
// ignored (vetoed) flows and its fragment-id map. A key lives in a window of kWays
// consecutive slots from its hash; a full window gives up its least recently seen entry,
// so memory is fixed and nothing is ever deleted (an aged entry is just reusable).
#pragma once

#include <cstddef>
#include <cstdint>

#include "flow_key.hpp"
#include "flowmark/observe/observer.hpp"
#include "mmap_array.hpp"

namespace flowmark::observe::detail {

template <class Key, class Value>
class BoundedCache {
 public:
  struct Entry {
    Key key;
    Nanos seen;
    Value value;
    std::uint32_t used;
  };
  static constexpr std::size_t kWays = 8;

  BoundedCache() = default;
  explicit BoundedCache(std::size_t capacity) : slots_(capacity < kWays ? kWays : capacity) {}

  // The live entry for key (seen within ttl of now), or nullptr.
  Entry* find(const Key& key, std::uint32_t h, Nanos now, Nanos ttl) noexcept {
    if (!any_) return nullptr;
    std::size_t i = reduce(h, slots_.size());
    for (std::size_t w = 0; w < kWays; ++w) {
      Entry& e = slots_[i];
      if (e.used && now - e.seen < ttl && e.key == key) return &e;
      if (++i == slots_.size()) i = 0;
    }
    return nullptr;
  }

  // Inserts or refreshes key. Returns true when a live entry had to make room.
  bool put(const Key& key, std::uint32_t h, Nanos now, Nanos ttl, const Value& value) noexcept {
    any_ = true;
    std::size_t i = reduce(h, slots_.size());
    Entry* free = nullptr;
    Entry* oldest = nullptr;
    for (std::size_t w = 0; w < kWays; ++w) {
      Entry& e = slots_[i];
      if (e.used && e.key == key) {
        free = &e;
        oldest = nullptr;
        break;
      }
      if (!e.used || now - e.seen >= ttl) {
        if (!free) free = &e;
      } else if (!oldest || e.seen < oldest->seen) {
        oldest = &e;
      }
      if (++i == slots_.size()) i = 0;
    }
    const bool displaced = !free;
    Entry& e = free ? *free : *oldest;
    e.key = key;
    e.seen = now;
    e.value = value;
    e.used = 1;
    return displaced;
  }

  void clear() noexcept {
    if (any_) slots_.zero();
    any_ = false;
  }
  bool empty() const noexcept { return !any_; }
  static constexpr std::size_t entry_bytes() noexcept { return sizeof(Entry); }

 private:
  MmapArray<Entry> slots_;
  bool any_ = false;
};

}  // namespace flowmark::observe::detail
