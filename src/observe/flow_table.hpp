// The observer's flow table and its timer wheel.
//
// Storage: an array of Flow (record + 16 bytes of state) reserved for max_flows in lazily
// committed memory, with an occupancy bitmap. Index: open addressing with linear probing
// over {hash, flow index} slots, two slots per flow of the current capacity (load <= 0.5),
// deletion by backward shift (no tombstones). The key is not copied into the index: a slot
// whose 32-bit hash matches is confirmed by comparing the packet's full key with the
// record's addresses, ports, protocol, family (and VLAN) in both orientations, which also
// yields the packet's direction. One probe sequence per packet.
//
// Growth: the table starts at kInitialFlows and doubles (up to max_flows) when full; only
// the index is rebuilt (flows keep their positions: they are found through the index).
// New flows take the lowest free positions below the current capacity (a cursor sweeps the
// occupancy bitmap), so the memory touched, hence the resident set, follows the number of
// flows held, not max_flows. on_packets() hides the two memory latencies of a lookup in a
// large table (slot, then record) by loading the slots of a group of packets, then the flows
// they name, a group or two ahead of their turn.
//
// Timers: every flow sits in exactly one bucket of a hashed timing wheel of kBuckets
// buckets of 2^shift ns, placed by a deadline that is never later than its real one (the
// real deadline is computed from the record when the bucket is visited: a packet that
// extends the idle deadline costs nothing, the flow is moved when its old bucket comes
// up). Visiting a bucket whose time has passed fires what is due and moves what is not;
// the bucket holding the present time is scanned only when the clock reaches the earliest
// deadline known in it, so every expiry happens at its exact deadline, at an amortised cost
// that depends on the number of timers due, not on the number of flows. A bitmap of
// non-empty buckets lets a clock jump or an eviction skip the empty ones.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "flow_key.hpp"
#include "flowmark/observe/observer.hpp"
#include "mmap_array.hpp"

namespace flowmark::observe::detail {

inline constexpr Nanos kNanosMax = std::numeric_limits<Nanos>::max();
inline constexpr Nanos kNanosMin = std::numeric_limits<Nanos>::min();

inline Nanos add_sat(Nanos a, Nanos b) noexcept {
  Nanos r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? kNanosMax : kNanosMin;
  return r;
}

enum class FlowState : std::uint8_t { kFree = 0, kActive, kExpiring };

// Flow::bits
inline constexpr std::uint8_t kFlowPortless = kKeyPortless;  // a 3-tuple flow
inline constexpr std::uint8_t kFlowPending = 0x80;  // split by the active timeout, no packet since

// FlowTable::match() reads sp, dp, proto, ip_version and vlan as one 8-byte word.
static_assert(offsetof(FlowRecord, dp) == offsetof(FlowRecord, sp) + 2 &&
              offsetof(FlowRecord, proto) == offsetof(FlowRecord, sp) + 4 &&
              offsetof(FlowRecord, ip_version) == offsetof(FlowRecord, sp) + 5 &&
              offsetof(FlowRecord, vlan) == offsetof(FlowRecord, sp) + 6);

struct Flow {
  std::uint32_t hash;
  FlowState state;
  std::uint8_t bits;
  std::uint16_t reserved;
  Nanos expire_at;  // kExpiring: when the record is emitted
  FlowRecord rec;
};

// A flow whose packets are simply counted: active, and not waiting for the first packet
// of its next part (branch-free: a coin toss a branch would miss costs more than the test).
inline bool counting(const Flow& f) noexcept {
  return (f.state == FlowState::kActive) & !(f.bits & kFlowPending);
}

struct Slot {
  std::uint32_t hash;
  std::uint32_t idx1;  // flow index + 1; 0 = empty
};

struct Link {
  std::uint32_t prev, next;
};

inline constexpr std::uint32_t kNil = std::numeric_limits<std::uint32_t>::max();

class FlowTable {
 public:
  static constexpr std::size_t kBuckets = 4096;
  static constexpr std::size_t kSlotsPerFlow = 2;

  static constexpr std::size_t kInitialFlows = 4096;

