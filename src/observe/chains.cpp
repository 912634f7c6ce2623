// The built-in chains. Each keeps a few bytes of state per flow (packed: see each State) and
// writes pathspider's field names; the rules, and where they part from pathspider's code, are
// in chains.hpp's list (README "Chains").
#include "flowmark/observe/chains.hpp"

#include <algorithm>
#include <cstring>
#include <fmt/format.h>

#include "flowmark/core/flow_label_bits.hpp"
#include "flowmark/observe/observer.hpp"

namespace flowmark::observe {
namespace {

constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kAck = 0x10;

template <class S>
S& as(std::byte* p) noexcept {
  return *reinterpret_cast<S*>(p);
}
template <class S>
const S& as(const std::byte* p) noexcept {
  return *reinterpret_cast<const S*>(p);
}

// A chain D whose state is the struct S; its on_quick() runs inlined over a batch. None of
// the built-in chains completes a flow from its fast form (D::kQuickCompletes = true would
// say one does).
template <class S, class D>
class ChainOf : public Chain {
 public:
  static constexpr bool kQuickCompletes = false;
  std::size_t state_size() const noexcept override { return sizeof(S); }
  std::size_t state_align() const noexcept override { return alignof(S); }
  bool quick() const noexcept override { return true; }
  bool quick_completes() const noexcept override { return D::kQuickCompletes; }
  void on_quick_batch(std::span<QuickItem> items, std::size_t offset) noexcept override {
    D& self = static_cast<D&>(*this);
    for (QuickItem& it : items)
      it.complete |=
          self.D::on_quick(*it.record, it.states + offset, it.facts, it.rev) == Verdict::kComplete;
  }
};

bool is_tcp(const PacketView& p) noexcept { return p.proto == kProtoTcp && p.l4 != nullptr; }
bool is_syn(const PacketView& p) noexcept { return is_tcp(p) && (p.tcp_flags & kSyn) != 0; }
std::uint32_t be32(const std::uint8_t* b) noexcept {
  return std::uint32_t{b[0]} << 24 | std::uint32_t{b[1]} << 16 | std::uint32_t{b[2]} << 8 | b[3];
}

// The TCP options of p (captured bytes only): f(kind, data, data_length) for each. EOL ends
// the walk, NOP is one byte; a length below 2 ends it (pathspider loops forever on 0); an
// option cut by the end of the header is given with the data that is there, and ends it.
template <class F>
void for_each_tcp_option(const PacketView& p, F&& f) {
  if (!is_tcp(p) || p.l4_captured < 20) return;
  const std::size_t end = std::min<std::size_t>(std::size_t{p.l4[12]} >> 4 << 2, p.l4_captured);
  std::size_t i = 20;
  while (i < end) {
    const std::uint8_t kind = p.l4[i];
    if (kind == 0) return;
    if (kind == 1) {
      ++i;
      continue;
    }
    if (end - i < 2) return;
    const std::size_t len = p.l4[i + 1];
    if (len < 2) return;
    const std::size_t have = std::min(len, end - i);
    f(kind, p.l4 + i + 2, have - 2);
    i += len;
  }
}

// Inlined, so that FieldWriter sees each name as a constant (see FieldWriter::begin_known).
[[gnu::always_inline]] inline void nullable(FieldWriter& w, std::string_view name, bool present,
                                            std::uint64_t v) {
  if (present)
    w.number(name, v);
  else
    w.null(name);
}
[[gnu::always_inline]] inline void nullable_bool(FieldWriter& w, std::string_view name,
                                                 bool present, bool v) {
  if (present)
    w.boolean(name, v);
  else
    w.null(name);
}

// --- tcp: SYN flags each way, FIN / RST each way, the handshake ------------------------------
struct TcpState {
  std::uint8_t syn[2];  // flags of the last SYN that way (a SYN has bit 0x02: 0 = none)
  std::uint8_t bits;    // kFin/kRst << 0 forward, << 4 reverse; kConnected
};
constexpr std::uint8_t kConnected = 0x08;

class TcpChain final : public ChainOf<TcpState, TcpChain> {
 public:
  std::string_view name() const noexcept override { return "tcp"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookTcp | kHookQuick; }
  unsigned quick_kinds() const noexcept override { return kQuickTcp4 | kQuickTcp6; }
  bool quick_facts() const noexcept override { return false; }  // flags only
  std::vector<std::string> columns() const override {
    return {"tcp_synflags_fwd", "tcp_synflags_rev", "tcp_fin_fwd",  "tcp_fin_rev",
            "tcp_rst_fwd",      "tcp_rst_rev",      "tcp_connected"};
  }
  Verdict on_transport(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    if (p.l4 == nullptr) return Verdict::kContinue;
    TcpState& s = as<TcpState>(st);
    if (p.tcp_flags & kSyn) s.syn[rev] = p.tcp_flags;
    segment(s, p.tcp_flags, rev);
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    if (q.proto != kProtoTcp) return Verdict::kContinue;
    TcpState& s = as<TcpState>(st);
    if (q.tcp_flags & kSyn) s.syn[rev] = q.tcp_flags;
    segment(s, q.tcp_flags, rev);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const TcpState& s = as<TcpState>(st);
    nullable(w, "tcp_synflags_fwd", s.syn[0] != 0, s.syn[0]);
    nullable(w, "tcp_synflags_rev", s.syn[1] != 0, s.syn[1]);
    w.boolean("tcp_fin_fwd", s.bits & kFin);
    w.boolean("tcp_fin_rev", s.bits & (kFin << 4));
    w.boolean("tcp_rst_fwd", s.bits & kRst);
    w.boolean("tcp_rst_rev", s.bits & (kRst << 4));
    w.boolean("tcp_connected", s.bits & kConnected);
  }

