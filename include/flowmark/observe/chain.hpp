// flowmark::observe — a chain: per-flow analysis with its own state and its own record fields
// (pathspider's chains, in C++). The built-in chains (chains.hpp) are ordinary ones.
//
// A chain declares how many bytes of state it keeps per flow; the observer keeps them next
// to the flow's record (zeroed when the flow starts, kept across active-timeout parts), so a
// chain costs memory only where it is registered. The observer calls the hooks the chain asks
// for (hooks()), with the packet's direction (rev: against the flow's first packet); any
// kComplete completes the flow. write() puts the chain's fields into the record's text.
//
//   class SynCount final : public Chain {
//     std::string_view name() const noexcept override { return "syn"; }
//     std::size_t state_size() const noexcept override { return 8; }
//     unsigned hooks() const noexcept override { return kHookTcp; }
//     std::vector<std::string> columns() const override { return {"syns"}; }
//     Verdict on_transport(FlowRecord&, std::byte* s, const PacketView& p, bool) noexcept
//         override { if (p.tcp_flags & 2) ++*reinterpret_cast<std::uint64_t*>(s);
//                    return Verdict::kContinue; }
//     void write(const FlowRecord&, const std::byte* s, FieldWriter& w) const override {
//       w.number("syns", *reinterpret_cast<const std::uint64_t*>(s)); }
//   };
//   observer.add_chain(std::make_unique<SynCount>());
#pragma once

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/observe/packet.hpp"

namespace flowmark::observe {

struct FlowRecord;

enum class Verdict : std::uint8_t { kContinue, kComplete };

// Receives a chain's fields as values rather than text (FieldWriter's third form): what the
// Python module builds dicts and columns from (python/src/observe.cpp).
class FieldVisitor {
 public:
  virtual ~FieldVisitor() = default;
  virtual void null(std::string_view name) = 0;
  virtual void boolean(std::string_view name, bool value) = 0;
  virtual void number(std::string_view name, std::uint64_t value) = 0;
  virtual void text(std::string_view name, std::string_view value) = 0;
};

// The columns of a record's chain fields (every chain's columns(), the chains in order) with
// their JSON prefixes `,"name":` made once, for FieldWriter (Observer::field_prefixes()).
class FieldPrefixes {
 public:
  FieldPrefixes() = default;
  explicit FieldPrefixes(std::span<const std::string> names);
  std::size_t size() const noexcept { return slots_.size(); }

 private:
  friend class FieldWriter;
  struct Slot {
    alignas(16) char text[32];  // `,"name":`, zero-padded (copied as 32 bytes)
    std::uint32_t length;       // of the prefix; 0 when it does not fit in text
  };
  std::vector<Slot> slots_;
};

// Appends a chain's fields to a record being written: `,"name":value` in JSON, `,value` in
// CSV (where a null is an empty field and the names are the header's, from columns()), or
// hands each to a FieldVisitor.
// Given a scratch buffer, the writer collects the fields there and appends them to `out`
// when it is full and when the writer ends (the record writers do: a record has ~70 fields
// with all chains); `out` is then complete once the writer is gone.
// Given the record's FieldPrefixes too, the n-th field's JSON prefix is copied whole from the
// n-th column's when the name written is that column's (compared byte for byte), else put
// together from the name as without them: the text is the same either way.
class FieldWriter {
 public:
  enum class Format : std::uint8_t { kJson, kCsv, kVisit };
  FieldWriter(std::string& out, Format format) noexcept : out_(&out), format_(format) {}
  FieldWriter(std::string& out, Format format, std::span<char> scratch,
              const FieldPrefixes* prefixes = nullptr) noexcept
      : out_(&out), format_(format), buf_(scratch.data()), cur_(buf_),
        end_(buf_ + scratch.size()) {
    if (prefixes != nullptr && format == Format::kJson) {
      slots_ = prefixes->slots_.data();
      ncolumns_ = prefixes->slots_.size();
    }
  }
  explicit FieldWriter(FieldVisitor& visitor) noexcept
      : format_(Format::kVisit), visitor_(&visitor) {}
  ~FieldWriter() { flush(); }
  FieldWriter(const FieldWriter&) = delete;
  FieldWriter& operator=(const FieldWriter&) = delete;

