// The observer: one decode, one flow-table probe, the built-in counters and the chains per
// packet; timers on the packet clock through the flow table's wheel (flow_table.hpp). The
// rules it follows are listed in observer.hpp.
#include "flowmark/observe/observer.hpp"

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "bounded_cache.hpp"
#include "flow_key.hpp"
#include "flow_table.hpp"
#include "quick_decode.hpp"

namespace flowmark::observe {

using detail::AddrWords;
using detail::BoundedCache;
using detail::Flow;
using detail::FlowKey;
using detail::FlowState;
using detail::FlowTable;
using detail::FragKey;
using detail::kFlowPending;
using detail::kFlowPortless;
using detail::kKeyPortless;
using detail::kKeyV6;
using detail::kNanosMax;
using detail::kNanosMin;
using detail::kNil;
using detail::PacketKey;
using detail::QuickPacket;

namespace {

constexpr std::uint8_t kTcpFin = 0x01, kTcpSyn = 0x02, kTcpRst = 0x04, kTcpAck = 0x10;
constexpr Nanos kDefaultIdle = 30'000'000'000, kDefaultFragment = 30'000'000'000;

struct NoValue {};
struct FragPorts {
  std::uint16_t sport, dport;
};
using IgnoredSet = BoundedCache<FlowKey, NoValue>;
using FragmentMap = BoundedCache<FragKey, FragPorts>;

constexpr std::size_t ignored_capacity(std::size_t max_flows) {
  return std::max<std::size_t>(1024, max_flows / 16);
}
constexpr std::size_t fragment_capacity(std::size_t max_flows) {
  return std::max<std::size_t>(256, max_flows / 64);
}

ObserverConfig normalise(ObserverConfig c) {
  c.max_flows = std::clamp<std::size_t>(c.max_flows, 1, std::size_t{1} << 30);
  if (c.idle_timeout_ns <= 0) c.idle_timeout_ns = kDefaultIdle;
  if (c.expiry_delay_ns < 0) c.expiry_delay_ns = 0;
  if (c.active_timeout_ns <= 0) c.active_timeout_ns = kNanosMax;  // no active timeout
  if (c.fragment_timeout_ns <= 0) c.fragment_timeout_ns = kDefaultFragment;
  return c;
}

bool carries_ports(std::uint8_t proto) {
  return proto == kProtoTcp || proto == kProtoUdp || proto == kProtoSctp;
}

}  // namespace

struct Observer::Impl {
  Impl(ObserverConfig c, RecordSink s)
      : cfg(normalise(c)),
        sink(std::move(s)),
        table(cfg.max_flows, max_delay(), cfg.key_vlan),
        ignored(ignored_capacity(cfg.max_flows)),
        fragments(fragment_capacity(cfg.max_flows)) {}

  ObserverConfig cfg;
  RecordSink sink;
  Nanos max_delay() const noexcept { return std::max(cfg.idle_timeout_ns, cfg.expiry_delay_ns); }
  std::vector<NewFlowFn> new_flow;
  std::vector<PacketFn> ip4, ip6, tcp, udp, l4;
  // Chains, their state offsets, and per hook the (chain, offset) pairs to call.
  struct Hooked {
    Chain* chain;
    std::size_t offset;
  };
  std::vector<std::unique_ptr<Chain>> chains;
  std::vector<std::size_t> chain_offsets;
  std::size_t state_bytes = 0;
  std::vector<Hooked> chain_new, chain_ip, chain_tcp, chain_udp, chain_other, chain_quick;
  // chain_quick by packet kind (quick_kind()): only the chains with work for it.
  std::array<std::vector<Hooked>, 4> chain_quick_kind;
  FieldPrefixes field_prefixes;          // every chain's columns(), in the chains' order
  std::vector<std::byte> scratch_state;  // a new flow's state while the new-flow chain runs
  ObserverStats stats;
  FlowTable table;
  IgnoredSet ignored;
  FragmentMap fragments;
  Nanos clock = kNanosMin;
  PacketView view;  // reused: decode_packet() resets it, no second initialisation here

  // --- timers ----------------------------------------------------------------------------
  Nanos deadline(std::uint32_t i) noexcept {
    const Flow& f = table.flow(i);
    if (f.state == FlowState::kExpiring) return f.expire_at;
    const Nanos idle = detail::add_sat(f.rec.last, cfg.idle_timeout_ns);
    if (f.bits & kFlowPending) return idle;
    return std::min(idle, detail::add_sat(f.rec.first, cfg.active_timeout_ns));
  }

  void emit(FlowRecord& r, EndReason why) noexcept {
    ++stats.emitted;
    r.end_reason = why;
    if (sink) sink(r);
  }