 private:
  static void segment(TcpState& s, std::uint8_t flags, bool rev) noexcept {
    s.bits |= static_cast<std::uint8_t>((flags & (kFin | kRst)) << (rev ? 4 : 0));
    // The handshake: a forward ACK after a forward SYN and a reverse SYN+ACK.
    if (!rev && (flags & kAck) && (s.syn[0] & kSyn) && (s.syn[1] & (kSyn | kAck)) == (kSyn | kAck))
      s.bits |= kConnected;
  }
};

// --- ecn: ECT(0) / ECT(1) / CE on SYN and on other packets, each way --------------------------
struct EcnState {
  std::uint16_t bits;  // bit (rev * 6 + data * 3 + mark - 1): mark 1 ECT(1)… see index()
};

// Column order: direction, then syn/data, then ect0, ect1, ce (bit i of EcnState::bits).
constexpr std::string_view kEcnColumns[12] = {
    "ecn_ect0_syn_fwd",  "ecn_ect1_syn_fwd",  "ecn_ce_syn_fwd",    "ecn_ect0_data_fwd",
    "ecn_ect1_data_fwd", "ecn_ce_data_fwd",   "ecn_ect0_syn_rev",  "ecn_ect1_syn_rev",
    "ecn_ce_syn_rev",    "ecn_ect0_data_rev", "ecn_ect1_data_rev", "ecn_ce_data_rev"};

class EcnChain final : public ChainOf<EcnState, EcnChain> {
 public:
  std::string_view name() const noexcept override { return "ecn"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookIp | kHookQuick; }
  std::vector<std::string> columns() const override {
    return {std::begin(kEcnColumns), std::end(kEcnColumns)};
  }
  Verdict on_ip(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    mark(as<EcnState>(st), p.tos, is_syn(p), rev);
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    mark(as<EcnState>(st), q.tos, q.proto == kProtoTcp && (q.tcp_flags & kSyn), rev);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    // Written from the constant names: write() runs once per record. Unrolled, each name is
    // a constant that FieldWriter compares with its column's without loading it.
    const unsigned bits = as<EcnState>(st).bits;
#pragma GCC unroll 12
    for (std::size_t i = 0; i < std::size(kEcnColumns); ++i)
      w.boolean(kEcnColumns[i], (bits >> i) & 1);
  }

