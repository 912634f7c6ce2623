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

#include <cstddef>
#include <cstdint>
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

// Appends a chain's fields to a record being written: `,"name":value` in JSON, `,value` in
// CSV (where a null is an empty field and the names are the header's, from columns()), or
// hands each to a FieldVisitor.
// Given a scratch buffer, the writer collects the fields there and appends them to `out`
// when it is full and when the writer ends (the record writers do: a record has ~70 fields
// with all chains); `out` is then complete once the writer is gone.
class FieldWriter {
 public:
  enum class Format : std::uint8_t { kJson, kCsv, kVisit };
  FieldWriter(std::string& out, Format format) noexcept : out_(&out), format_(format) {}
  FieldWriter(std::string& out, Format format, std::span<char> scratch) noexcept
      : out_(&out), format_(format), buf_(scratch.data()), cur_(buf_),
        end_(buf_ + scratch.size()) {}
  explicit FieldWriter(FieldVisitor& visitor) noexcept
      : format_(Format::kVisit), visitor_(&visitor) {}
  ~FieldWriter() { flush(); }
  FieldWriter(const FieldWriter&) = delete;
  FieldWriter& operator=(const FieldWriter&) = delete;

  void null(std::string_view name);
  void boolean(std::string_view name, bool value);
  void number(std::string_view name, std::uint64_t value);
  void text(std::string_view name, std::string_view value);  // escaped as JSON / CSV need

 private:
  // `,"name":value` (JSON) or `,value` (CSV): into the scratch buffer when there is one and
  // it has room, else appended to out_ (direct_field).
  void field(std::string_view name, std::string_view value);
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
  // kQuick* bits: on_quick() is called for these packets only (it would do nothing for the
  // others): TCP or UDP over IPv4 or IPv6.
  virtual unsigned quick_kinds() const noexcept { return kQuickAll; }

  virtual void write(const FlowRecord&, const std::byte* state, FieldWriter&) const = 0;
};

}  // namespace flowmark::observe