  // A flow whose deadline has come (<= now): emit and free it, or split it.
  void fire(std::uint32_t i, Nanos now) noexcept {
    Flow& f = table.flow(i);
    if (f.state == FlowState::kExpiring) {
      emit(f.rec, EndReason::kEndDetected);
      table.release(i);
      return;
    }
    const bool pending = f.bits & kFlowPending;
    const Nanos idle = detail::add_sat(f.rec.last, cfg.idle_timeout_ns);
    const Nanos active = pending ? kNanosMax : detail::add_sat(f.rec.first, cfg.active_timeout_ns);
    if (idle <= active) {  // idle: emitted at once (an empty part is dropped)
      if (!pending) emit(f.rec, EndReason::kIdleTimeout);
      table.release(i);
      return;
    }
    // Active timeout: the record so far goes out; the next packet starts the next part.
    emit(f.rec, EndReason::kActiveTimeout);
    FlowRecord& r = f.rec;
    r.pkt_fwd = r.pkt_rev = r.oct_fwd = r.oct_rev = 0;
    r.tcp_flags_fwd = r.tcp_flags_rev = 0;
    r.tos_fwd = r.tos_rev = 0;
    r.fragments = r.icmp_errors = 0;
    r.continuation = true;
    f.bits |= kFlowPending;
    if (idle <= now)
      table.release(i);  // idle inside the same gap: nothing to emit
    else
      table.schedule(i, idle);
  }

  void advance(Nanos now) noexcept {
    table.advance(
        now, [this](std::uint32_t i) { return deadline(i); },
        [this](std::uint32_t i, Nanos t) { fire(i, t); });
  }

  // Makes room; returns the freed flow.
  std::uint32_t evict_one() noexcept {
    const std::uint32_t v = table.victim([this](std::uint32_t i) { return deadline(i); });
    if (v == kNil) return kNil;
    Flow& f = table.flow(v);
    // A completed flow emitted early still ended by itself.
    if (!(f.bits & kFlowPending))
      emit(f.rec,
           f.state == FlowState::kExpiring ? EndReason::kEndDetected : EndReason::kLackOfResources);
    ++stats.evicted;
    table.release(v);
    return v;
  }

  // --- per packet ------------------------------------------------------------------------
  // The packet clock (the largest timestamp seen) and the timers due by it.
  [[gnu::always_inline]] Nanos tick(Nanos ts) noexcept {
    ++stats.packets;
    Nanos now = ts;
    if (now < clock) {
      now = clock;
      ++stats.late_packets;
    } else {
      clock = now;
    }
    table.start(now);
    advance(now);
    return now;
  }

  [[gnu::always_inline]] bool decoded(DecodeError err) noexcept {
    if (err == DecodeError::kNone) [[likely]]
      return true;
    ++stats.decode_errors[static_cast<std::size_t>(err)];
    if (err == DecodeError::kNotIp) ++stats.non_ip;
    if (err == DecodeError::kTruncatedL4) ++stats.short_packets;
    return false;
  }

  void on_packet(Nanos ts, LinkType link, std::span<const std::byte> frame) noexcept {
    const Nanos now = tick(ts);
    if (decoded(decode_packet(link, frame, view))) process(view, now, nullptr);
  }

  // --- the fast path's chain calls, in batches -------------------------------------------
  // quick_account() leaves the quick chains' work here, one list per packet kind (a flow's
  // packets are all of one kind, so each chain sees a flow's packets in order); it is done
  // when kBatch packets wait, and before anything that could see the chains' state or run
  // chains itself: a packet on the full path, a timer that may fire, the end of on_packets().
  static constexpr std::size_t kBatch = 32;
  std::array<std::array<QuickItem, kBatch>, 4> batch_items;
  std::array<std::array<std::uint32_t, kBatch>, 4> pending_idx;
  std::array<std::size_t, 4> npending{};
  std::array<std::uint8_t, kBatch> pending_kind;  // arrival order: kind of each
  std::array<Nanos, kBatch> pending_now;
  std::size_t nwaiting = 0;

  [[gnu::always_inline]] void defer_chains(FlowRecord& r, std::uint32_t idx, const QuickPacket& q,
                                           bool rev, Nanos now) noexcept {
    const unsigned kind = quick_kind(q);
    QuickItem& it = batch_items[kind][npending[kind]];
    it.record = &r;
    it.states = table.state(idx);
    fill_facts(it.facts, q);
    it.rev = rev;
    it.complete = false;
    if (batch_completes) {  // what run_pending() needs to complete the flow in order
      pending_idx[kind][npending[kind]] = idx;
      pending_kind[nwaiting] = static_cast<std::uint8_t>(kind);
      pending_now[nwaiting] = now;
    }
    ++npending[kind];
    if (++nwaiting == kBatch) run_pending();
  }

  [[gnu::noinline]] void run_pending() noexcept {
    for (unsigned kind = 0; kind < 4; ++kind) {
      if (npending[kind] == 0) continue;
      const std::span<QuickItem> items(batch_items[kind].data(), npending[kind]);
      for (const Hooked& h : chain_quick_kind[kind]) h.chain->on_quick_batch(items, h.offset);
    }
    // Completions in the packets' order (their timers are scheduled in that order).
    std::array<std::size_t, 4> at{};
    for (std::size_t i = 0; i < (batch_completes ? nwaiting : 0); ++i) {
      const unsigned kind = pending_kind[i];
      const std::size_t j = at[kind]++;
      if (batch_items[kind][j].complete) [[unlikely]] {
        const std::uint32_t idx = pending_idx[kind][j];
        if (table.flow(idx).state == FlowState::kActive) complete(idx, pending_now[i]);
      }
    }
    npending = {};
    nwaiting = 0;
  }
  [[gnu::always_inline]] void flush_pending() noexcept {
    if (nwaiting != 0) [[unlikely]]
      run_pending();
  }