 private:
  // Column order: direction, then syn/data, then ect0, ect1, ce.
  static void mark(EcnState& s, std::uint8_t tos, bool syn, bool rev) noexcept {
    static constexpr int kSlot[4] = {-1, 1, 0, 2};  // ECN bits 01 ECT(1), 10 ECT(0), 11 CE
    const int slot = kSlot[tos & 3];
    if (slot < 0) return;
    s.bits |= static_cast<std::uint16_t>(1u << (rev * 6 + (syn ? 0 : 3) + slot));
  }
};

// --- dscp: the codepoint on SYNs and on other packets, each way ------------------------------
struct DscpState {
  std::uint8_t syn[2], data[2];  // 0x80 | DSCP; 0 = none seen
};

class DscpChain final : public ChainOf<DscpState, DscpChain> {
 public:
  std::string_view name() const noexcept override { return "dscp"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookIp | kHookQuick; }
  std::vector<std::string> columns() const override {
    return {"dscp_mark_syn_fwd", "dscp_mark_syn_rev", "dscp_mark_data_fwd", "dscp_mark_data_rev"};
  }
  Verdict on_ip(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    DscpState& s = as<DscpState>(st);
    const auto v = static_cast<std::uint8_t>(0x80 | p.tos >> 2);
    if (is_tcp(p)) {
      if (p.tcp_flags & kSyn) {
        s.syn[rev] = v;
        return Verdict::kContinue;
      }
      if (p.payload_length == 0) return Verdict::kContinue;
    }
    data(s, v, rev);
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    DscpState& s = as<DscpState>(st);
    const auto v = static_cast<std::uint8_t>(0x80 | q.tos >> 2);
    if (q.proto == kProtoTcp) {
      if (q.tcp_flags & kSyn) {
        s.syn[rev] = v;
        return Verdict::kContinue;
      }
      if (q.payload_length == 0) return Verdict::kContinue;
    }
    data(s, v, rev);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const DscpState& s = as<DscpState>(st);
    nullable(w, "dscp_mark_syn_fwd", s.syn[0] != 0, s.syn[0] & 0x3f);
    nullable(w, "dscp_mark_syn_rev", s.syn[1] != 0, s.syn[1] & 0x3f);
    nullable(w, "dscp_mark_data_fwd", s.data[0] != 0, s.data[0] & 0x3f);
    nullable(w, "dscp_mark_data_rev", s.data[1] != 0, s.data[1] & 0x3f);
  }

 private:
  // The first nonzero codepoint (pathspider's `rec[k] or dscp`): a zero one is replaced.
  static void data(DscpState& s, std::uint8_t v, bool rev) noexcept {
    if ((s.data[rev] & 0x3f) == 0) s.data[rev] = v;
  }
};

// --- mss: the MSS option of SYNs, each way ---------------------------------------------------
struct MssState {
  std::uint8_t len[2];     // option length (2 + data bytes present), 0 = none; 0x80: data > 4
  std::uint32_t value[2];  // big-endian value of the data bytes
};

class MssChain final : public ChainOf<MssState, MssChain> {
 public:
  std::string_view name() const noexcept override { return "mss"; }
  unsigned hooks() const noexcept override { return kHookTcp; }
  std::vector<std::string> columns() const override {
    return {"mss_len_fwd", "mss_len_rev", "mss_value_fwd", "mss_value_rev"};
  }
  Verdict on_transport(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    if (!is_syn(p)) return Verdict::kContinue;
    MssState& s = as<MssState>(st);
    for_each_tcp_option(p, [&](std::uint8_t kind, const std::uint8_t* d, std::size_t n) {
      if (kind != 2) return;  // the last MSS option wins (pathspider keeps a dict)
      std::uint32_t v = 0;
      for (std::size_t i = 0; i < std::min<std::size_t>(n, 4); ++i) v = v << 8 | d[i];
      s.len[rev] = static_cast<std::uint8_t>((n + 2) | (n > 4 ? 0x80 : 0));  // n + 2 <= 40
      s.value[rev] = v;
    });
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const MssState& s = as<MssState>(st);
    nullable(w, "mss_len_fwd", s.len[0] != 0, s.len[0] & 0x7f);
    nullable(w, "mss_len_rev", s.len[1] != 0, s.len[1] & 0x7f);
    nullable(w, "mss_value_fwd", s.len[0] != 0 && !(s.len[0] & 0x80), s.value[0]);
    nullable(w, "mss_value_rev", s.len[1] != 0 && !(s.len[1] & 0x80), s.value[1]);
  }
};

// --- tfo: TCP Fast Open cookies and the data on the SYN --------------------------------------
struct TfoState {
  std::uint32_t seq, ack;
  std::uint16_t dlen;
  std::uint8_t kinds;  // synkind code | ackkind code << 2 (0 none, 1: 34, 2: 254, 3: 255)
  std::uint8_t pad;
  std::uint8_t synclen, ackclen;
};
constexpr std::uint8_t kTfoKinds[4] = {0, 34, 254, 255};

class TfoChain final : public ChainOf<TfoState, TfoChain> {
 public:
  std::string_view name() const noexcept override { return "tfo"; }
  unsigned hooks() const noexcept override { return kHookTcp; }
  std::vector<std::string> columns() const override {
    return {"tfo_synkind", "tfo_ackkind", "tfo_synclen", "tfo_ackclen",
            "tfo_seq",     "tfo_dlen",    "tfo_ack"};
  }
  Verdict on_transport(FlowRecord&, std::byte* st, const PacketView& p, bool) noexcept override {
    if (!is_syn(p) || p.l4_captured < 20) return Verdict::kContinue;
    TfoState& s = as<TfoState>(st);
    const auto [code, clen] = cookie(p);
    if (!(p.tcp_flags & kAck)) {
      if (code == 0) return Verdict::kContinue;
      s.kinds = static_cast<std::uint8_t>((s.kinds & ~3u) | code);
      s.synclen = clen;
      s.seq = be32(p.l4 + 4);
      s.dlen = static_cast<std::uint16_t>(std::min<std::uint32_t>(p.payload_length, 0xffff));
      s.ack = 0;
    } else if (s.kinds & 3) {
      s.ack = be32(p.l4 + 8);
      if (code != 0) {
        s.kinds = static_cast<std::uint8_t>((s.kinds & 3u) | code << 2);
        s.ackclen = clen;
      }
    }
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const TfoState& s = as<TfoState>(st);
    w.number("tfo_synkind", kTfoKinds[s.kinds & 3]);
    w.number("tfo_ackkind", kTfoKinds[(s.kinds >> 2) & 3]);
    w.number("tfo_synclen", s.synclen);
    w.number("tfo_ackclen", s.ackclen);
    w.number("tfo_seq", s.seq);
    w.number("tfo_dlen", s.dlen);
    w.number("tfo_ack", s.ack);
  }

