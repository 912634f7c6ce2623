// flowmark::daemon — FlowTable, the pipeline's table of live flows: a flat one. Each flow is
// one 64-byte entry — a cache line — in a slab (chunks of 4,096, never moved, so a burst does
// not copy the table; a flow's usage, when a source reports one, 16 bytes more in a slab of its
// own, by id), found through an open-addressing index of 32-bit slots (the entry's id and 8 bits
// of its key's hash: a probe rarely reads an entry that is not the one sought), and kept in a
// list by activity (least recently active first: the order of expiry and eviction) linked by
// 32-bit ids. About 70 bytes a flow with the index, one cache miss a lookup — a
// std::unordered_map node was 144 bytes plus its bucket, and a miss per node walked.
//
//   FlowTable t;
//   FlowTable::Id id = t.find(key);
//   if (id == FlowTable::kNone) id = t.insert(key, now);  // linked as the newest
//   t.set_start_time(id, ...);
//   t.touch(id, now);                                     // the newest again
//   for (auto i = t.oldest(); i != FlowTable::kNone; i = t.newer(i)) ...
//   t.erase(id);
//
// Times are kept exactly. An entry holds them as 48-bit signed offsets in microseconds from a
// base (the `now` of the first insert into an empty table): ±2^47 µs, 4.46 years either way.
// A time outside that range (a source's start time of 1970, a table never empty for 4.46 years)
// and an experiment or activity beyond the flow label's 9 and 6 bits are kept in a side map,
// as the scope ids of link-scoped addresses are: correct, 72 bytes more for that flow.
//
// Ids are reused once erased. At most kMaxFlows flows (16,777,215: the index keeps 24 bits of
// id); the caller ends the oldest before that.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "flowmark/core/time.hpp"
#include "flowmark/daemon/flow_key.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::daemon {

class FlowTable {
 public:
  using Id = std::uint32_t;
  static constexpr Id kNone = ~Id{0};
  static constexpr std::size_t kMaxFlows = (std::size_t{1} << 24) - 1;

  // Inline offsets reach kTimeRange microseconds either way of the base (4.46 years).
  static constexpr Micros kTimeRange = Micros{1} << 47;

  FlowTable() = default;
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;
  ~FlowTable();

  std::size_t size() const noexcept { return size_; }
  Id find(const FlowKey& key) const noexcept;
  // A flow not in the table (find gave kNone), linked as the newest: last active `now`, start
  // time `now` (until set), experiment and activity 0, no holders, no usage.
  Id insert(const FlowKey& key, Micros now);
  void erase(Id id) noexcept;
  // Last active `now`, linked as the newest.
  void touch(Id id, Micros now);

  // What the pipeline keeps of a live flow.
  Micros start_time(Id id) const noexcept;
  void set_start_time(Id id, Micros t);
  Micros last_event(Id id) const noexcept;
  std::uint32_t experiment(Id id) const noexcept;
  std::uint32_t activity(Id id) const noexcept;
  void set_class(Id id, std::uint32_t experiment, std::uint32_t activity);
  // The backends (their bits) given an event of this flow: they get its end.
  std::uint32_t& holders(Id id) noexcept { return entry(id).holders; }
  // The key as inserted (address scopes included).
  FlowKey key(Id id) const;
  // The bytes the flow carried, as last reported (none until a source reports them).
  std::optional<scitags::Usage> usage(Id id) const noexcept;
  void set_usage(Id id, const std::optional<scitags::Usage>& usage);

  // Flows with something in the side map (see above).
  std::size_t spilled() const noexcept { return outside_.size(); }

  Id oldest() const noexcept { return oldest_; }
  Id newest() const noexcept { return newest_; }
  Id newer(Id id) const noexcept { return entry(id).newer; }

