#include "flowmark/daemon/flow_table.hpp"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

namespace flowmark::daemon {

namespace {

constexpr std::uint32_t kIdMask = (std::uint32_t{1} << 24) - 1;

std::uint32_t tag_of(std::uint64_t h) noexcept { return static_cast<std::uint32_t>(h >> 56); }

}  // namespace

// malloc, not new Entry[]: a chunk's pages become resident only as its entries are used.
void FlowTable::FreeChunk::operator()(Entry* p) const noexcept { std::free(p); }

FlowTable::~FlowTable() = default;

FlowTable::Packed FlowTable::pack(const FlowKey& key) noexcept {
  Packed p;
  std::memset(&p, 0, sizeof p);
  std::memcpy(p.src.data(), key.src.address.bytes(), 16);
  std::memcpy(p.dst.data(), key.dst.address.bytes(), 16);
  p.src_port = key.src.port;
  p.dst_port = key.dst.port;
  p.protocol = static_cast<std::uint8_t>(key.protocol);
  p.families = static_cast<std::uint8_t>((key.src.address.is_v6() ? 1 : 0) |
                                         (key.dst.address.is_v6() ? 2 : 0));
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
  std::uint64_t h = mix(word(4) & 0x0000FFFFFFFFFFFFULL);  // ports, protocol, families
  for (std::size_t i = 0; i < 4; ++i) h = mix(h ^ word(i));
  return mix(h);
}

bool FlowTable::same(const Packed& a, const Packed& b) noexcept {
  // `scoped` and `pad` are not part of the key.
  return std::memcmp(&a, &b, offsetof(Packed, scoped)) == 0;
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
    void* p = std::malloc(kChunk * sizeof(Entry));
    if (!p) throw std::bad_alloc();
    chunks_.emplace_back(static_cast<Entry*>(p));
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
  std::unique_ptr<std::uint32_t[]> old = std::move(index_);
  const std::size_t old_slots = old ? mask_ + 1 : 0;
  index_ = std::make_unique<std::uint32_t[]>(slots);
  mask_ = slots - 1;
  for (std::size_t i = 0; i < old_slots; ++i) {
    const std::uint32_t v = old[i];
    if (v != 0) place(v, hash(entry((v & kIdMask) - 1).key));
  }
}

FlowTable::Id FlowTable::insert(const FlowKey& key) {
  if (!index_ || 16 * (size_ + 1) > 13 * (mask_ + 1)) grow_index();
  const Id id = allocate();
  Entry& e = entry(id);
  e.key = pack(key);
  e.flow = Flow{};
  const std::uint64_t h = hash(e.key);
  place((tag_of(h) << 24) | (id + 1), h);
  if (key.src.address.scope_id() != 0 || key.dst.address.scope_id() != 0) {
    e.key.scoped = 1;
    scopes_[id] = {key.src.address.scope_id(), key.dst.address.scope_id()};
  }
  ++size_;
  link_newest(id);
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
  if (e.key.scoped) scopes_.erase(id);
  if (e.flow.usage_slot != 0) free_usages_.push_back(e.flow.usage_slot);
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
  usage_slots_ = 0;
  free_usages_.clear();
  free_usages_.shrink_to_fit();
  used_ids_ = 0;
  free_ = kNone;
  oldest_ = newest_ = kNone;
  scopes_.clear();
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

void FlowTable::touch(Id id) noexcept {
  if (newest_ == id) return;
  unlink(id);
  link_newest(id);
}

std::optional<scitags::Usage> FlowTable::usage(Id id) const noexcept {
  const std::uint32_t slot = entry(id).flow.usage_slot;
  if (slot == 0) return std::nullopt;
  return usage_at(slot);
}

void FlowTable::set_usage(Id id, const std::optional<scitags::Usage>& usage) {
  std::uint32_t& slot = entry(id).flow.usage_slot;
  if (!usage) {
    if (slot != 0) free_usages_.push_back(slot);
    slot = 0;
    return;
  }
  if (slot == 0) {
    if (!free_usages_.empty()) {
      slot = free_usages_.back();
      free_usages_.pop_back();
    } else {
      if ((usage_slots_ >> kChunkBits) >= usages_.size()) {
        usages_.push_back(std::make_unique_for_overwrite<scitags::Usage[]>(kChunk));
      }
      slot = ++usage_slots_;
    }
  }
  usage_at(slot) = *usage;
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
  if (p.scoped) scope = scopes_.at(id);
  FlowKey k;
  k.protocol = static_cast<scitags::Protocol>(p.protocol);
  k.src = {address(p.src, (p.families & 1) != 0, scope.first), p.src_port};
  k.dst = {address(p.dst, (p.families & 2) != 0, scope.second), p.dst_port};
  return k;
}

}  // namespace flowmark::daemon
