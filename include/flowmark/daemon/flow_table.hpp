// flowmark::daemon — FlowTable, the pipeline's table of live flows: a flat one. Each flow is
// one 80-byte entry in a slab (chunks of 4,096, never moved, so a burst does not copy the
// table; a flow's usage, when a source reports one, 16 bytes more in a slab of its own), found
// through an open-addressing index of 32-bit slots (the entry's id and 8 bits of its key's hash: a
// probe rarely reads an entry that is not the one sought), and kept in a list by activity (least
// recently active first: the order of expiry and eviction) linked by 32-bit ids. About 90 bytes a
// flow with the index, one cache miss a lookup — a std::unordered_map node was 144 bytes plus its
// bucket, and a miss per node walked.
//
//   FlowTable t;
//   FlowTable::Id id = t.find(key);
//   if (id == FlowTable::kNone) id = t.insert(key);  // linked as the newest
//   t[id].start_time = ...;
//   t.touch(id);                                     // the newest again
//   for (auto i = t.oldest(); i != FlowTable::kNone; i = t.newer(i)) ...
//   t.erase(id);
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

  // What the pipeline keeps of a live flow (its usage: usage(), set_usage()).
  struct Flow {
    Micros start_time;
    Micros last_event;
    std::uint32_t experiment, activity;
    // The backends (their bits) given an event of this flow: they get its end.
    std::uint32_t holders;
    std::uint32_t usage_slot;  // 0: no usage, else its place in usages_ + 1
  };
  static_assert(sizeof(Flow) == 32);

  FlowTable() = default;
  FlowTable(const FlowTable&) = delete;
  FlowTable& operator=(const FlowTable&) = delete;
  ~FlowTable();

  std::size_t size() const noexcept { return size_; }
  Id find(const FlowKey& key) const noexcept;
  // A flow not in the table (find gave kNone), its state zeroed, linked as the newest.
  Id insert(const FlowKey& key);
  void erase(Id id) noexcept;
  // Linked as the newest.
  void touch(Id id) noexcept;

  Flow& operator[](Id id) noexcept { return entry(id).flow; }
  const Flow& operator[](Id id) const noexcept { return entry(id).flow; }
  // The key as inserted (address scopes included).
  FlowKey key(Id id) const;
  // The bytes the flow carried, as last reported (none until a source reports them).
  std::optional<scitags::Usage> usage(Id id) const noexcept;
  void set_usage(Id id, const std::optional<scitags::Usage>& usage);

  Id oldest() const noexcept { return oldest_; }
  Id newest() const noexcept { return newest_; }
  Id newer(Id id) const noexcept { return entry(id).newer; }

 private:
  // The key as compared: both addresses' 16 bytes, ports, protocol, families (bits).
  struct Packed {
    std::array<std::uint8_t, 16> src, dst;
    std::uint16_t src_port, dst_port;
    std::uint8_t protocol;
    std::uint8_t families;  // bit 0: src is IPv6, bit 1: dst is IPv6
    std::uint8_t scoped;    // an address has a scope id (kept in scopes_)
    std::uint8_t pad;
  };
  static_assert(sizeof(Packed) == 40);
  struct Entry {
    Packed key;
    std::uint32_t older, newer;  // by activity; a free entry's `older` is the next free one
    Flow flow;
  };
  static constexpr std::size_t kChunkBits = 12;  // 4,096 entries (384 KiB) a chunk
  static constexpr std::size_t kChunk = std::size_t{1} << kChunkBits;
  struct FreeChunk {
    void operator()(Entry* p) const noexcept;
  };

  static Packed pack(const FlowKey& key) noexcept;
  static std::uint64_t hash(const Packed& k) noexcept;
  static bool same(const Packed& a, const Packed& b) noexcept;
  Entry& entry(Id id) noexcept { return chunks_[id >> kChunkBits].get()[id & (kChunk - 1)]; }
  const Entry& entry(Id id) const noexcept {
    return chunks_[id >> kChunkBits].get()[id & (kChunk - 1)];
  }
  Id allocate();
  void unlink(Id id) noexcept;
  void link_newest(Id id) noexcept;
  void grow_index();
  void place(std::uint32_t slot_value, std::uint64_t h) noexcept;
  void clear_all() noexcept;

  scitags::Usage& usage_at(std::uint32_t slot) noexcept {
    return usages_[(slot - 1) >> kChunkBits][(slot - 1) & (kChunk - 1)];
  }
  const scitags::Usage& usage_at(std::uint32_t slot) const noexcept {
    return usages_[(slot - 1) >> kChunkBits][(slot - 1) & (kChunk - 1)];
  }

  std::vector<std::unique_ptr<Entry, FreeChunk>> chunks_;
  // Usages of the flows that have one, in chunks of kChunk; free places listed.
  std::vector<std::unique_ptr<scitags::Usage[]>> usages_;
  std::uint32_t usage_slots_ = 0;  // places handed out at least once
  std::vector<std::uint32_t> free_usages_;
  std::size_t used_ids_ = 0;  // ids handed out at least once
  Id free_ = kNone;           // erased entries, linked by `older`
  // Index: 0 empty, else (tag << 24) | (id + 1) with tag = 8 bits of the hash; linear probing,
  // load at most 13/16 (a probe reads 16 slots a cache line, and the tags spare it the
  // entries), erasure by backward shift (no tombstones).
  std::unique_ptr<std::uint32_t[]> index_;
  std::size_t mask_ = 0;  // index size - 1 (0: no index yet)
  std::size_t size_ = 0;
  Id oldest_ = kNone, newest_ = kNone;
  // Scope ids of link-scoped addresses (rare): id -> (src scope, dst scope).
  std::unordered_map<Id, std::pair<std::uint32_t, std::uint32_t>> scopes_;
};

}  // namespace flowmark::daemon