  // state_bytes: room kept after each flow's record for the chains' state (chain.hpp).
  FlowTable(std::size_t max_flows, Nanos max_delay, bool key_vlan, std::size_t state_bytes = 0)
      : stride_(sizeof(Flow) + (state_bytes + 7) / 8 * 8),
        cap_(max_flows),
        cur_(std::min(max_flows, kInitialFlows)),
        nslots_(std::max<std::size_t>(16, cur_ * kSlotsPerFlow)),
        tail_mask_(key_vlan ? ~std::uint64_t{0} : 0x0000ffffffffffffull),
        flows_(max_flows * stride_),
        links_(max_flows + kBuckets),
        slots_(nslots_),
        used_((max_flows + 63) / 64) {
    // The wheel must span the longest delay plus two buckets (present and rounding).
    shift_ = 10;
    while ((Nanos{kBuckets} - 2) << shift_ < max_delay && shift_ < 56) ++shift_;
    reset_wheel();
  }

  // Room for more chains' state, before the first flow (what Observer::add_chain does): only
  // the flows' array is reserved anew; the index and the wheel stay as they are.
  void set_state_bytes(std::size_t state_bytes) {
    const std::size_t stride = sizeof(Flow) + (state_bytes + 7) / 8 * 8;
    if (stride == stride_) return;
    flows_ = MmapArray<std::byte>(cap_ * stride);
    stride_ = stride;
  }

  std::size_t bytes_per_flow() const noexcept {
    return stride_ + sizeof(Link) + kSlotsPerFlow * sizeof(Slot);
  }
  // The chains' state of flow i (right after its record).
  std::byte* state(std::uint32_t i) noexcept { return flows_.data() + i * stride_ + sizeof(Flow); }
  // The flow whose record r is, or kNil when r is not one of this table's.
  std::uint32_t index_of(const FlowRecord& r) const noexcept {
    const auto a = reinterpret_cast<std::uintptr_t>(&r) - offsetof(Flow, rec);
    const auto base = reinterpret_cast<std::uintptr_t>(flows_.data());
    if (a < base || (a - base) % stride_ != 0 || (a - base) / stride_ >= cap_) return kNil;
    return static_cast<std::uint32_t>((a - base) / stride_);
  }

  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return cap_; }
  std::size_t current_capacity() const noexcept { return cur_; }
  Flow& flow(std::uint32_t i) noexcept { return at(i); }

  // --- index ---------------------------------------------------------------------------
  struct Hit {
    std::uint32_t idx;
    bool found, rev;
  };

  // Compares without branching on the direction (it is a coin toss per packet, and a
  // mispredicted branch on a record still in flight from memory would serialise the
  // misses of consecutive packets). Sets found/rev; a self-flow matches forward.
  void match(const Flow& f, const PacketKey& k, bool& found, bool& rev) const noexcept {
    const FlowRecord& r = f.rec;
    const AddrWords a = load_addr(r.sip.bytes(), true), b = load_addr(r.dip.bytes(), true);
    std::uint64_t tail;
    std::memcpy(&tail, &r.sp, sizeof tail);
    tail &= tail_mask_;
    const std::uint64_t pl = (f.bits ^ k.flags) & kKeyPortless;
    const std::uint64_t dfwd = (a.w0 ^ k.src.w0) | (a.w1 ^ k.src.w1) | (b.w0 ^ k.dst.w0) |
                               (b.w1 ^ k.dst.w1) | (tail ^ k.tail_fwd) | pl;
    const std::uint64_t drev = (a.w0 ^ k.dst.w0) | (a.w1 ^ k.dst.w1) | (b.w0 ^ k.src.w0) |
                               (b.w1 ^ k.src.w1) | (tail ^ k.tail_rev) | pl;
    const bool fwd = dfwd == 0;
    found = fwd | (drev == 0);
    rev = !fwd;
  }

  // The first of the kNear slots from home on whose hash is h (idx1, or 0 for none), by
  // masks: which of them holds a packet's flow is a coin toss a branch would miss. (A slot
  // holding h is never past an empty one: same hash, same home, and deletion shifts back.)
  static constexpr std::size_t kNear = 4;
  std::uint32_t candidate(std::size_t home, std::uint32_t h) const noexcept {
    if (home + kNear > nslots_) [[unlikely]]
      return candidate_wrapped(home, h);
    const Slot* s = &slots_[home];
#if defined(__SSE2__)
    // The four slots in two loads; a bit per slot whose hash is h (the even lanes: a slot's
    // idx1 equal to h must not count); the first of them, or none.
    static_assert(kNear == 4 && sizeof(Slot) == 8);
    const __m128i want = _mm_set1_epi32(static_cast<int>(h));
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 2));
    const auto m = static_cast<unsigned>(
        (_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(lo, want))) & 0x5) |
        (_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(hi, want))) & 0x5) << 4);
    const unsigned k = static_cast<unsigned>(std::countr_zero(m | 0x100u)) >> 1;  // 4: none
    return s[k & 3].idx1 & (0u - static_cast<std::uint32_t>(k < kNear));
