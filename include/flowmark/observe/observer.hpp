// flowmark::observe — packets into bidirectional flows, with per-layer callback chains
// and timers on the packet clock (pathspider's Observer, done in C++).
//
// One canonical key per flow (endpoints ordered, protocol, ports for TCP/UDP/SCTP, the
// VLAN when asked), one lookup per packet in an open-addressing table with the keys
// stored inline. Chains, as in the seed: new-flow (may veto: the flow is ignored), IPv4,
// IPv6, TCP, UDP, other layer 4; each callback gets the record, the packet and whether
// the packet goes against the flow's first packet, and returns kContinue or kComplete.
// A completed flow is emitted `expiry_delay` later (packet clock) so trailing packets
// still count; idle flows complete after `idle_timeout`; flows longer than
// `active_timeout` are emitted in parts (continuation = true on the later parts).
// Chains (chain.hpp) keep their own per-flow state and record fields; the plain callbacks
// (add_tcp …) work on the record alone.
//
// Rules (where the seed was silent or wrong):
// - Clock: the packet clock is the largest timestamp seen; a frame stamped earlier is
//   handled at that clock (its record times never go backwards). Timers fire from
//   on_packet, each evaluated at its own deadline, before the frame is counted, however far
//   the clock jumps (records come out in deadline order up to the timer wheel's
//   granularity): a flow idle across a gap is emitted before the next packet of its
//   5-tuple, which then starts a new record.
// - Direction: forward is the first packet's direction. A self-flow (source address and
//   port equal to the destination's) counts every packet forward.
// - Order per packet: new-flow chain (new flows only; counters zero; a false vetoes: the
//   key goes to the ignored set — max_flows/16 keys, at least 1024 — refreshed by its
//   packets and forgotten after idle_timeout without one), then the built-in counting (packets,
//   octets = IP length, TCP flags, last), then the IPv4/IPv6 chain, then the TCP/UDP/other chain.
//   Every callback of the chains sees every packet; any kComplete completes the flow.
// - Completed flows stay findable for expiry_delay (trailing packets count), then are
//   emitted; a TCP SYN without ACK on a completed flow emits it at once and starts a new
//   record. Idle flows (no packet for idle_timeout) are emitted at once, without the
//   expiry delay: no trailing packet is expected. The active timeout, at first +
//   active_timeout, emits the record so far; the next packet starts a part with
//   continuation = true, zeroed counters, flags, TOS, fragments and icmp_errors (chain state
//   is kept) and first = its time; a part with no packet is not emitted.
// - Full table: the flow whose timer is due soonest is emitted and counted as evicted: the
//   least recently active flow (its idle deadline is the earliest), unless a completed flow
//   is due for emission or a flow for its active-timeout split before that. Ties are
//   broken at the timer wheel's granularity, max(idle_timeout, expiry_delay) / 4094
//   (~8 ms with the defaults).
// - Fragments: a first fragment maps (addresses, protocol, IP id) to its ports for
//   fragment_timeout (max_flows/64 entries, at least 256); later fragments count on that flow, in
//   their own direction (record.fragments++; only the IP chain sees them: they carry no transport
//   header).
// - ICMP/ICMPv6 errors (as in pathspider): an error quoting a packet of a flow held (active
//   or expiring) belongs to that flow: icmp_errors++, and the error packet counts as one of
//   its packets, against the quoted packet's direction, through the IP chain and the other-
//   layer-4 chain (its own protocol's); it makes no record of its own. With icmp_flows, or
//   when the quoted flow is not held, the error packet is counted in its own 3-tuple flow
//   (proto 1 or 58, no ports), the quoted flow (if held) still getting icmp_errors++.
//   An error quoting a flow the new-flow chain vetoed is skipped as that flow's packets are
//   (ignored_packets++), unless icmp_flows.
// - Chains must not change the key fields (sip, dip, sp, dp, proto, ip_version, vlan) nor
//   first/last: the observer finds flows and runs timers with them. Callbacks and the sink
//   must not throw (the data path is noexcept) and must not call back into the Observer.
//
//   Observer obs({.idle_timeout_ns = 30'000'000'000}, [](const FlowRecord& r) { print(r); });
//   obs.add_tcp(tcp_complete_on_fin_or_rst);
//   for each frame: obs.on_packet(ts_ns, LinkType::kEthernet, frame);
//   obs.finish();   // end of input or interrupt: everything left is emitted
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/observe/chain.hpp"
#include "flowmark/observe/packet.hpp"