 private:
  struct Cookie {
    std::uint8_t code, len;
  };
  // Option 34, else 254, else 255 with the Fast Open experiment id 0xF989 (the last of each
  // kind, as pathspider's dict keeps it). pathspider reads 254's data for 255: not here.
  static Cookie cookie(const PacketView& p) noexcept {
    int len[3] = {-1, -1, -1};
    for_each_tcp_option(p, [&](std::uint8_t kind, const std::uint8_t* d, std::size_t n) {
      if (kind == 34) len[0] = static_cast<int>(n);
      if (kind == 254 || kind == 255) {
        const int i = kind == 254 ? 1 : 2;
        len[i] = n >= 2 && d[0] == 0xF9 && d[1] == 0x89 ? static_cast<int>(n - 2) : -2;
      }
    });
    for (int i = 0; i < 3; ++i)
      if (len[i] >= 0) return {static_cast<std::uint8_t>(i + 1), static_cast<std::uint8_t>(len[i])};
    return {0, 0};
  }
};

// --- udp: a zero checksum on the last datagram each way --------------------------------------
struct UdpState {
  std::uint8_t bits;  // seen fwd 1, zero fwd 2, seen rev 4, zero rev 8
};

class UdpChain final : public ChainOf<UdpState, UdpChain> {
 public:
  std::string_view name() const noexcept override { return "udp"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookUdp | kHookQuick; }
  unsigned quick_kinds() const noexcept override { return kQuickUdp4 | kQuickUdp6; }
  std::vector<std::string> columns() const override {
    return {"udp_zero_checksum_fwd", "udp_zero_checksum_rev"};
  }
  Verdict on_transport(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    if (p.l4 != nullptr && p.l4_captured >= 8)
      datagram(as<UdpState>(st), p.l4[6] == 0 && p.l4[7] == 0, rev);
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    if (q.proto == kProtoUdp) datagram(as<UdpState>(st), q.udp_zero_checksum, rev);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const unsigned b = as<UdpState>(st).bits;
    nullable_bool(w, "udp_zero_checksum_fwd", b & 1, b & 2);
    nullable_bool(w, "udp_zero_checksum_rev", b & 4, b & 8);
  }