  // Inline: the common case (JSON, the name its column's, room in the buffer) is a copy of
  // the prefix and of the value; anything else goes to the *_slow() forms.
  void null(std::string_view name) {
    if (char* q = begin_known(name, 8)) [[likely]] {
      std::memcpy(q, "null", 4);
      cur_ = q + 4;
      return;
    }
    null_slow(name);
  }
  void boolean(std::string_view name, bool value) {
    if (char* q = begin_known(name, 8)) [[likely]] {
      std::memcpy(q, value ? "true\0\0\0" : "false\0\0", 8);
      cur_ = q + (value ? 4 : 5);
      return;
    }
    boolean_slow(name, value);
  }
  void number(std::string_view name, std::uint64_t value) {
    if (char* q = begin_known(name, 20)) [[likely]] {
      cur_ = std::to_chars(q, q + 20, value).ptr;
      return;
    }
    number_slow(name, value);
  }
  void text(std::string_view name, std::string_view value);  // escaped as JSON / CSV need

 private:
  // JSON with prefixes: the next column's prefix, when `name` is that column's and the
  // scratch buffer has room for it (32 bytes) and value_room more; returns where the value
  // goes, or nullptr (nothing done).
  [[gnu::always_inline]] char* begin_known(std::string_view name, std::size_t value_room) noexcept {
    if (column_ >= ncolumns_ || static_cast<std::size_t>(end_ - cur_) < 32 + value_room)
      return nullptr;
    const FieldPrefixes::Slot& s = slots_[column_];
    if (s.length != name.size() + 4 || !same_short(name.data(), s.text + 2, name.size()))
      return nullptr;
    ++column_;
    std::memcpy(cur_, s.text, sizeof s.text);
    return cur_ + s.length;
  }
  // The n bytes (n <= 28) at a and b are the same: compared with overlapping fixed-size loads
  // (for a name known when compiled, its bytes are constants).
  [[gnu::always_inline]] static bool same_short(const char* a, const char* b,
                                                std::size_t n) noexcept {
    auto load8 = [](const char* p) {
      std::uint64_t v;
      std::memcpy(&v, p, 8);
      return v;
    };
    auto load4 = [](const char* p) {
      std::uint32_t v;
      std::memcpy(&v, p, 4);
      return v;
    };
    if (n >= 16)
      return ((load8(a) ^ load8(b)) | (load8(a + 8) ^ load8(b + 8)) |
              (load8(a + n - 16) ^ load8(b + n - 16)) | (load8(a + n - 8) ^ load8(b + n - 8))) == 0;
    if (n >= 8) return ((load8(a) ^ load8(b)) | (load8(a + n - 8) ^ load8(b + n - 8))) == 0;
    if (n >= 4) return ((load4(a) ^ load4(b)) | (load4(a + n - 4) ^ load4(b + n - 4))) == 0;
    for (std::size_t i = 0; i < n; ++i)
      if (a[i] != b[i]) return false;
    return true;
  }
  void null_slow(std::string_view name);
  void boolean_slow(std::string_view name, bool value);
  void number_slow(std::string_view name, std::uint64_t value);
  // Starts a field in the scratch buffer from its name: `,"name":` (JSON) or `,` (CSV), with
  // value_room bytes free after it; returns where its value goes, or nullptr when the buffer
  // cannot hold it (no scratch buffer, or a very long name): then direct_field() appends it.
  char* begin_field(std::string_view name, std::size_t value_room) noexcept;
  void direct_field(std::string_view name, std::string_view value);
  void flush() {
    if (cur_ != buf_) out_->append(buf_, static_cast<std::size_t>(cur_ - buf_));
    cur_ = buf_;
  }
  std::string* out_ = nullptr;
  Format format_;
  FieldVisitor* visitor_ = nullptr;
  char* buf_ = nullptr;
  char* cur_ = nullptr;
  char* end_ = nullptr;
  const FieldPrefixes::Slot* slots_ = nullptr;  // JSON with prefixes only
  std::size_t ncolumns_ = 0;
  std::size_t column_ = 0;  // fields written so far: the index into slots_
};

// What the observer's fast path read of a packet without making a PacketView (Ethernet with
// at most two VLAN tags, IPv4 not fragmented or IPv6 without extension headers, TCP or UDP).
// A chain that can work from these alone says so (quick()); SYN segments (unless every chain
// has quick_syn()) and everything else come through the full hooks.
// (The fields after tcp_flags are filled only when a chain asks for them: quick_facts().)
struct QuickFacts {
  std::uint8_t ip_version = 0;
  std::uint8_t proto = 0;      // 6 or 17
  std::uint8_t tcp_flags = 0;  // 0 for UDP
  std::uint8_t tos = 0;        // TOS / traffic class
  bool ip_reserved_flag = false;
  std::uint32_t flow_label = 0;      // IPv6
  std::uint32_t payload_length = 0;  // after the TCP / UDP header, from the IP length
  bool udp_zero_checksum = false;
};

// One packet of a batch on the fast path (Chain::on_quick_batch): the flow's record and
// chain states (a chain's own state is at states + its offset), the packet's facts and
// direction; `complete`: set when a chain's on_quick() returned kComplete.
struct QuickItem {
  FlowRecord* record;
  std::byte* states;
  QuickFacts facts;
  bool rev;
  bool complete;
};

// kHookQuick: on_quick() is to be called (the chain has work to do on the fast path).
inline constexpr unsigned kHookNewFlow = 1, kHookIp = 2, kHookTcp = 4, kHookUdp = 8,
                          kHookOther = 16, kHookQuick = 32;
// Chain::quick_kinds(): the fast-path packets on_quick() has work to do for.
inline constexpr unsigned kQuickTcp4 = 1, kQuickTcp6 = 2, kQuickUdp4 = 4, kQuickUdp6 = 8,
                          kQuickAll = 15;

class Chain {
 public:
  virtual ~Chain() = default;
  virtual std::string_view name() const noexcept = 0;
  // Bytes of per-flow state (at most 256), aligned to state_align() (1, 2, 4 or 8), zeroed
  // when a flow starts. The chains' states are packed one after the other.
  virtual std::size_t state_size() const noexcept { return 0; }
  virtual std::size_t state_align() const noexcept { return 8; }
  // kHook* bits: which of the calls below the observer makes.
  virtual unsigned hooks() const noexcept = 0;
  // The names write() writes, in its order.
  virtual std::vector<std::string> columns() const = 0;

