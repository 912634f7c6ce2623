#include "flowmark/daemon/flow_table.hpp"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace flowmark::daemon {

namespace {

constexpr std::uint32_t kIdMask = (std::uint32_t{1} << 24) - 1;

std::uint32_t tag_of(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h >> 56); }

}  // namespace

void FlowTable::Unmap::operator()(void* p) const noexcept { ::munmap(p, bytes); }

// Page-aligned: an entry is a cache line.
template <typename T>
FlowTable::Pages<T> FlowTable::map_pages(std::size_t n) {
  const std::size_t bytes = n * sizeof(T);
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return Pages<T>(static_cast<T*>(p), Unmap{bytes});
}

FlowTable::~FlowTable() = default;

FlowTable::Packed FlowTable::pack(const FlowKey& key) noexcept {
  Packed p;
  std::memset(&p, 0, sizeof p);
  std::memcpy(p.src.data(), key.src.address.bytes(), 16);
  std::memcpy(p.dst.data(), key.dst.address.bytes(), 16);
  p.src_port = key.src.port;
  p.dst_port = key.dst.port;
  p.protocol = static_cast<std::uint8_t>(key.protocol);
  p.bits = static_cast<std::uint8_t>((key.src.address.is_v6() ? kSrcV6 : 0) |
                                     (key.dst.address.is_v6() ? kDstV6 : 0));
  return p;
}

std::uint64_t FlowTable::hash(const Packed& k) noexcept {
  auto word = [&](std::size_t i) {
    std::uint64_t w;
    std::memcpy(&w, reinterpret_cast<const std::uint8_t*>(&k) + 8 * i, 8);
    return w;
  };
  auto mix = [](std::uint64_t h) {
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
  };
  // Ports, protocol and the families' two bits (not the entry's flags, not its class).
  std::uint64_t h = mix(word(4) & 0x000003FFFFFFFFFFULL);
  for (std::size_t i = 0; i < 4; ++i) h = mix(h ^ word(i));
  return mix(h);
}

bool FlowTable::same(const Packed& a, const Packed& b) noexcept {
  return std::memcmp(&a, &b, offsetof(Packed, bits)) == 0 && ((a.bits ^ b.bits) & kFamilies) == 0;
}

FlowTable::Id FlowTable::find(const FlowKey& key) const noexcept {
  if (size_ == 0) return kNone;  // (and perhaps no index)
  const Packed k = pack(key);
  const std::uint64_t h = hash(k);
  const std::uint32_t tag = tag_of(h);
  for (std::size_t i = h & mask_;; i = (i + 1) & mask_) {
    const std::uint32_t v = index_[i];
    if (v == 0) return kNone;
    if ((v >> 24) == tag) {
      const Id id = (v & kIdMask) - 1;
      if (same(entry(id).key, k)) return id;
    }
  }
}

FlowTable::Id FlowTable::allocate() {
  if (free_ != kNone) {
    const Id id = free_;
    free_ = entry(id).older;
    return id;
  }
  if (used_ids_ >= kMaxFlows) throw std::length_error("flow table full");
  if ((used_ids_ >> kChunkBits) >= chunks_.size()) {
    chunks_.push_back(map_pages<Entry>(kChunk));
  }
  return static_cast<Id>(used_ids_++);
}

void FlowTable::place(std::uint32_t slot_value, std::uint64_t h) noexcept {
  std::size_t i = h & mask_;
  while (index_[i] != 0) i = (i + 1) & mask_;
  index_[i] = slot_value;
}

void FlowTable::grow_index() {
  const std::size_t slots = mask_ == 0 ? 1024 : 2 * (mask_ + 1);
  Pages<std::uint32_t> fresh = map_pages<std::uint32_t>(slots);  // zeroed: every slot empty
  Pages<std::uint32_t> old = std::move(index_);
  const std::size_t old_slots = old ? mask_ + 1 : 0;
  index_ = std::move(fresh);
  mask_ = slots - 1;
  for (std::size_t i = 0; i < old_slots; ++i) {
    const std::uint32_t v = old[i];
    if (v != 0) place(v, hash(entry((v & kIdMask) - 1).key));
  }
}