  // on_packet() for each frame, with the frames ahead taken in groups of kGroup: while group
  // g is counted, group g+1's flows are requested from memory (through the index slots
  // loaded a group earlier) and group g+2 is decoded and its index slots requested; group g+3's
  // frames are prefetched. The requests of a group are issued back to back: on this kind of
  // virtual machine a random access into a large table misses the TLB, and a prefetch waits
  // for its page walk (~0.4 us here) before it retires, so prefetches spread one per packet
  // (as before) had one or two walks in flight at a time; issued together, a group's walks
  // overlap.
  static constexpr std::size_t kGroup = 32, kAhead = 4 * kGroup;
  static void prefetch_frame(const FrameRef& f) noexcept {
    const auto* b = reinterpret_cast<const char*>(f.frame.data());
    __builtin_prefetch(b);
    __builtin_prefetch(b + 63);
  }
  // A frame decoded ahead: by quick_decode() (quick: key, length and flags only), else by
  // decode_packet() into view.
  struct Ahead {
    QuickPacket q;
    bool quick;
    bool keyed;  // q.key valid (quick, or decoded and not a fragment)
    DecodeError err;
    std::uint32_t cand;  // FlowTable::prefetch_indexed() of q.key (quick only)
    PacketView view;
  };
  std::array<Ahead, kAhead> ahead;

  // The quick path is taken while no chain needs the packet's view: no callbacks but the
  // built-in TCP completion (the new-flow chain runs on the full path, which every new
  // flow takes).
  bool quick_ok = true;
  bool quick_tcp_completion = false;
  bool quick_facts = false;          // a quick chain reads more than the flags (Chain::quick_facts)
  bool record_tos = cfg.record_tos;  // FlowRecord::tos_fwd/rev (the fast path reads the TOS)
  void add(std::vector<PacketFn>& chain, PacketFn fn) {
    chain.push_back(std::move(fn));
    chains_changed();
  }
  void chains_changed() noexcept {
    using Plain = Verdict (*)(FlowRecord&, const PacketView&, bool);
    auto builtin = [](const PacketFn& fn) {
      const Plain* f = fn.target<Plain>();
      return f != nullptr && *f == &tcp_complete_on_fin_or_rst;
    };
    quick_tcp_completion = tcp.size() == 1 && builtin(tcp[0]);
    quick_ok = ip4.empty() && ip6.empty() && udp.empty() && l4.empty() &&
               (tcp.empty() || quick_tcp_completion) &&
               std::all_of(chains.begin(), chains.end(), [](const auto& c) { return c->quick(); });
    quick_facts = std::any_of(chain_quick.begin(), chain_quick.end(),
                              [](const Hooked& h) { return h.chain->quick_facts(); });
    syn_full_path =
        std::any_of(chains.begin(), chains.end(), [](const auto& c) { return !c->quick_syn(); });
    batch_completes = std::any_of(chain_quick.begin(), chain_quick.end(),
                                  [](const Hooked& h) { return h.chain->quick_completes(); });
  }
  bool batch_completes = true;  // a quick chain may complete a flow (Chain::quick_completes)
  bool syn_full_path = false;   // a chain needs the full hooks for SYN segments (their options)

  void add_chain(std::unique_ptr<Chain> c) {
    if (stats.packets != 0) throw std::logic_error("Observer::add_chain after the first packet");
    const std::size_t size = c->state_size(), align = c->state_align();
    if (size > 256) throw std::invalid_argument("Observer::add_chain: state over 256 bytes");
    if (align == 0 || align > 8 || (align & (align - 1)) != 0)
      throw std::invalid_argument("Observer::add_chain: state alignment not 1, 2, 4 or 8");
    const std::size_t offset = (state_bytes + align - 1) / align * align;
    state_bytes = offset + size;
    const unsigned h = c->hooks();
    const Hooked e{c.get(), offset};
    if (h & kHookNewFlow) chain_new.push_back(e);
    if (h & kHookIp) chain_ip.push_back(e);
    if (h & kHookTcp) chain_tcp.push_back(e);
    if (h & kHookUdp) chain_udp.push_back(e);
    if (h & kHookOther) chain_other.push_back(e);
    if (h & kHookQuick) {
      chain_quick.push_back(e);
      const unsigned kinds = c->quick_kinds();
      for (unsigned kind = 0; kind < 4; ++kind)
        if (kinds & (1u << kind)) chain_quick_kind[kind].push_back(e);
    }
    chain_offsets.push_back(offset);
    chains.push_back(std::move(c));
    std::vector<std::string> columns;
    for (const auto& chain : chains)
      for (auto& name : chain->columns()) columns.push_back(std::move(name));
    field_prefixes = FieldPrefixes(columns);
    scratch_state.assign(state_bytes, std::byte{0});
    // The table keeps the state next to each record: its flows' array is reserved anew (it
    // holds no flow yet). Rebuilding the whole table per chain cost more than a small capture.
    table.set_state_bytes(state_bytes);
    chains_changed();
  }

