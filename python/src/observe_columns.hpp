// The records of flowmark.observe() kept in typed columns (python/src/observe.cpp): one
// vector per record field, the chains' fields as bools or numbers with a null mask (from
// FieldVisitor), each vector later handed to numpy without a copy.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/observe/chain.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"

namespace flowmark::python {

using observe::FlowRecord;

// The packet-clock time as the JSON writes it (seconds with nine decimals) read back as a
// float: the double nearest to t / 1e9 (ties to even), exactly as Python's float() of the
// JSON text (observe_columns.cpp).
double seconds(observe::Nanos t) noexcept;

// Memory for the columns: blocks of 1 MiB or more are mapped with MAP_POPULATE, their pages
// made in one call rather than one fault each as they are first written (the columns of a
// million records, ~120 MB, are filled at once when the observer finishes; page by page, the
// faults cost about as much as the filling in a virtual machine).
template <class T>
struct ColumnAlloc {
  using value_type = T;
  static constexpr std::size_t kBig = std::size_t{1} << 20;
  ColumnAlloc() = default;
  template <class U>
  ColumnAlloc(const ColumnAlloc<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kBig) return static_cast<T*>(::operator new(bytes));
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    if (bytes < kBig) return ::operator delete(p);
    munmap(p, bytes);
  }
  template <class U>
  bool operator==(const ColumnAlloc<U>&) const noexcept {
    return true;
  }
};
template <class T>
using Column = std::vector<T, ColumnAlloc<T>>;

// A chain field's values: what FieldVisitor handed over for each record.
enum class Kind : std::uint8_t { kNull = 0, kBool, kNumber, kText };

// One chain field over the records. Stored by the kind its chain writes it in (probed at
// set-up): bools or numbers, with a null mask; a text column, one whose kind the probes did not
// show, or one that gets values of another kind (no built-in chain does that) is generic: a
// kind and a value (the text's index for text) per record.
struct ChainColumn {
  std::string name;
  Kind kind = Kind::kNull;  // the probed kind
  bool generic = true;
  Column<std::uint8_t> mask;        // 1 where null
  Column<std::uint8_t> bools;       // kind kBool, not generic
  Column<std::uint64_t> numbers;    // kind kNumber, or generic values
  Column<Kind> kinds;               // generic
  const char* last_name = nullptr;  // the name's text as the chain last passed it

  void reserve(std::size_t n) {
    mask.reserve(n);
    if (generic) {
      kinds.reserve(n);
      numbers.reserve(n);
    } else if (kind == Kind::kBool) {
      bools.reserve(n);
    } else {
      numbers.reserve(n);
    }
  }
  void clear() noexcept {
    mask.clear();
    bools.clear();
    numbers.clear();
    kinds.clear();
  }
  [[gnu::always_inline, gnu::flatten]] void put(Kind k, std::uint64_t v) {
    if (!generic && k != Kind::kNull && k != kind) to_generic();
    mask.push_back(k == Kind::kNull ? 1 : 0);
    if (generic) {
      kinds.push_back(k);
      numbers.push_back(v);
    } else if (kind == Kind::kBool) {
      bools.push_back(k == Kind::kNull ? 0 : static_cast<std::uint8_t>(v != 0));
    } else {
      numbers.push_back(k == Kind::kNull ? 0 : v);
    }
  }
  void to_generic() {
    kinds.clear();
    for (std::size_t i = 0; i < mask.size(); ++i) kinds.push_back(mask[i] ? Kind::kNull : kind);
    if (kind == Kind::kBool) numbers.assign(bools.begin(), bools.end());
    bools.clear();
    generic = true;
  }
  // The value of record i as Python has it.
  Kind kind_at(std::size_t i) const noexcept {
    return generic ? kinds[i] : mask[i] ? Kind::kNull : kind;
  }
  std::uint64_t value_at(std::size_t i) const noexcept {
    return !generic && kind == Kind::kBool ? bools[i] : numbers[i];
  }
};

// The record's own fields, one vector each, in the types the arrays have.
struct BaseColumns {
  // Addresses as their 16 bytes (IPv4: the first 4) and a family byte (bit 0: sip is IPv6,
  // bit 1: dip is), not as IpAddress (24 bytes each).
  Column<std::array<std::uint8_t, 16>> sip, dip;
  Column<std::uint8_t> families;
  Column<std::uint8_t> proto, ip_version, tcp_flags_fwd, tcp_flags_rev;
  Column<std::uint8_t> continuation, no_ports;  // numpy bool
  Column<std::uint16_t> sp, dp, vlan;           // sp, dp: 0 without ports
  Column<double> first, last;
  Column<std::uint64_t> pkt_fwd, pkt_rev, oct_fwd, oct_rev;
  Column<std::uint32_t> fragments, icmp_errors;