 private:
  static void datagram(UdpState& s, bool zero, bool rev) noexcept {
    const unsigned shift = rev ? 2 : 0;
    s.bits = static_cast<std::uint8_t>((s.bits & ~(3u << shift)) | (1u | (zero ? 2u : 0u)) << shift);
  }
};

// --- icmp: a destination-unreachable coming back ---------------------------------------------
struct IcmpState {
  std::uint8_t unreachable;
};

class IcmpChain final : public ChainOf<IcmpState, IcmpChain> {
 public:
  std::string_view name() const noexcept override { return "icmp"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookOther; }
  std::vector<std::string> columns() const override { return {"icmp_unreachable"}; }
  Verdict on_transport(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    IcmpState& s = as<IcmpState>(st);
    const bool unreachable = (p.ip_version == 4 && p.proto == kProtoIcmp && p.icmp_type == 3) ||
                             (p.ip_version == 6 && p.proto == kProtoIcmpv6 && p.icmp_type == 1);
    if (rev && unreachable && p.l4 != nullptr) s.unreachable = 1;
    // As pathspider: the flow is complete once an unreachable came back.
    return s.unreachable ? Verdict::kComplete : Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    w.boolean("icmp_unreachable", as<IcmpState>(st).unreachable != 0);
  }
};

// --- evil: RFC 3514's bit on SYNs and on the first other packet, each way (IPv4) -------------
struct EvilState {
  std::uint8_t bits;  // per way (fwd << 0, rev << 4): syn seen 1, syn evil 2, data seen 4, data evil 8
};

class EvilChain final : public ChainOf<EvilState, EvilChain> {
 public:
  std::string_view name() const noexcept override { return "evil"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookIp | kHookQuick; }
  unsigned quick_kinds() const noexcept override { return kQuickTcp4 | kQuickUdp4; }
  std::vector<std::string> columns() const override {
    return {"evilbit_syn_fwd", "evilbit_syn_rev", "evilbit_data_fwd", "evilbit_data_rev"};
  }
  Verdict on_ip(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    if (p.ip_version != 4) return Verdict::kContinue;
    EvilState& s = as<EvilState>(st);
    const unsigned shift = rev ? 4 : 0;
    if (is_tcp(p)) {
      if (p.tcp_flags & kSyn) {
        s.bits = static_cast<std::uint8_t>((s.bits & ~(3u << shift)) |
                                           (1u | (p.ip_reserved_flag ? 2u : 0u)) << shift);
        return Verdict::kContinue;
      }
      if (p.payload_length == 0) return Verdict::kContinue;
    }
    data(s, p.ip_reserved_flag, shift);
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    if (q.ip_version != 4) return Verdict::kContinue;
    EvilState& s = as<EvilState>(st);
    const unsigned shift = rev ? 4 : 0;
    if (q.proto == kProtoTcp) {
      if (q.tcp_flags & kSyn) {
        s.bits = static_cast<std::uint8_t>((s.bits & ~(3u << shift)) |
                                           (1u | (q.ip_reserved_flag ? 2u : 0u)) << shift);
        return Verdict::kContinue;
      }
      if (q.payload_length == 0) return Verdict::kContinue;
    }
    data(s, q.ip_reserved_flag, shift);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const unsigned b = as<EvilState>(st).bits;
    nullable_bool(w, "evilbit_syn_fwd", b & 1, b & 2);
    nullable_bool(w, "evilbit_syn_rev", b & 0x10, b & 0x20);
    nullable_bool(w, "evilbit_data_fwd", b & 4, b & 8);
    nullable_bool(w, "evilbit_data_rev", b & 0x40, b & 0x80);
  }