namespace flowmark::observe {

using Nanos = std::int64_t;  // packet-clock time: nanoseconds since the epoch

// flowEndReason (IANA IPFIX registry, element 136).
enum class EndReason : std::uint8_t {
  kNone = 0,             // not emitted yet
  kIdleTimeout = 1,      // no packet for idle_timeout
  kActiveTimeout = 2,    // a part of a flow longer than active_timeout
  kEndDetected = 3,      // completed: FIN both ways, RST, or a chain's kComplete
  kForcedEnd = 4,        // still held at finish() (end of the capture, interrupt)
  kLackOfResources = 5,  // evicted: the table was full
};
// biflowDirection (RFC 5103 §6.3, element 239).
enum class BiflowDirection : std::uint8_t { kArbitrary = 0, kInitiator = 1, kReverseInitiator = 2 };

// One flow. Forward is the direction of the flow's first packet; octets count the IP
// layer (header included), as in the seed.
struct FlowRecord {
  IpAddress sip, dip;            // first packet's source and destination
  std::uint16_t sp = 0, dp = 0;  // ports (0 when has_ports is false)
  std::uint8_t proto = 0;
  std::uint8_t ip_version = 0;
  std::uint16_t vlan = 0;  // outer VLAN id when keyed by VLAN (else the first seen)
  Nanos first = 0, last = 0;
  std::uint64_t pkt_fwd = 0, pkt_rev = 0, oct_fwd = 0, oct_rev = 0;
  std::uint8_t tcp_flags_fwd = 0, tcp_flags_rev = 0;  // OR of the flags seen
  // TOS / traffic class of the record's first packet each way (ObserverConfig::record_tos;
  // else 0): of this part's, for a flow split by the active timeout. An ICMP error counted on
  // the flow is one of its packets.
  std::uint8_t tos_fwd = 0, tos_rev = 0;
  std::uint32_t fragments = 0;    // non-first fragments attributed to this flow
  std::uint32_t icmp_errors = 0;  // ICMP errors quoting a packet of this flow
  bool continuation = false;      // a later part of a flow split by the active timeout
  // sp/dp are ports: a TCP/UDP/SCTP flow keyed by its 5-tuple. False for the 3-tuple flows
  // (ICMP, other protocols, non-first fragments whose first was not seen): the record
  // formats write sp and dp as null (JSON) or empty (CSV) then, as pathspider writes None.
  bool has_ports = false;
  // Why the observer emitted the record (IPFIX flowEndReason values, RFC 7012): set as it is
  // handed to the sink.
  EndReason end_reason = EndReason::kNone;
  // Who opened the flow (IPFIX biflowDirection values, RFC 5103): kInitiator when the
  // record's first packet was a TCP SYN without ACK (forward opened the connection),
  // kReverseInitiator when it was a SYN+ACK (the answer was seen first: the reverse side
  // opened it), else kArbitrary. Kept across the parts of a flow split by the active timeout.
  BiflowDirection direction = BiflowDirection::kArbitrary;
};

// Out-of-range values are not errors here (the programs reject them first): a negative
// expiry delay is 0, an active timeout <= 0 disables splitting, an idle or fragment timeout
// <= 0 takes its default, max_flows is clamped to 1 .. 2^30. Address space is reserved for
// max_flows up front; the table starts at 4,096 flows and doubles when full (up to
// max_flows), and memory is committed as flows arrive (Observer::bytes_per_flow() each).
struct ObserverConfig {
  Nanos expiry_delay_ns = 5'000'000'000;        // completed → emitted
  Nanos idle_timeout_ns = 30'000'000'000;       // no packet for this long → completed
  Nanos active_timeout_ns = 1'800'000'000'000;  // longer flows are emitted in parts
  std::size_t max_flows = 1 << 20;              // table bound; beyond it the oldest is evicted
  bool key_vlan = false;                        // the outer VLAN id is part of the flow key
  Nanos fragment_timeout_ns = 30'000'000'000;   // fragment-id → flow entries live this long
  bool icmp_flows = false;  // ICMP errors quoting a held flow also make their own 3-tuple flow
  // FlowRecord::tos_fwd/tos_rev are filled (for the IPFIX export's ipClassOfService): the fast
  // path then reads each packet's TOS byte too.
  bool record_tos = false;
};

// packets: frames seen; non_ip: kNotIp; short_packets: kTruncatedL4 (decode_errors counts
// every reason, these two included); fragments: non-first IP fragments; fragments_unmatched:
// those of TCP/UDP/SCTP whose first fragment was not seen (counted on a 3-tuple flow);
// flows: flows started (continuation parts not included); ignored: flows vetoed by the
// new-flow chain; ignored_packets: later packets of vetoed flows, skipped; evicted: flows
// emitted early because the table was full; emitted: records handed to the sink;
// late_packets: frames whose timestamp was behind the packet clock (counted at the clock).
struct ObserverStats {
  std::uint64_t packets = 0, non_ip = 0, short_packets = 0, fragments = 0, fragments_unmatched = 0,
                icmp_errors_matched = 0, flows = 0, ignored = 0, evicted = 0, emitted = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(DecodeError::kCount)> decode_errors{};
  std::uint64_t ignored_packets = 0, late_packets = 0;
};

// One captured frame for Observer::on_packets(): its packet-clock time and its bytes (the
// caller owns them and keeps them alive for the call).
struct FrameRef {
  Nanos ts_ns = 0;
  std::span<const std::byte> frame;
};

using NewFlowFn = std::function<bool(FlowRecord&, const PacketView&)>;
using PacketFn = std::function<Verdict(FlowRecord&, const PacketView&, bool rev)>;
using RecordSink = std::function<void(const FlowRecord&)>;

class Observer {
 public:
  Observer(ObserverConfig config, RecordSink sink);
  ~Observer();
  Observer(Observer&&) noexcept;
  Observer& operator=(Observer&&) noexcept;