  void on_packets(LinkType link, std::span<const FrameRef> frames) noexcept {
    // Even a table that would fit in the caches is pushed out of them by the frames streaming
    // through (a capture file read from memory): the look-ahead pays at every size.
    const std::size_t n = frames.size();
    const bool try_quick = quick_ok, with_facts = quick_facts || record_tos;
    auto decode_one = [&](std::size_t j) __attribute__((always_inline)) {
      Ahead& a = ahead[j % kAhead];
      const auto frame = frames[j].frame;
      const auto* bytes = reinterpret_cast<const std::uint8_t*>(frame.data());
      a.quick =
          try_quick &&
          (with_facts ? detail::quick_decode<true>(link, bytes, frame.size(), cfg.key_vlan, a.q)
                      : detail::quick_decode<false>(link, bytes, frame.size(), cfg.key_vlan, a.q));
      if (a.quick) [[likely]] {
        a.keyed = true;
      } else {
        decode_full(link, frame, a);
      }
      a.cand = 0;
    };
    // Frames [from, from + kGroup) ∩ [0, n): decoded, then their index slots requested.
    auto decode_group = [&](std::size_t from) {
      const std::size_t to = std::min(n, from + kGroup);
      for (std::size_t j = from; j < to; ++j) decode_one(j);
      for (std::size_t j = from; j < to; ++j) {
        const Ahead& a = ahead[j % kAhead];
        if (a.keyed) table.prefetch_index(a.q.key.hash);
      }
    };
    // Their flows requested (the slots read).
    auto resolve_group = [&](std::size_t from) {
      const std::size_t to = std::min(n, from + kGroup);
      for (std::size_t j = from; j < to; ++j) {
        Ahead& a = ahead[j % kAhead];
        if (a.keyed) a.cand = table.prefetch_indexed(a.q.key.hash);
      }
    };
    auto prefetch_group = [&](std::size_t from) {
      const std::size_t to = std::min(n, from + kGroup);
      for (std::size_t j = from; j < to; ++j) prefetch_frame(frames[j]);
    };
    decode_group(0);
    decode_group(kGroup);
    prefetch_group(2 * kGroup);
    resolve_group(0);
    for (std::size_t g = 0; g < n; g += kGroup) {
      if (g + 3 * kGroup < n) prefetch_group(g + 3 * kGroup);
      if (g + 2 * kGroup < n) decode_group(g + 2 * kGroup);
      if (g + kGroup < n) resolve_group(g + kGroup);
      const std::size_t to = std::min(n, g + kGroup);
      for (std::size_t i = g; i < to; ++i) {
        Ahead& a = ahead[i % kAhead];
        if (nwaiting != 0 && table.may_fire(std::max(frames[i].ts_ns, clock))) run_pending();
        const Nanos now = tick(frames[i].ts_ns);
        if (a.quick) [[likely]] {
          if (!quick_account(a.q, a.cand, now)) {  // anything but a packet of an active flow
            flush_pending();
            a.err = decode_packet(link, frames[i].frame, a.view);
            if (decoded(a.err)) process(a.view, now, &a.q.key);
          }
        } else {
          flush_pending();
          if (decoded(a.err)) process(a.view, now, a.keyed ? &a.q.key : nullptr);
        }
      }
    }
    flush_pending();
  }

  [[gnu::noinline]] void decode_full(LinkType link, std::span<const std::byte> frame,
                                     Ahead& a) noexcept {
    a.err = decode_packet(link, frame, a.view);
    a.keyed = a.err == DecodeError::kNone && !a.view.is_fragment;
    if (a.keyed) a.q.key = plain_key(a.view);
  }

  // account() for a quick-decoded packet of an active flow (no chain but the built-in TCP
  // completion), found through the candidate the look-ahead took from the index; false,
  // having changed nothing, for anything else: no flow yet, a completed one, a continuation
  // part's first packet, a flow the candidate does not name.
  [[gnu::always_inline]] bool quick_account(const QuickPacket& q, std::uint32_t cand,
                                            Nanos now) noexcept {
    bool rev;
    std::uint32_t idx = cand - 1;
    if (!table.active_match(cand, q.key, rev)) [[unlikely]] {
      // Not where the look-ahead looked (beyond the next slot, or moved since): a lookup.
      idx = find_active(q.key, rev);
      if (idx == kNil) return false;
    }
    // A SYN segment takes the full path when a chain reads more of it than facts (options).
    if (syn_full_path && (q.tcp_flags & kTcpSyn) != 0) [[unlikely]]
      return false;
    FlowRecord& r = table.flow(idx).rec;
    if (record_tos && (rev ? r.pkt_rev : r.pkt_fwd) == 0) [[unlikely]]
      (rev ? r.tos_rev : r.tos_fwd) = q.tos;
    const unsigned both = count(r, rev, q.ip_length, q.tcp_flags, now);
    // The built-in TCP completion (RST, or FIN from both sides), without a branch on the
    // protocol: only the rare completion branches.
    const unsigned ends = (q.tcp_flags & kTcpRst) | (both & (both >> 8) & kTcpFin);
    bool done = (quick_tcp_completion & (q.key.proto() == kProtoTcp) & (ends != 0)) != 0;
    if (!chain_quick.empty()) {
      // One chain for this kind of packet: called at once (a batch would cost more than it
      // saves). A flow's packets are all of one kind, so each chain still sees them in order.
      const auto& hooked = chain_quick_kind[quick_kind(q)];
      if (hooked.size() == 1)
        done |= quick_one(hooked[0], r, idx, q, rev);
      else if (!hooked.empty())
        defer_chains(r, idx, q, rev, now);
    }
    if (done) [[unlikely]]
      complete(idx, now);
    return true;
  }