 private:
  static void data(EvilState& s, bool evil, unsigned shift) noexcept {
    if (s.bits & (4u << shift)) return;  // the first one is kept
    s.bits = static_cast<std::uint8_t>(s.bits | (4u | (evil ? 8u : 0u)) << shift);
  }
};

// --- scitags: the flow label each way, and the experiment and activity it or the option carry
struct ScitagsState {
  std::uint32_t label[2];  // label | kSeen | kChanged
  std::uint16_t experiment;
  std::uint8_t activity;
  std::uint8_t source;  // ScitagsTag::Source
};
constexpr std::uint32_t kLabelSeen = 1u << 20, kLabelChanged = 1u << 21;

constexpr std::uint8_t kSourceMask = 3, kTagKnown = 4;  // ScitagsState::source bits

class ScitagsChain final : public ChainOf<ScitagsState, ScitagsChain> {
 public:
  // Whether the registry names an (experiment, activity) pair a label carries is asked the
  // first time the pair is seen and kept (a bit per pair, 512 x 64), so that later labels are
  // judged by a bit test. (Asking all 32,768 pairs here cost more than most captures: 2 ms per
  // observer, every worker and every Python observer.)
  explicit ScitagsChain(ScitagsNames names)
      : names_(std::move(names)), known_(names_.activity ? 512 : 0), asked_(known_.size()) {}
  std::string_view name() const noexcept override { return "scitags"; }
  bool quick_syn() const noexcept override { return true; }
  unsigned hooks() const noexcept override { return kHookIp | kHookQuick; }
  unsigned quick_kinds() const noexcept override { return kQuickTcp6 | kQuickUdp6; }
  std::vector<std::string> columns() const override {
    return {"flowlabel_fwd",          "flowlabel_rev",          "flowlabel_changed_fwd",
            "flowlabel_changed_rev",  "scitags_experiment",     "scitags_activity",
            "scitags_experiment_name", "scitags_activity_name", "scitags_source"};
  }
  Verdict on_ip(FlowRecord&, std::byte* st, const PacketView& p, bool rev) noexcept override {
    // An ICMPv6 error counted on the flow it quotes carries its sender's label, not the flow's.
    if (p.ip_version != 6 || p.icmp_error) return Verdict::kContinue;
    ScitagsState& s = as<ScitagsState>(st);
    label(s, p.flow_label, rev);
    // The option wins over a label; the first option seen stays.
    using Src = ScitagsTag::Source;
    if (p.tag_where != PacketView::TagWhere::kNone &&
        ((s.source & kSourceMask) == 0 ||
         (s.source & kSourceMask) == static_cast<std::uint8_t>(Src::kFlowLabel))) {
      s.experiment = p.tag_experiment;
      s.activity = p.tag_activity;
      s.source = static_cast<std::uint8_t>(
          p.tag_where == PacketView::TagWhere::kHopByHop ? Src::kHopByHop : Src::kDestOptions);
    }
    return Verdict::kContinue;
  }
  Verdict on_quick(FlowRecord&, std::byte* st, const QuickFacts& q, bool rev) noexcept override {
    if (q.ip_version == 6) label(as<ScitagsState>(st), q.flow_label, rev);
    return Verdict::kContinue;
  }
  void write(const FlowRecord&, const std::byte* st, FieldWriter& w) const override {
    const ScitagsState& s = as<ScitagsState>(st);
    for (int d = 0; d < 2; ++d)
      nullable(w, d == 0 ? "flowlabel_fwd" : "flowlabel_rev", s.label[d] & kLabelSeen,
               s.label[d] & 0xfffff);
    for (int d = 0; d < 2; ++d)
      nullable_bool(w, d == 0 ? "flowlabel_changed_fwd" : "flowlabel_changed_rev",
                    s.label[d] & kLabelSeen, s.label[d] & kLabelChanged);
    const ScitagsTag t = scitags_tag(st);
    if (t.source == ScitagsTag::Source::kNone) {
      w.null("scitags_experiment");
      w.null("scitags_activity");
      w.null("scitags_experiment_name");
      w.null("scitags_activity_name");
      w.null("scitags_source");
      return;
    }
    w.number("scitags_experiment", t.experiment);
    w.number("scitags_activity", t.activity);
    std::optional<std::string> en, an;
    if (names_.experiment) en = names_.experiment(t.experiment);
    if (names_.activity) an = names_.activity(t.experiment, t.activity);
    if (en) w.text("scitags_experiment_name", *en); else w.null("scitags_experiment_name");
    if (an) w.text("scitags_activity_name", *an); else w.null("scitags_activity_name");
    w.text("scitags_source", to_string(t.source));
  }