  // A new flow (its first packet); false vetoes it (the flow is ignored).
  virtual bool new_flow(FlowRecord&, std::byte* /*state*/, const PacketView&) noexcept {
    return true;
  }
  // Every packet of the flow (kHookIp), then its transport protocol's (kHookTcp / kHookUdp /
  // kHookOther, the packet's own protocol: an ICMP error counted on the flow it quotes is
  // kHookOther). Non-first fragments get on_ip only.
  virtual Verdict on_ip(FlowRecord&, std::byte*, const PacketView&, bool /*rev*/) noexcept {
    return Verdict::kContinue;
  }
  virtual Verdict on_transport(FlowRecord&, std::byte*, const PacketView&, bool /*rev*/) noexcept {
    return Verdict::kContinue;
  }
  // The fast path: true when on_quick() does for a non-SYN TCP segment or a UDP datagram what
  // on_ip() + on_transport() would (with kHookQuick; without it, they would do nothing).
  virtual bool quick() const noexcept { return false; }
  virtual Verdict on_quick(FlowRecord&, std::byte*, const QuickFacts&, bool /*rev*/) noexcept {
    return Verdict::kContinue;
  }
  // on_quick() for each item in turn (state_offset: where this chain's state is in
  // item.states), setting item.complete on kComplete. The observer hands the fast path's
  // packets over in batches of a few: each chain sees them in order, chains one after the
  // other (a chain must not depend on another's state). A chain overrides this to save a
  // call per packet.
  virtual void on_quick_batch(std::span<QuickItem> items, std::size_t state_offset) noexcept {
    for (QuickItem& it : items)
      it.complete |=
          on_quick(*it.record, it.states + state_offset, it.facts, it.rev) == Verdict::kComplete;
  }
  // False when on_quick() reads no more of QuickFacts than ip_version, proto and tcp_flags:
  // while no chain needs the others, the fast path does not read them from the frame.
  virtual bool quick_facts() const noexcept { return true; }
  // True when on_quick() also does for a TCP segment with SYN what the full hooks would (its
  // flags, TOS, label … are facts; its options are not): while every chain says so, SYNs of
  // known flows stay on the fast path; else they take the full one.
  virtual bool quick_syn() const noexcept { return false; }
  // False when on_quick() never returns kComplete: while no chain with a fast form can
  // complete a flow there, the observer's batches keep no note of which flow each packet
  // would complete, nor when.
  virtual bool quick_completes() const noexcept { return true; }
  // kQuick* bits: on_quick() is called for these packets only (it would do nothing for the
  // others): TCP or UDP over IPv4 or IPv6.
  virtual unsigned quick_kinds() const noexcept { return kQuickAll; }

  virtual void write(const FlowRecord&, const std::byte* state, FieldWriter&) const = 0;
};

}  // namespace flowmark::observe