  [[gnu::always_inline]] bool quick_one(const Hooked& h, FlowRecord& r, std::uint32_t idx,
                                        const QuickPacket& q, bool rev) noexcept {
    QuickFacts facts;
    fill_facts(facts, q);
    return h.chain->on_quick(r, table.state(idx) + h.offset, facts, rev) == Verdict::kComplete;
  }
  [[gnu::always_inline]] static void fill_facts(QuickFacts& f, const QuickPacket& q) noexcept {
    f.ip_version = q.key.v6() ? 6 : 4;
    f.proto = q.key.proto();
    f.tcp_flags = q.tcp_flags;
    f.tos = q.tos;
    f.ip_reserved_flag = q.ip_reserved_flag;
    f.flow_label = q.flow_label;
    f.payload_length = q.payload_length;
    f.udp_zero_checksum = q.udp_zero_checksum;
  }

  // The kQuick* bit number of a quick-decoded packet: TCP4 0, TCP6 1, UDP4 2, UDP6 3.
  static unsigned quick_kind(const QuickPacket& q) noexcept {
    return (q.key.proto() == kProtoUdp ? 2u : 0u) | (q.key.v6() ? 1u : 0u);
  }

  // The flow of k if it is active and not waiting for its next part (rev: the packet's
  // direction), else kNil.
  [[gnu::noinline]] std::uint32_t find_active(const PacketKey& k, bool& rev) noexcept {
    const FlowTable::Hit hit = table.find(k);
    if (!hit.found) return kNil;
    const Flow& f = table.flow(hit.idx);
    if (!detail::counting(f)) return kNil;
    rev = hit.rev;
    return hit.idx;
  }

  // The built-in counting, without a branch on the direction (see FlowTable::match). The
  // two flag bytes are one 16-bit word (forward low): the packet's flags are shifted into
  // their half. Returns that word after the packet.
  static_assert(offsetof(FlowRecord, tcp_flags_rev) == offsetof(FlowRecord, tcp_flags_fwd) + 1);
  [[gnu::always_inline]] static unsigned count(FlowRecord& r, bool rev, std::uint32_t ip_length,
                                               std::uint8_t tcp_flags, Nanos now) noexcept {
    const std::uint64_t back = rev, m = 0 - back;
    r.pkt_fwd += 1 - back;
    r.pkt_rev += back;
    r.oct_fwd += ip_length & ~m;
    r.oct_rev += ip_length & m;
    std::uint16_t flags;
    std::memcpy(&flags, &r.tcp_flags_fwd, 2);
    if constexpr (std::endian::native == std::endian::little) {
      flags = static_cast<std::uint16_t>(flags | unsigned{tcp_flags} << (8 * back));
    } else {
      flags = static_cast<std::uint16_t>(flags | unsigned{tcp_flags} << (8 - 8 * back));
    }
    std::memcpy(&r.tcp_flags_fwd, &flags, 2);
    r.last = now;
    return flags;
  }

  void complete(std::uint32_t idx, Nanos now) noexcept {
    Flow& f = table.flow(idx);
    f.state = FlowState::kExpiring;
    f.expire_at = detail::add_sat(now, cfg.expiry_delay_ns);
    table.schedule(idx, f.expire_at);
  }

  PacketKey plain_key(const PacketView& p) const noexcept {
    return detail::packet_key(p, cfg.key_vlan);
  }

  // A decoded packet at packet-clock time now; `pre`: its key when already made.
  [[gnu::always_inline]] void process(const PacketView& p, Nanos now,
                                      const PacketKey* pre) noexcept {
    if (!p.is_fragment) [[likely]] {
      if (pre) {
        finish_packet(p, *pre, now, false);
      } else {
        finish_packet(p, plain_key(p), now, false);
      }
      return;
    }
    process_fragment(p, now);
  }