 private:
  void label(ScitagsState& s, std::uint32_t value, bool rev) const noexcept {
    std::uint32_t& l = s.label[rev];
    if (!(l & kLabelSeen)) [[unlikely]] {
      l = value | kLabelSeen;
    } else if ((l & 0xfffff) != value) [[unlikely]] {
      l |= kLabelChanged;
    }
    // The first label with semantic bits gives the tag; a label the registry names replaces
    // one it does not (a host's automatic, random labels decode as pairs it rarely knows:
    // the marking host's label is the one to keep, whichever way it goes and however late
    // it starts). Options are never replaced by a label.
    const unsigned src = s.source & kSourceMask;
    const bool open = src == 0 || (src == static_cast<unsigned>(ScitagsTag::Source::kFlowLabel) &&
                                   !(s.source & kTagKnown));
    if (open && (value & label_bits::kSemanticMask) != 0) [[unlikely]] {
      const std::uint32_t e = label_bits::experiment(value), a = label_bits::activity(value);
      const bool known = is_known(e, a);
      if (src != 0 && !known) return;  // keep the first unknown one
      s.experiment = static_cast<std::uint16_t>(e);
      s.activity = static_cast<std::uint8_t>(a);
      s.source = static_cast<std::uint8_t>(
          static_cast<unsigned>(ScitagsTag::Source::kFlowLabel) | (known ? kTagKnown : 0));
    }
  }
  // e < 512 and a < 64 (the label's fields).
  bool is_known(std::uint32_t e, std::uint32_t a) const noexcept {
    if (known_.empty()) return false;  // no registry
    const std::uint64_t bit = std::uint64_t{1} << a;
    if (!(asked_[e] & bit)) [[unlikely]] {
      asked_[e] |= bit;
      try {
        if (names_.activity(e, a)) known_[e] |= bit;
      } catch (...) {  // allocation failure: judged unknown, asked again next time
        asked_[e] &= ~bit;
      }
    }
    return (known_[e] & bit) != 0;
  }
  ScitagsNames names_;
  // Bit a of word e: the registry names (e, a) / has been asked about it. An observer (and
  // its chains) belongs to one thread.
  mutable std::vector<std::uint64_t> known_, asked_;
};

}  // namespace

ScitagsTag scitags_tag(const std::byte* st) noexcept {
  const ScitagsState& s = as<ScitagsState>(st);
  ScitagsTag t;
  t.source = static_cast<ScitagsTag::Source>(s.source & kSourceMask);
  if (t.source == ScitagsTag::Source::kNone) return t;
  t.experiment = s.experiment;
  t.activity = s.activity;
  return t;
}

ScitagsLabels scitags_flow_labels(const std::byte* st) noexcept {
  if (st == nullptr) return {};
  const ScitagsState& s = as<ScitagsState>(st);
  return {s.label[0] & 0xfffff, s.label[1] & 0xfffff};
}

std::string_view to_string(ScitagsTag::Source s) noexcept {
  switch (s) {
    case ScitagsTag::Source::kFlowLabel: return "flowlabel";
    case ScitagsTag::Source::kHopByHop: return "hbh";
    case ScitagsTag::Source::kDestOptions: return "dstopt";
    case ScitagsTag::Source::kNone: break;
  }
  return "none";
}

Result<std::vector<std::string>> parse_chain_list(std::string_view list) {
  std::vector<bool> on(kChainNames.size(), false);
  on[0] = true;  // basic: the record itself
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    std::string_view name = list.substr(start, comma - start);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    if (name == "all") {
      std::fill(on.begin(), on.end(), true);
    } else {
      const auto it = std::find(kChainNames.begin(), kChainNames.end(), name);
      if (it == kChainNames.end()) {
        std::string known;
        for (const auto n : kChainNames) known += fmt::format("{} ", n);
        return fail(Errc::kInvalidArgument,
                    name.empty() ? fmt::format("--chains '{}': an empty chain name", list)
                                 : fmt::format("--chains: unknown chain '{}' (known: {}all)",
                                               name, known));
      }
      on[static_cast<std::size_t>(it - kChainNames.begin())] = true;
    }
    start = comma + 1;
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < on.size(); ++i)
    if (on[i]) out.emplace_back(kChainNames[i]);
  return out;
}

std::unique_ptr<Chain> make_chain(std::string_view name, const ChainOptions& options) {
  if (name == "tcp") return std::make_unique<TcpChain>();
  if (name == "ecn") return std::make_unique<EcnChain>();
  if (name == "dscp") return std::make_unique<DscpChain>();
  if (name == "mss") return std::make_unique<MssChain>();
  if (name == "tfo") return std::make_unique<TfoChain>();
  if (name == "udp") return std::make_unique<UdpChain>();
  if (name == "icmp") return std::make_unique<IcmpChain>();
  if (name == "evil") return std::make_unique<EvilChain>();
  if (name == "scitags") return std::make_unique<ScitagsChain>(options.names);
  return nullptr;
}

}  // namespace flowmark::observe