std::optional<FlowTable::Offset48> FlowTable::offset_of(Micros t) const noexcept {
  Micros d;
  if (__builtin_sub_overflow(t, base_, &d) || d < -kTimeRange || d >= kTimeRange) {
    return std::nullopt;
  }
  const auto u = static_cast<std::uint64_t>(d);
  return Offset48{static_cast<std::uint32_t>(u), static_cast<std::uint16_t>(u >> 32)};
}

Micros FlowTable::time_at(std::uint32_t low, std::uint16_t high) const noexcept {
  // Sign-extended from 48 bits; base_ + d stays within the Micros it was made from.
  const std::uint64_t u = (std::uint64_t{high} << 32 | low) << 16;
  return base_ + (static_cast<Micros>(u) >> 16);
}

FlowTable::Id FlowTable::insert(const FlowKey& key, Micros now) {
  if (!index_ || 16 * (size_ + 1) > 13 * (mask_ + 1)) grow_index();
  if (size_ == 0) base_ = now;
  const Id id = allocate();
  Entry& e = entry(id);
  e.key = pack(key);
  e.holders = 0;
  const std::uint64_t h = hash(e.key);
  place((tag_of(h) << 24) | (id + 1), h);
  ++size_;
  link_newest(id);
  try {
    set_last_event(e, id, now);
    e.start_low = e.last_low;  // the start time `now` until set
    e.start_high = e.last_high;
    if (e.key.bits & kOutsideLast) {
      outside_[id].start_time = now;
      e.key.bits |= kOutsideStart;
    }
    if (key.src.address.scope_id() != 0 || key.dst.address.scope_id() != 0) {
      Outside& o = outside_[id];
      o.src_scope = key.src.address.scope_id();
      o.dst_scope = key.dst.address.scope_id();
      e.key.bits |= kScoped;
    }
  } catch (...) {
    erase(id);
    throw;
  }
  return id;
}

void FlowTable::erase(Id id) noexcept {
  Entry& e = entry(id);
  const std::uint64_t h = hash(e.key);
  const std::uint32_t want = (tag_of(h) << 24) | (id + 1);
  std::size_t i = h & mask_;
  while (index_[i] != want) i = (i + 1) & mask_;
  // Backward shift: later entries of the run move up into the hole when their home allows.
  for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
    const std::uint32_t v = index_[j];
    if (v == 0) break;
    const std::size_t home = hash(entry((v & kIdMask) - 1).key) & mask_;
    // v may move to i when its home is not in the cyclic range (i, j].
    if (((j - home) & mask_) >= ((j - i) & mask_)) {
      index_[i] = v;
      i = j;
    }
  }
  index_[i] = 0;
  if (e.key.bits & kOutside) outside_.erase(id);
  unlink(id);
  e.older = free_;
  free_ = id;
  if (--size_ == 0) clear_all();
}

// The table is empty: after a burst its memory goes back (a burst of flows leaves nothing
// behind); a small table is kept, so that one flow at a time allocates nothing.
void FlowTable::clear_all() noexcept {
  if (chunks_.size() > 1 || mask_ + 1 > 1024) {
    chunks_.clear();
    index_.reset();
    mask_ = 0;
  }
  if (usages_.size() > 1) usages_.clear();
  used_ids_ = 0;
  free_ = kNone;
  oldest_ = newest_ = kNone;
  outside_.clear();
}

void FlowTable::unlink(Id id) noexcept {
  Entry& e = entry(id);
  if (e.older != kNone) entry(e.older).newer = e.newer;
  if (e.newer != kNone) entry(e.newer).older = e.older;
  if (oldest_ == id) oldest_ = e.newer;
  if (newest_ == id) newest_ = e.older;
}

void FlowTable::link_newest(Id id) noexcept {
  Entry& e = entry(id);
  e.older = newest_;
  e.newer = kNone;
  if (newest_ != kNone) entry(newest_).newer = id;
  newest_ = id;
  if (oldest_ == kNone) oldest_ = id;
}

void FlowTable::touch(Id id, Micros now) {
  set_last_event(entry(id), id, now);
  if (newest_ == id) return;
  unlink(id);
  link_newest(id);
}

Micros FlowTable::start_time(Id id) const noexcept {
  const Entry& e = entry(id);
  if (e.key.bits & kOutsideStart) return outside_.find(id)->second.start_time;
  return time_at(e.start_low, e.start_high);
}