 private:
  // The key as compared — both addresses' 16 bytes, ports, protocol, the families (bits 0–1 of
  // `bits`) — then flags of the entry (the rest of `bits`) and the flow's class.
  struct Packed {
    std::array<std::uint8_t, 16> src, dst;
    std::uint16_t src_port, dst_port;
    std::uint8_t protocol;
    std::uint8_t bits;  // kSrcV6 | kDstV6 (the key), then kScoped ... kOutsideClass
    std::uint16_t cls;  // experiment << 6 | activity (the flow label's 9 + 6 bits)
  };
  static_assert(sizeof(Packed) == 40);
  static constexpr std::uint8_t kSrcV6 = 1, kDstV6 = 2, kFamilies = 3;
  static constexpr std::uint8_t kScoped = 4;         // an address has a scope id (side map)
  static constexpr std::uint8_t kHasUsage = 8;       // usages_ holds this id's usage
  static constexpr std::uint8_t kOutsideStart = 16;  // start time in the side map
  static constexpr std::uint8_t kOutsideLast = 32;   // last event in the side map
  static constexpr std::uint8_t kOutsideClass = 64;  // experiment, activity in the side map
  static constexpr std::uint8_t kOutside = kScoped | kOutsideStart | kOutsideLast | kOutsideClass;
  // A time as a 48-bit two's complement offset from base_, in two aligned parts.
  struct Offset48 {
    std::uint32_t low;
    std::uint16_t high;
  };
  struct Entry {
    Packed key;
    std::uint32_t older, newer;  // by activity; a free entry's `older` is the next free one
    std::uint32_t holders;
    std::uint32_t start_low;
    std::uint16_t start_high, last_high;
    std::uint32_t last_low;
  };
  static_assert(sizeof(Entry) == 64);
  // What did not fit an entry (rare).
  struct Outside {
    std::uint32_t src_scope = 0, dst_scope = 0;
    std::uint32_t experiment = 0, activity = 0;
    Micros start_time = 0, last_event = 0;
  };
  static constexpr std::size_t kChunkBits = 12;  // 4,096 entries (256 KiB) a chunk
  static constexpr std::size_t kChunk = std::size_t{1} << kChunkBits;
  // Blocks from the kernel (mmap), not malloc: untouched pages are not resident, and a freed
  // block goes back at once — malloc kept a burst's chunks in its heap after the table emptied.
  struct Unmap {
    std::size_t bytes;
    void operator()(void* p) const noexcept;
  };
  template <typename T>
  using Pages = std::unique_ptr<T[], Unmap>;
  template <typename T>
  static Pages<T> map_pages(std::size_t n);  // n zeroed T

  static Packed pack(const FlowKey& key) noexcept;
  static std::uint64_t hash(const Packed& k) noexcept;
  static bool same(const Packed& a, const Packed& b) noexcept;
  Entry& entry(Id id) noexcept { return chunks_[id >> kChunkBits][id & (kChunk - 1)]; }
  const Entry& entry(Id id) const noexcept { return chunks_[id >> kChunkBits][id & (kChunk - 1)]; }
  // The offset of `t` from base_, if it fits 48 bits.
  std::optional<Offset48> offset_of(Micros t) const noexcept;
  Micros time_at(std::uint32_t low, std::uint16_t high) const noexcept;
  void set_last_event(Entry& e, Id id, Micros t);
  // Stores t as the 48-bit offset (low, high) when it fits, else exactly in the side map's
  // `side` with `flag` set in the entry.
  void store_time(Entry& e, Id id, Micros t, std::uint32_t& low, std::uint16_t& high,
                  Micros Outside::*side, std::uint8_t flag);
  Id allocate();
  void unlink(Id id) noexcept;
  void link_newest(Id id) noexcept;
  void grow_index();
  void place(std::uint32_t slot_value, std::uint64_t h) noexcept;
  void clear_all() noexcept;

  std::vector<Pages<Entry>> chunks_;
  // Usages of the flows that have one (kHasUsage), by id: a chunk of kChunk allocated when a
  // flow of its ids first has one.
  std::vector<Pages<scitags::Usage>> usages_;
  std::size_t used_ids_ = 0;  // ids handed out at least once
  Id free_ = kNone;           // erased entries, linked by `older`
  // Index: 0 empty, else (tag << 24) | (id + 1) with tag = 8 bits of the hash; linear probing,
  // load at most 13/16 (a probe reads 16 slots a cache line, and the tags spare it the
  // entries), erasure by backward shift (no tombstones).
  Pages<std::uint32_t> index_;
  std::size_t mask_ = 0;  // index size - 1 (0: no index yet)
  std::size_t size_ = 0;
  Id oldest_ = kNone, newest_ = kNone;
  Micros base_ = 0;  // of the time offsets; set by the first insert into an empty table
  // What did not fit the entries (kOutside bits): scope ids of link-scoped addresses, times
  // beyond kTimeRange from base_, a class beyond the flow label's bits.
  std::unordered_map<Id, Outside> outside_;
};

}  // namespace flowmark::daemon