  template <class F>
  void each(F&& f) {
    f(sip), f(dip), f(families), f(proto), f(ip_version), f(tcp_flags_fwd), f(tcp_flags_rev);
    f(continuation), f(no_ports), f(sp), f(dp), f(vlan), f(first), f(last);
    f(pkt_fwd), f(pkt_rev), f(oct_fwd), f(oct_rev), f(fragments), f(icmp_errors);
  }
  static std::array<std::uint8_t, 16> bytes_of(const IpAddress& a) noexcept {
    std::array<std::uint8_t, 16> b{};
    std::memcpy(b.data(), a.bytes(), a.size());
    return b;
  }
  [[gnu::flatten]] void add(const FlowRecord& r) {
    sip.push_back(bytes_of(r.sip));
    dip.push_back(bytes_of(r.dip));
    families.push_back(
        static_cast<std::uint8_t>((r.sip.is_v6() ? 1 : 0) | (r.dip.is_v6() ? 2 : 0)));
    proto.push_back(r.proto);
    ip_version.push_back(r.ip_version);
    tcp_flags_fwd.push_back(r.tcp_flags_fwd);
    tcp_flags_rev.push_back(r.tcp_flags_rev);
    continuation.push_back(r.continuation ? 1 : 0);
    no_ports.push_back(r.has_ports ? 0 : 1);
    sp.push_back(r.has_ports ? r.sp : 0);
    dp.push_back(r.has_ports ? r.dp : 0);
    vlan.push_back(r.vlan);
    first.push_back(seconds(r.first));
    last.push_back(seconds(r.last));
    pkt_fwd.push_back(r.pkt_fwd);
    pkt_rev.push_back(r.pkt_rev);
    oct_fwd.push_back(r.oct_fwd);
    oct_rev.push_back(r.oct_rev);
    fragments.push_back(r.fragments);
    icmp_errors.push_back(r.icmp_errors);
  }
};

// The records an observer emitted, in columns: the record's own fields, and the chains'
// fields as values (one FieldVisitor call each).
class RecordColumns final : public observe::FieldVisitor {
 public:
  // The chains' columns and their kinds, found by having each chain write states of a few
  // byte patterns (the built-in chains give each column one kind).
  void set_up(const observe::Observer& obs) {
    for (const auto& chain : obs.chains()) {
      const std::size_t first = columns_.size();
      for (auto& name : chain->columns()) {
        index_.emplace(name, columns_.size());
        ChainColumn c;
        c.name = std::move(name);
        columns_.push_back(std::move(c));
      }
      alignas(8) std::byte state[512];
      const std::size_t size = std::min(chain->state_size(), sizeof state);
      for (const std::byte pattern :
           {std::byte{0xff}, std::byte{0x00}, std::byte{0x55}, std::byte{0xaa}, std::byte{0x01}}) {
        std::memset(state, static_cast<int>(pattern), size);
        probe_at_ = first;
        probing_ = true;
        observe::FieldWriter w(*this);
        chain->write(FlowRecord{}, state, w);
        probing_ = false;
      }
    }
    for (auto& c : columns_) c.generic = !(c.kind == Kind::kBool || c.kind == Kind::kNumber);
  }

  void reserve(std::size_t n) {
    base_.each([n](auto& v) { v.reserve(n); });
    for (auto& c : columns_) c.reserve(n);
  }

  void add(const FlowRecord& r, const observe::Observer& obs) {
    base_.add(r);
    ++rows_;
    at_ = 0;
    observe::visit_chain_fields(r, obs, *this);
    // A chain that wrote fewer fields than its columns (none does): nulls for the rest.
    for (auto& c : columns_) {
      if (c.mask.size() < rows_) c.put(Kind::kNull, 0);
    }
  }

  std::size_t size() const noexcept { return rows_; }
  BaseColumns& base() noexcept { return base_; }
  const BaseColumns& base() const noexcept { return base_; }
  std::vector<ChainColumn>& columns() noexcept { return columns_; }
  const std::vector<ChainColumn>& columns() const noexcept { return columns_; }
  const std::string& text(std::uint64_t i) const noexcept { return texts_[i]; }

  void clear() noexcept {
    base_.each([](auto& v) { v.clear(); });
    texts_.clear();
    for (auto& c : columns_) c.clear();
    rows_ = 0;
  }

  // FieldVisitor: the k-th field of a record is the k-th column when the chains write their
  // columns in order (they do); else it is found by name.
  void null(std::string_view name) override { field(name, Kind::kNull, 0); }
  void boolean(std::string_view name, bool v) override { field(name, Kind::kBool, v ? 1 : 0); }
  void number(std::string_view name, std::uint64_t v) override { field(name, Kind::kNumber, v); }
  void text(std::string_view name, std::string_view v) override {
    if (probing_) return field(name, Kind::kText, 0);
    texts_.emplace_back(v);
    field(name, Kind::kText, texts_.size() - 1);
  }

 private:
  void field(std::string_view name, Kind kind, std::uint64_t value) {
    std::size_t& at = probing_ ? probe_at_ : at_;
    std::size_t i = at;
    // The chains pass the same constant names record after record: a column remembers the
    // last pointer it matched (with the name's length), which spares comparing the text.
    if (i >= columns_.size() ||
        ((columns_[i].last_name != name.data() || columns_[i].name.size() != name.size()) &&
         columns_[i].name != name)) {
      auto it = index_.find(std::string(name));
      if (it == index_.end()) return;  // a field its chain did not list among its columns
      i = it->second;
    }
    ChainColumn& c = columns_[i];
    c.last_name = name.data();
    at = i + 1;
    if (probing_) {
      if (kind != Kind::kNull && c.kind == Kind::kNull) c.kind = kind;
      return;
    }
    if (c.mask.size() >= rows_) return;  // a second value for one record
    c.put(kind, value);
  }

  BaseColumns base_;
  std::size_t rows_ = 0;
  std::vector<ChainColumn> columns_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::string> texts_;
  std::size_t at_ = 0, probe_at_ = 0;
  bool probing_ = false;
};

}  // namespace flowmark::python