void FlowTable::set_start_time(Id id, Micros t) {
  Entry& e = entry(id);
  store_time(e, id, t, e.start_low, e.start_high, &Outside::start_time, kOutsideStart);
}

Micros FlowTable::last_event(Id id) const noexcept {
  const Entry& e = entry(id);
  if (e.key.bits & kOutsideLast) return outside_.find(id)->second.last_event;
  return time_at(e.last_low, e.last_high);
}

void FlowTable::set_last_event(Entry& e, Id id, Micros t) {
  store_time(e, id, t, e.last_low, e.last_high, &Outside::last_event, kOutsideLast);
}

void FlowTable::store_time(Entry& e, Id id, Micros t, std::uint32_t& low, std::uint16_t& high,
                           Micros Outside::*side, std::uint8_t flag) {
  if (const auto o = offset_of(t)) {
    low = o->low;
    high = o->high;
    if (e.key.bits & flag) {  // back in range: the side map keeps only what still needs it
      e.key.bits &= static_cast<std::uint8_t>(~flag);
      if ((e.key.bits & kOutside) == 0) outside_.erase(id);
    }
    return;
  }
  outside_[id].*side = t;
  e.key.bits |= flag;
}

std::uint32_t FlowTable::experiment(Id id) const noexcept {
  const Entry& e = entry(id);
  if (e.key.bits & kOutsideClass) return outside_.find(id)->second.experiment;
  return e.key.cls >> 6;
}

std::uint32_t FlowTable::activity(Id id) const noexcept {
  const Entry& e = entry(id);
  if (e.key.bits & kOutsideClass) return outside_.find(id)->second.activity;
  return e.key.cls & 63;
}

void FlowTable::set_class(Id id, std::uint32_t experiment, std::uint32_t activity) {
  Entry& e = entry(id);
  if (experiment <= 511 && activity <= 63) {
    e.key.cls = static_cast<std::uint16_t>(experiment << 6 | activity);
    if (e.key.bits & kOutsideClass) {
      e.key.bits &= ~kOutsideClass;
      if ((e.key.bits & kOutside) == 0) outside_.erase(id);
    }
    return;
  }
  Outside& o = outside_[id];
  o.experiment = experiment;
  o.activity = activity;
  e.key.bits |= kOutsideClass;
}

std::optional<scitags::Usage> FlowTable::usage(Id id) const noexcept {
  if ((entry(id).key.bits & kHasUsage) == 0) return std::nullopt;
  return usages_[id >> kChunkBits][id & (kChunk - 1)];
}

void FlowTable::set_usage(Id id, const std::optional<scitags::Usage>& usage) {
  Entry& e = entry(id);
  if (!usage) {
    e.key.bits &= ~kHasUsage;
    return;
  }
  const std::size_t chunk = id >> kChunkBits;
  if (chunk >= usages_.size()) usages_.resize(chunk + 1);
  if (!usages_[chunk]) usages_[chunk] = map_pages<scitags::Usage>(kChunk);
  usages_[chunk][id & (kChunk - 1)] = *usage;
  e.key.bits |= kHasUsage;
}

FlowKey FlowTable::key(Id id) const {
  const Packed& p = entry(id).key;
  auto address = [](const std::array<std::uint8_t, 16>& b, bool v6, std::uint32_t scope) {
    if (v6) {
      in6_addr a;
      std::memcpy(&a, b.data(), 16);
      return IpAddress::v6(a, scope);
    }
    std::uint32_t host = 0;
    for (int i = 0; i < 4; ++i) host = host << 8 | b[static_cast<std::size_t>(i)];
    return IpAddress::v4(host);
  };
  std::pair<std::uint32_t, std::uint32_t> scope{0, 0};
  if (p.bits & kScoped) {
    const Outside& o = outside_.at(id);
    scope = {o.src_scope, o.dst_scope};
  }
  FlowKey k;
  k.protocol = static_cast<scitags::Protocol>(p.protocol);
  k.src = {address(p.src, (p.bits & kSrcV6) != 0, scope.first), p.src_port};
  k.dst = {address(p.dst, (p.bits & kDstV6) != 0, scope.second), p.dst_port};
  return k;
}

}  // namespace flowmark::daemon