#else
    std::uint32_t c = 0;
    for (std::size_t k = kNear; k-- > 0;) {
      const std::uint32_t in = 0u - static_cast<std::uint32_t>(s[k].hash == h);
      c = (s[k].idx1 & in) | (c & ~in);
    }
    return c;
#endif
  }
  std::uint32_t candidate_wrapped(std::size_t home, std::uint32_t h) const noexcept {
    for (std::size_t k = 0, i = home; k < kNear; ++k, i = i + 1 == nslots_ ? 0 : i + 1)
      if (slots_[i].hash == h) return slots_[i].idx1;
    return 0;
  }

  [[gnu::always_inline]] Hit find(const PacketKey& k) const noexcept {
    const std::uint32_t h = k.hash;
    std::size_t i = reduce(h, nslots_);
    bool found, rev;
    // Nearly always the flow is in the first kNear slots from home (load <= 0.5): tried first
    // without a branch on which; a slot can hold h only if the home slot is occupied (same
    // hash, same home), so an empty home slot gives 0. Otherwise, the probe sequence.
    if (const std::uint32_t c = candidate(i, h); c != 0) {
      match(at(c - 1), k, found, rev);
      if (found) [[likely]]
        return {c - 1, true, rev};
    }
    for (;;) {
      const Slot s = slots_[i];
      if (s.idx1 == 0) return {0, false, false};
      if (s.hash == h) {
        match(at(s.idx1 - 1), k, found, rev);
        if (found) return {s.idx1 - 1, true, rev};
      }
      if (++i == nslots_) i = 0;
    }
  }

  // For on_packets(): requests the index slot of hash h from memory; later, when it has
  // arrived, the flows it names (every flow is in the index).
  void prefetch_index(std::uint32_t h) const noexcept {
    const std::size_t home = reduce(h, nslots_);
    const Slot* s = &slots_[home];
    const Slot* t = &slots_[std::min(home + kNear - 1, nslots_ - 1)];  // candidate()'s last
    __builtin_prefetch(s);
    __builtin_prefetch(t);
    asm volatile("" : : "r"(s), "r"(t) : "memory");  // kept (see prefetch_flow)
  }
  // The flow is looked for in the first kNear slots from home only (at load <= 0.5 that is
  // where nearly every flow sits), and without a branch: the number of slots to look at
  // varies unpredictably from packet to packet. A prefetch of a wrong place (no match: the
  // "flow" before the first) costs a line, never a fault. Returns the candidate (flow index
  // + 1, 0 for none) for active_match().
  std::uint32_t prefetch_indexed(std::uint32_t h) const noexcept {
    const std::uint32_t c = candidate(reduce(h, nslots_), h);
    prefetch_flow(static_cast<std::size_t>(c) - 1);
    // GCC deletes code whose only effects are prefetches: an empty volatile asm is an effect
    // it must keep.
    asm volatile("");
    return c;
  }

  // Is candidate c (from prefetch_indexed(), maybe some packets ago) an active flow, not
  // waiting for its next part, whose key is k? Then it is k's flow, whatever the index did
  // since: a flow keeps its place while it lives, at most one live flow has a given key, and
  // a freed place keeps its old key but not an active state. `rev` is the packet's
  // direction. False: no conclusion (the caller looks k up with find()).
  [[gnu::always_inline]] bool active_match(std::uint32_t c, const PacketKey& k,
                                           bool& rev) const noexcept {
    const Flow& f = at(c - 1 + (c == 0));  // c == 0: any place, rejected below
    bool found;
    match(f, k, found, rev);
    return (found & (c != 0) & counting(f)) != 0;
  }

  // A free flow (state still kFree): `hint` if free, else the lowest free one from the
  // sweeping cursor on; the table grows first when full below max_flows (the caller evicts
  // at max_flows). The caller fills it, then insert().
  std::uint32_t allocate(std::uint32_t hint = kNil) noexcept {
    if (size_ >= cur_ && cur_ < cap_) grow();
    const std::size_t i = hint != kNil && !used(hint) ? hint : next_free();
    used_[i / 64] |= std::uint64_t{1} << (i % 64);
    links_[i] = {kNil, kNil};
    ++size_;
    return static_cast<std::uint32_t>(i);
  }

  void insert(std::uint32_t idx, std::uint32_t h) noexcept {
    at(idx).hash = h;
    std::size_t i = reduce(h, nslots_);
    while (slots_[i].idx1 != 0)
      if (++i == nslots_) i = 0;
    slots_[i] = {h, idx + 1};
  }

  // Removes the flow from the index and the wheel and frees it.
  void release(std::uint32_t idx) noexcept {
    Flow& f = at(idx);
    std::size_t i = reduce(f.hash, nslots_);
    while (slots_[i].idx1 != idx + 1)
      if (++i == nslots_) i = 0;
    // Backward-shift deletion: pull later members of the cluster into the hole unless
    // their home lies cyclically in (hole, position].
    std::size_t j = i;
    for (;;) {
      if (++j == nslots_) j = 0;
      if (slots_[j].idx1 == 0) break;
      const std::size_t home = reduce(slots_[j].hash, nslots_);
      const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (!stays) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i] = {0, 0};
    unlink(idx);
    f.state = FlowState::kFree;
    used_[idx / 64] &= ~(std::uint64_t{1} << (idx % 64));
    --size_;
  }

  // Empties everything (the caller has emitted what it wanted); back to the initial size.
  void clear() noexcept {
    if (cur_ != std::min(cap_, kInitialFlows)) {
      cur_ = std::min(cap_, kInitialFlows);
      nslots_ = std::max<std::size_t>(16, cur_ * kSlotsPerFlow);
      slots_ = MmapArray<Slot>(nslots_);
    }
    slots_.zero();
    flows_.zero();
    links_.zero();
    used_.zero();
    scan_ = 0;
    size_ = 0;
    reset_wheel();
  }

  // --- wheel ---------------------------------------------------------------------------
  // (Re)places a flow at deadline d, which must not be later than its real deadline.
  void schedule(std::uint32_t idx, Nanos d) noexcept {
    unlink(idx);
    std::int64_t b = d >> shift_;
    if (b < cursor_) b = cursor_;
    if (b > cursor_ + static_cast<std::int64_t>(kBuckets) - 1)
      b = cursor_ + static_cast<std::int64_t>(kBuckets) - 1;
    if (b == cursor_) cur_min_ = std::min(cur_min_, d);
    link_tail(idx, sentinel(b));
  }

  // Sets the wheel's present on the first packet.
  void start(Nanos now) noexcept {
    if (started_) return;
    started_ = true;
    cursor_ = now >> shift_;
  }

  bool started() const noexcept { return started_; }

  // False when advance(now) would surely fire nothing (nothing can be due by now).
  bool may_fire(Nanos now) const noexcept { return (now >> shift_) > cursor_ || now >= cur_min_; }

  // Fires, in deadline order (bucket by bucket), every flow whose real deadline is <= now.
  // deadline(idx) gives a flow's real deadline; fire(idx, now) must release the flow or
  // schedule() it at a deadline > now.
  template <class Deadline, class Fire>
  void advance(Nanos now, Deadline&& deadline, Fire&& fire) {
    const std::int64_t cur = now >> shift_;
    if (cur > cursor_) {
      const std::int64_t n = static_cast<std::int64_t>(kBuckets);
      if (cur - cursor_ < n) {
        // Bucket by bucket: what is due and placed here fires; what is due later in the
        // gap moves to its own bucket and fires from there, in order.
        for (std::int64_t b = cursor_;; ++b) {
          cursor_ = b;
          b = next_nonempty(b);
          if (b < 0 || b >= cur) break;
          cursor_ = b;
          drain(b, now, /*in_order=*/true, deadline, fire);
        }
      } else {
        // A gap longer than the wheel: visit each bucket once, oldest first; everything
        // due fires, in the order of the buckets it was placed in.
        const std::int64_t from = cursor_;
        cursor_ = cur;
        for (std::int64_t s = 0; s < n; ++s)
          if (nonempty(from + s)) drain(from + s, now, false, deadline, fire);
      }
      cursor_ = cur;
      cur_min_ = kNanosMin;  // the present bucket is unknown: scan it now
    }
    if (now >= cur_min_) {
      cur_min_ = kNanosMax;
      drain(cur, now, false, deadline, fire);
    }
  }

  // The flow to evict: the first correctly placed flow in the earliest non-empty bucket,
  // i.e. the flow whose timer is due soonest (at bucket granularity). kNil if none.
  template <class Deadline>
  std::uint32_t victim(Deadline&& deadline) noexcept {
    for (std::int64_t b = next_nonempty(cursor_); b >= 0; b = next_nonempty(b + 1)) {
      const std::uint32_t s = sentinel(b);
      while (links_[s].next != s) {
        const std::uint32_t e = links_[s].next;
        const Nanos d = deadline(e);
        const std::int64_t rb =
            std::min<std::int64_t>(d >> shift_, cursor_ + static_cast<std::int64_t>(kBuckets) - 1);
        if (rb <= b) return e;
        schedule(e, d);  // placed too early: move it to its bucket and look further
      }
    }
    return kNil;
  }

  template <class F>
  void for_each(F&& f) {
    for (std::size_t w = 0; w < used_.size(); ++w)
      for (std::uint64_t bits = used_[w]; bits != 0; bits &= bits - 1)
        f(static_cast<std::uint32_t>(w * 64 + static_cast<std::size_t>(std::countr_zero(bits))));
  }

  int shift() const noexcept { return shift_; }

 private:
  // Doubles the capacity (up to cap_) and rebuilds the index for it.
  void grow() noexcept {
    const std::size_t old = cur_;
    cur_ = std::min(cap_, cur_ * 2);
    const std::size_t n = std::max<std::size_t>(16, cur_ * kSlotsPerFlow);
    MmapArray<Slot> fresh(n);
    for (std::size_t j = 0; j < nslots_; ++j) {
      const Slot s = slots_[j];
      if (s.idx1 == 0) continue;
      std::size_t i = reduce(s.hash, n);
      while (fresh[i].idx1 != 0)
        if (++i == n) i = 0;
      fresh[i] = s;
    }
    slots_ = std::move(fresh);
    nslots_ = n;
    scan_ = old / 64;  // the free positions are the new ones
  }
  bool used(std::size_t i) const noexcept { return (used_[i / 64] >> (i % 64)) & 1; }
  void prefetch_flow(std::size_t i) const noexcept {
    // The lines a packet touches: the whole flow (state, key, times, counters) and its
    // chains' state, stride_ bytes from p.
    // (Address arithmetic in integers: i may be one before the array, see prefetch_indexed.)
    const auto* p = reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(flows_.data()) +
                                                  i * stride_);
    // GCC 12 dropped these prefetches once the stride became a run-time value (callers'
    // results no longer depend on them): the address as an input of an empty volatile asm
    // keeps them (perf annotate: 60 % of on_packets stalled on the flow's first load without).
    __builtin_prefetch(p);
    __builtin_prefetch(p + 64);
    if (stride_ > 136) __builtin_prefetch(p + 128);
    __builtin_prefetch(p + stride_ - 1);
    asm volatile("" : : "r"(p) : "memory");
  }
  // The first free flow below cur_ from scan_ on (wrapping); the table is not full.
  std::size_t next_free() noexcept {
    const std::size_t words = (cur_ + 63) / 64;
    if (scan_ >= words) scan_ = 0;
    for (std::size_t n = 0; n <= words; ++n) {
      const std::uint64_t bits = ~used_[scan_];
      if (bits != 0) {
        const std::size_t i = scan_ * 64 + static_cast<std::size_t>(std::countr_zero(bits));
        if (i < cur_) return i;
      }
      if (++scan_ == words) scan_ = 0;
    }
    return 0;  // unreachable while size_ < cap_
  }
  std::uint32_t sentinel(std::int64_t b) const noexcept {
    return static_cast<std::uint32_t>(cap_ + (static_cast<std::uint64_t>(b) & (kBuckets - 1)));
  }
  void link_tail(std::uint32_t idx, std::uint32_t s) noexcept {
    const std::uint32_t last = links_[s].prev;
    links_[idx] = {last, s};
    links_[last].next = idx;
    links_[s].prev = idx;
    mark(s - cap_, true);
  }
  void unlink(std::uint32_t idx) noexcept {
    Link& l = links_[idx];
    if (l.prev == kNil) return;
    links_[l.prev].next = l.next;
    links_[l.next].prev = l.prev;
    if (l.prev == l.next && l.prev >= cap_) mark(l.prev - cap_, false);  // bucket now empty
    l = {kNil, kNil};
  }
  void mark(std::size_t slot, bool on) noexcept {
    const std::uint64_t bit = std::uint64_t{1} << (slot % 64);
    nonempty_[slot / 64] = on ? nonempty_[slot / 64] | bit : nonempty_[slot / 64] & ~bit;
  }
  bool nonempty(std::int64_t b) const noexcept {
    const auto slot = static_cast<std::size_t>(static_cast<std::uint64_t>(b) & (kBuckets - 1));
    return (nonempty_[slot / 64] >> (slot % 64)) & 1;
  }
  // The first non-empty bucket in [from, cursor_ + kBuckets), or -1.
  std::int64_t next_nonempty(std::int64_t from) const noexcept {
    const std::int64_t end = cursor_ + static_cast<std::int64_t>(kBuckets);
    for (std::int64_t b = from; b < end;) {
      const auto slot = static_cast<std::size_t>(static_cast<std::uint64_t>(b) & (kBuckets - 1));
      const std::uint64_t bits = nonempty_[slot / 64] >> (slot % 64);
      if (bits != 0) {
        const std::int64_t found = b + std::countr_zero(bits);
        return found < end ? found : -1;
      }
      b += static_cast<std::int64_t>(64 - slot % 64);
    }
    return -1;
  }
  void reset_wheel() noexcept {
    for (std::size_t b = 0; b < kBuckets; ++b) {
      const auto s = static_cast<std::uint32_t>(cap_ + b);
      links_[s] = {s, s};
    }
    nonempty_.fill(0);
    cur_min_ = kNanosMax;
  }

  // Visits bucket b: detaches its list, then fires each flow that is due (when in_order,
  // only if its real deadline also falls in b; later ones move ahead), re-places the rest.
  template <class Deadline, class Fire>
  void drain(std::int64_t b, Nanos now, bool in_order, Deadline& deadline, Fire& fire) {
    const std::uint32_t s = sentinel(b);
    if (links_[s].next == s) return;
    std::uint32_t e = links_[s].next;
    const std::uint32_t last = links_[s].prev;
    links_[s] = {s, s};
    mark(s - cap_, false);
    for (;;) {
      const std::uint32_t next = links_[e].next;
      links_[e] = {kNil, kNil};
      const Nanos d = deadline(e);
      if (d <= now && (!in_order || (d >> shift_) <= b))
        fire(e, now);
      else
        schedule(e, d);
      if (e == last) break;
      e = next;
    }
  }

  Flow& at(std::size_t i) noexcept { return *reinterpret_cast<Flow*>(flows_.data() + i * stride_); }
  const Flow& at(std::size_t i) const noexcept {
    return *reinterpret_cast<const Flow*>(flows_.data() + i * stride_);
  }

  std::size_t stride_;  // bytes per flow: the Flow and its chains' state
  std::size_t cap_, cur_, nslots_;
  std::uint64_t tail_mask_;                              // the VLAN is compared only when keyed on
  MmapArray<std::byte> flows_;                           // Flow + state, stride_ bytes each
  MmapArray<Link> links_;                                // flows, then one sentinel per bucket
  std::array<std::uint64_t, kBuckets / 64> nonempty_{};  // buckets with a flow
  MmapArray<Slot> slots_;
  MmapArray<std::uint64_t> used_;  // occupancy of flows_
  std::size_t scan_ = 0;           // next_free() resumes here
  std::size_t size_ = 0;
  int shift_ = 20;
  bool started_ = false;
  std::int64_t cursor_ = 0;    // the bucket holding the present
  Nanos cur_min_ = kNanosMax;  // no flow in the present bucket is due before this
};

}  // namespace flowmark::observe::detail