  [[gnu::noinline]] void process_fragment(const PacketView& p, Nanos now) noexcept {
    const bool v6 = p.ip_version == 6;
    const AddrWords src = detail::load_addr(p.src_addr, v6),
                    dst = detail::load_addr(p.dst_addr, v6);
    const std::uint16_t vlan = cfg.key_vlan && p.vlan_count > 0 ? p.vlan[0] : 0;
    std::uint8_t flags = v6 ? kKeyV6 : 0;
    std::uint16_t sport = p.sport, dport = p.dport;
    bool later_fragment = false;
    if (p.has_ports) {  // the first fragment: remember its ports for the others
      const FragKey fk = frag_key(p, src, dst, vlan);
      fragments.put(fk, detail::hash_frag(fk), now, cfg.fragment_timeout_ns,
                    FragPorts{sport, dport});
    } else {
      sport = dport = 0;
      flags |= kKeyPortless;
      if (p.frag_offset != 0) {  // a later fragment: its first's ports
        later_fragment = true;
        ++stats.fragments;
        if (carries_ports(p.proto)) {
          const FragKey fk = frag_key(p, src, dst, vlan);
          if (auto* e = fragments.find(fk, detail::hash_frag(fk), now, cfg.fragment_timeout_ns)) {
            sport = e->value.sport;
            dport = e->value.dport;
            flags &= static_cast<std::uint8_t>(~kKeyPortless);
          } else {
            ++stats.fragments_unmatched;
          }
        }
      }
    }
    finish_packet(p, detail::make_key(src, dst, sport, dport, vlan, p.proto, flags), now,
                  later_fragment);
  }

  [[gnu::always_inline]] void finish_packet(const PacketView& p, const PacketKey& k, Nanos now,
                                            bool later_fragment) noexcept {
    if (p.icmp_error && p.quoted.src && p.quoted.dst) [[unlikely]] {
      if (match_icmp_error(p, k, now)) return;
    }
    account(p, k, now, later_fragment);
  }

  static FragKey frag_key(const PacketView& p, const AddrWords& src, const AddrWords& dst,
                          std::uint16_t vlan) noexcept {
    FragKey fk;
    fk.src = src;
    fk.dst = dst;
    fk.id = p.frag_id;
    fk.vlan = vlan;
    fk.proto = p.proto;
    fk.flags = p.ip_version == 6 ? kKeyV6 : 0;
    return fk;
  }

  // The key of a packet going back to the quoted packet's source: the error's direction
  // (`outer` is the error packet's own key).
  static PacketKey quoted_back_key(const QuotedPacket& q, const PacketKey& outer) noexcept {
    const bool v6 = outer.v6();
    const std::uint8_t flags =
        static_cast<std::uint8_t>((outer.flags & kKeyV6) | (q.has_ports ? 0 : kKeyPortless));
    return detail::make_key(detail::load_addr(q.dst, v6), detail::load_addr(q.src, v6),
                            q.has_ports ? q.dport : 0, q.has_ports ? q.sport : 0, outer.vlan(),
                            q.proto, flags);
  }

  // An ICMP error quoting a packet: icmp_errors++ on the quoted packet's flow when held.
  // True when the error packet has been counted there too (it then makes no flow of its
  // own); false when it is to be counted in its own 3-tuple flow (icmp_flows, or no flow).
  [[gnu::noinline]] bool match_icmp_error(const PacketView& p, const PacketKey& outer,
                                          Nanos now) noexcept {
    const PacketKey back = quoted_back_key(p.quoted, outer);
    const FlowTable::Hit hit = table.find(back);
    // A flow the new-flow chain vetoed: its error is one of its packets, skipped too.
    if (!hit.found) return !cfg.icmp_flows && skip_ignored(back, now);
    ++table.flow(hit.idx).rec.icmp_errors;
    ++stats.icmp_errors_matched;
    if (cfg.icmp_flows) return false;
    account(p, back, now, false);  // a second lookup, on this rare path only
    return true;
  }

  // A packet of a flow the new-flow chain vetoed: counted as ignored, true. Inlined by force:
  // as a call, account() ran 0.9 more instructions a frame (callgrind, 200k frames).
  [[gnu::always_inline]] bool skip_ignored(const PacketKey& k, Nanos now) noexcept {
    if (ignored.empty()) return false;
    auto* e = ignored.find(detail::canonical(k), k.hash, now, cfg.idle_timeout_ns);
    if (e == nullptr) return false;
    e->seen = now;
    ++stats.ignored_packets;
    return true;
  }