  void add_new_flow(NewFlowFn f);
  void add_ip4(PacketFn f);
  void add_ip6(PacketFn f);
  void add_tcp(PacketFn f);
  void add_udp(PacketFn f);
  void add_l4(PacketFn f);  // every other transport protocol
  // A chain (chain.hpp), called after the plain callbacks of each hook, in the order added.
  // Chains are added before the first packet (std::logic_error after it).
  void add_chain(std::unique_ptr<Chain> chain);
  const std::vector<std::unique_ptr<Chain>>& chains() const noexcept;
  // The state of chain i for a record the observer holds (in a callback or the sink);
  // nullptr for any other record (a copy).
  const std::byte* chain_state(const FlowRecord& r, std::size_t i) const noexcept;
  // chain_state(r, i) for the first states.size() chains at once (one lookup of r, not one a
  // chain: what the record writers use); every one nullptr for a record not held.
  void chain_states(const FlowRecord& r, std::span<const std::byte*> states) const noexcept;
  // The chains' columns with their JSON prefixes, for the record writers' FieldWriter.
  const FieldPrefixes& field_prefixes() const noexcept;

  // One captured frame at packet-clock time ts_ns. Timers fire from here, each at its own
  // deadline, before the packet is counted.
  void on_packet(Nanos ts_ns, LinkType link, std::span<const std::byte> frame) noexcept;
  // The same as on_packet() for each frame in turn (same records, statistics and callback
  // order). With a batch the observer decodes a few frames ahead and starts loading their
  // flows from memory while it counts earlier ones: with a table much larger than the
  // caches, that hides most of the memory latency which bounds on_packet(). While no plain
  // callback but tcp_complete_on_fin_or_rst is registered (the new-flow chain aside) and
  // every chain has a fast form (Chain::quick), the packets of existing flows in the common
  // frames — Ethernet with at most two VLAN tags, IPv4 not fragmented or IPv6 without
  // extension headers, TCP or UDP; with chains, not SYN segments — are counted without a
  // PacketView being made, and the chains' on_quick run over them in small batches
  // (Chain::on_quick_batch), each chain seeing a flow's packets in order.
  void on_packets(LinkType link, std::span<const FrameRef> frames) noexcept;
  // Moves the packet clock to ts_ns (if later) without a frame: the timers due by then fire,
  // as a frame at ts_ns would make them. For an observer that sees part of a capture (one of
  // `flowmark observe --workers N`): the clock stays the whole capture's.
  void advance_clock(Nanos ts_ns) noexcept;
  // advance_clock(ts_ns), then whether `frame` is an ICMP error quoting a packet of a flow this
  // observer holds (or has vetoed: without icmp_flows its error is skipped with it), i.e.
  // whether on_packet() would count it on that flow rather than in a flow of its own. Counts
  // nothing. For `--workers`: the error then goes to the worker of the quoted flow, else to
  // the worker of its own addresses.
  bool quotes_held_flow(LinkType link, std::span<const std::byte> frame, Nanos ts_ns) noexcept;
  // Emits everything still held (expiring first, then active) and returns.
  void finish() noexcept;

  const ObserverStats& stats() const noexcept;
  // Flows held: active ones and completed ones waiting for their expiry delay.
  std::size_t active_flows() const noexcept;
  // Bytes of memory held per flow slot (table entry, timers, the chains' state), for the
  // ≤ 200 B (default chains) / ≤ 224 B (all chains) targets.
  std::size_t bytes_per_flow() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The seed's built-in chains, in our form: basic_flow/basic_count are built into every
// record (addresses, protocol, ports, counters). This one completes a TCP flow when both
// sides have sent FIN, or on RST.
Verdict tcp_complete_on_fin_or_rst(FlowRecord& r, const PacketView& p, bool rev);

}  // namespace flowmark::observe