  void account(const PacketView& p, const PacketKey& k, Nanos now, bool later_fragment) noexcept {
    const std::uint32_t h = k.hash;
    const FlowTable::Hit hit = table.find(k);
    std::uint32_t idx;
    bool rev = false;
    if (hit.found) {
      Flow& f = table.flow(hit.idx);
      if (f.state == FlowState::kExpiring && k.proto() == kProtoTcp &&
          (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn) {
        // A new connection on the 5-tuple of a completed one: the old record goes out as
        // it is and this SYN starts a new one.
        emit(f.rec, EndReason::kEndDetected);
        table.release(hit.idx);
        if (!create(p, k, h, now, idx)) return;
      } else {
        idx = hit.idx;
        rev = hit.rev;
        if (f.bits & kFlowPending) {  // first packet of a continuation part
          f.bits &= static_cast<std::uint8_t>(~kFlowPending);
          f.rec.first = now;
          table.schedule(idx, deadline(idx));
        }
      }
    } else {
      if (skip_ignored(k, now)) return;
      if (!create(p, k, h, now, idx)) return;
    }

    Flow& f = table.flow(idx);
    FlowRecord& r = f.rec;
    if (cfg.record_tos && (rev ? r.pkt_rev : r.pkt_fwd) == 0) (rev ? r.tos_rev : r.tos_fwd) = p.tos;
    count(r, rev, p.ip_length, p.tcp_flags, now);
    if (later_fragment) ++r.fragments;

    bool done = false;
    for (const auto& fn : p.ip_version == 6 ? ip6 : ip4)
      done |= fn(r, p, rev) == Verdict::kComplete;
    std::byte* st = chains.empty() ? nullptr : table.state(idx);
    for (const Hooked& c : chain_ip)
      done |= c.chain->on_ip(r, st + c.offset, p, rev) == Verdict::kComplete;
    if (!later_fragment) {
      // The packet's own protocol (an ICMP error counted on the flow it quotes: not the
      // flow's).
      const bool is_tcp = p.proto == kProtoTcp, is_udp = p.proto == kProtoUdp;
      const auto& chain = is_tcp ? tcp : is_udp ? udp : l4;
      for (const auto& fn : chain) done |= fn(r, p, rev) == Verdict::kComplete;
      for (const Hooked& c : is_tcp ? chain_tcp : is_udp ? chain_udp : chain_other)
        done |= c.chain->on_transport(r, st + c.offset, p, rev) == Verdict::kComplete;
    }
    if (done && f.state == FlowState::kActive) complete(idx, now);
  }

  // Starts a flow for k (running the new-flow chain); false when vetoed.
  bool create(const PacketView& p, const PacketKey& k, std::uint32_t h, Nanos now,
              std::uint32_t& idx) noexcept {
    FlowRecord init;
    init.sip = detail::make_address(k.src, k.v6());
    init.dip = detail::make_address(k.dst, k.v6());
    init.sp = k.sport();
    init.dp = k.dport();
    init.proto = k.proto();
    init.ip_version = k.v6() ? 6 : 4;
    init.has_ports = !k.portless();
    init.vlan = p.vlan_count > 0 ? p.vlan[0] : 0;
    init.first = init.last = now;
    if (k.proto() == kProtoTcp && (p.tcp_flags & kTcpSyn) != 0)
      init.direction = (p.tcp_flags & kTcpAck) != 0 ? BiflowDirection::kReverseInitiator
                                                    : BiflowDirection::kInitiator;
    if (!scratch_state.empty()) std::memset(scratch_state.data(), 0, scratch_state.size());
    if (!new_flow.empty() || !chain_new.empty()) {
      FlowRecord tmp = init;
      bool keep = true;
      for (const auto& fn : new_flow) keep = keep && fn(tmp, p);
      for (const Hooked& c : chain_new)
        keep = keep && c.chain->new_flow(tmp, scratch_state.data() + c.offset, p);
      if (!keep) {
        ignored.put(detail::canonical(k), h, now, cfg.idle_timeout_ns, NoValue{});
        ++stats.ignored;
        return false;
      }
      // The key fields and times are the observer's: keep the callbacks' other fields.
      tmp.sip = init.sip;
      tmp.dip = init.dip;
      tmp.sp = init.sp;
      tmp.dp = init.dp;
      tmp.proto = init.proto;
      tmp.ip_version = init.ip_version;
      tmp.has_ports = init.has_ports;
      tmp.vlan = init.vlan;
      tmp.first = tmp.last = now;
      tmp.direction = init.direction;
      init = tmp;
    }
    std::uint32_t hint = kNil;
    if (table.size() >= table.capacity()) hint = evict_one();
    idx = table.allocate(hint);
    Flow& f = table.flow(idx);
    f.state = FlowState::kActive;
    f.bits = k.portless() ? kFlowPortless : 0;
    f.reserved = 0;
    f.expire_at = 0;
    f.rec = init;
    if (!scratch_state.empty())
      std::memcpy(table.state(idx), scratch_state.data(), scratch_state.size());
    table.insert(idx, h);
    table.schedule(idx, deadline(idx));
    ++stats.flows;
    return true;
  }

  bool quotes_held_flow(LinkType link, std::span<const std::byte> frame, Nanos ts) noexcept {
    advance_clock(ts);
    PacketView p;
    if (decode_packet(link, frame, p) != DecodeError::kNone) return false;
    if (p.is_fragment || !p.icmp_error || !p.quoted.src || !p.quoted.dst) return false;
    const PacketKey back = quoted_back_key(p.quoted, plain_key(p));  // as match_icmp_error()
    if (table.find(back).found) return true;
    if (cfg.icmp_flows || ignored.empty()) return false;
    return ignored.find(detail::canonical(back), back.hash, clock, cfg.idle_timeout_ns) != nullptr;
  }

  // The packet clock moved by frames seen elsewhere (another worker's): timers due by t fire.
  void advance_clock(Nanos t) noexcept {
    flush_pending();
    if (t <= clock) return;
    clock = t;
    if (table.started()) advance(t);
  }

  void finish() noexcept {
    table.for_each([this](std::uint32_t i) {
      if (table.flow(i).state == FlowState::kExpiring)
        emit(table.flow(i).rec, EndReason::kEndDetected);
    });
    table.for_each([this](std::uint32_t i) {
      Flow& f = table.flow(i);
      if (detail::counting(f)) emit(f.rec, EndReason::kForcedEnd);
    });
    table.clear();
    ignored.clear();
    fragments.clear();
  }
};

Observer::Observer(ObserverConfig config, RecordSink sink)
    : impl_(std::make_unique<Impl>(config, std::move(sink))) {}
Observer::~Observer() = default;
Observer::Observer(Observer&&) noexcept = default;
Observer& Observer::operator=(Observer&&) noexcept = default;

void Observer::add_new_flow(NewFlowFn f) { impl_->new_flow.push_back(std::move(f)); }
void Observer::add_ip4(PacketFn f) { impl_->add(impl_->ip4, std::move(f)); }
void Observer::add_ip6(PacketFn f) { impl_->add(impl_->ip6, std::move(f)); }
void Observer::add_tcp(PacketFn f) { impl_->add(impl_->tcp, std::move(f)); }
void Observer::add_udp(PacketFn f) { impl_->add(impl_->udp, std::move(f)); }
void Observer::add_l4(PacketFn f) { impl_->add(impl_->l4, std::move(f)); }

void Observer::add_chain(std::unique_ptr<Chain> c) { impl_->add_chain(std::move(c)); }

const std::vector<std::unique_ptr<Chain>>& Observer::chains() const noexcept {
  return impl_->chains;
}

const std::byte* Observer::chain_state(const FlowRecord& r, std::size_t i) const noexcept {
  if (i >= impl_->chains.size()) return nullptr;
  const std::uint32_t idx = impl_->table.index_of(r);
  if (idx == kNil) return nullptr;
  return impl_->table.state(idx) + impl_->chain_offsets[i];
}

void Observer::chain_states(const FlowRecord& r,
                            std::span<const std::byte*> states) const noexcept {
  const std::uint32_t idx = impl_->table.index_of(r);
  const std::byte* base = idx == kNil ? nullptr : impl_->table.state(idx);
  for (std::size_t i = 0; i < states.size(); ++i)
    states[i] =
        base == nullptr || i >= impl_->chains.size() ? nullptr : base + impl_->chain_offsets[i];
}

const FieldPrefixes& Observer::field_prefixes() const noexcept { return impl_->field_prefixes; }

void Observer::on_packet(Nanos ts_ns, LinkType link, std::span<const std::byte> frame) noexcept {
  impl_->on_packet(ts_ns, link, frame);
}

void Observer::on_packets(LinkType link, std::span<const FrameRef> frames) noexcept {
  impl_->on_packets(link, frames);
}

void Observer::advance_clock(Nanos ts_ns) noexcept { impl_->advance_clock(ts_ns); }

bool Observer::quotes_held_flow(LinkType link, std::span<const std::byte> frame,
                                Nanos ts_ns) noexcept {
  return impl_->quotes_held_flow(link, frame, ts_ns);
}

void Observer::finish() noexcept { impl_->finish(); }

const ObserverStats& Observer::stats() const noexcept { return impl_->stats; }

std::size_t Observer::active_flows() const noexcept { return impl_->table.size(); }

std::size_t Observer::bytes_per_flow() const noexcept {
  // Everything the observer allocates for a table of the default size, per flow, rounded
  // up: the flow (record + state + the chains' state), its wheel links, two index slots, one
  // occupancy bit, and its share of the ignored set (1/16 of max_flows), of the fragment map
  // (1/64) and of the wheel's bucket heads. (A small table pays the fixed parts, ~100 KB,
  // over fewer flows.)
  constexpr std::size_t n = ObserverConfig{}.max_flows;
  const std::size_t total = impl_->table.bytes_per_flow() * n + n / 8 +
                            IgnoredSet::entry_bytes() * ignored_capacity(n) +
                            FragmentMap::entry_bytes() * fragment_capacity(n) +
                            sizeof(detail::Link) * FlowTable::kBuckets;
  return (total + n - 1) / n;
}

Verdict tcp_complete_on_fin_or_rst(FlowRecord& r, const PacketView& p, bool /*rev*/) {
  if (p.tcp_flags & kTcpRst) return Verdict::kComplete;
  if ((r.tcp_flags_fwd & kTcpFin) && (r.tcp_flags_rev & kTcpFin)) return Verdict::kComplete;
  return Verdict::kContinue;
}

static_assert(sizeof(Flow) == 136, "Flow layout: 16 bytes of state + FlowRecord (120)");
static_assert(sizeof(FlowRecord) % 8 == 0, "chain state follows the record 8-byte aligned");

}  // namespace flowmark::observe
