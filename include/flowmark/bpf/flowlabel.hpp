// flowmark::bpf — the kernel datapath of flow-label marking: a TC program on clsact egress
// that writes the Scitags label of each flow in its map into the IPv6 header.
//
// FlowLabelMarker owns the loaded program (a libbpf skeleton embedded in the binary) and
// the TC filters it adds; destroying it removes exactly those filters (and the clsact
// qdisc if it created it). Filters of ours carry a fixed handle, priority and program
// name, so that a crashed process's leftovers are found (find_hooks) and removed
// (clean_hooks, `flowmark bpf clean`, and attach() itself).
//
//   FM_TRY(auto marker, bpf::FlowLabelMarker::load());
//   FM_TRY_VOID(marker.attach("eth0"));
//   FM_TRY(auto label, scitags::encode_flow_label(exp, act, entropy));
//   bpf::FlowTuple flow{src, dst, 40000, 443, IPPROTO_TCP};
//   auto r = marker.set(flow, label);           // error when the map is full: not silent
//   ...
//   marker.erase(flow);                         // at the end of the flow
//
// Rules mark flows that have no entry, in the kernel, without one entry per flow:
//   FM_TRY(auto all, Network::parse("::/0"));
//   FM_TRY_VOID(marker.set_rules({{all, 0, 65535, {semantic_label_bits}}}));  // perfSONAR
//
// Needs CAP_BPF and CAP_NET_ADMIN (or root); errors say so. Not thread-safe: one owner.
#pragma once

#include <netinet/in.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/network.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::bpf {

// The marks of our TC filter: handle, priority (egress of a clsact qdisc) and the name of
// the program behind it. The priority is low (runs early) and unusual (rarely taken).
inline constexpr std::uint32_t kFilterHandle = 0xF10E;
inline constexpr std::uint32_t kFilterPriority = 0xF1;
inline constexpr std::string_view kProgramName = "flowmark_egress";
inline constexpr std::size_t kDefaultCapacity = 100000;
// The handshake map's entries (the backend's handshake_capacity; FLOWMARK_HANDSHAKE_ENTRIES
// in the BPF object is the size it is created with before user space resizes it).
inline constexpr std::size_t kDefaultHandshakeCapacity = 8192;
inline constexpr std::size_t kMaxHandshakeCapacity = 1 << 20;
// Rules: distinct destination prefixes, and port ranges that can apply to one prefix (its
// own rules' and those of the shorter prefixes that cover it).
inline constexpr std::size_t kMaxRulePrefixes = 1024;
inline constexpr std::size_t kMaxRulePortRanges = 16;

// One flow as it leaves this host: IPv6 addresses, ports in host order, TCP or UDP.
struct FlowTuple {
  IpAddress src;
  IpAddress dst;
  std::uint16_t src_port = 0;
  std::uint16_t dst_port = 0;
  std::uint8_t protocol = IPPROTO_TCP;
};

// Per-packet outcomes counted by the program, summed over the CPUs.
struct Counters {
  std::uint64_t marked = 0;            // marked by its flow entry
  std::uint64_t marked_rule = 0;       // no flow entry, marked by a rule (set_rules)
  std::uint64_t marked_handshake = 0;  // a SYN-ACK marked by its handshake entry
  std::uint64_t not_in_map = 0;        // IPv6 TCP/UDP of a flow not in the map, no rule
  std::uint64_t not_ipv6 = 0;          // IPv4, ARP, ...
  std::uint64_t parse_error = 0;       // truncated or malformed headers
  std::uint64_t not_tcp_udp = 0;       // ICMPv6 and other protocols, non-first fragments
  // The extension-header option, for flows that ask for it (Mark::ext_header):
  std::uint64_t ext_added = 0;    // inserted
  std::uint64_t ext_too_big = 0;  // not inserted: would exceed the device MTU
  std::uint64_t ext_skipped = 0;  // not inserted: extension headers / VLAN tag in the frame,
                                  // or the kernel cannot grow it (UDP GSO)
};

// Where else the Scitags ids go, besides the flow label (spec §4, flowd-go's option).
enum class ExtHeader : std::uint8_t {
  kNone = 0,
  kHopByHop = 1,            // a new hop-by-hop options header, option type 0x1E
  kDestinationOptions = 2,  // a new destination-options header, option type 0x1E
  kBoth = 3,                // both: hop-by-hop, then destination options (16 bytes)
};

// What the program writes into the packets of one flow.
struct Mark {
  std::uint32_t label = 0;  // low 20 bits: the flow label (scitags::encode_flow_label)
  ExtHeader ext_header = ExtHeader::kNone;
  std::uint16_t experiment = 0;  // for the extension-header option only
  std::uint8_t activity = 0;     // for the extension-header option only
  // false: the flow label is left as it is, the ids go in the extension header(s) only
  // (flowd-go's hopByHop, destination and hopByHopDestination strategies).
  bool write_label = true;
};

// The map value's ext_header byte for these (FLOWMARK_EXT_* of bpf/flowlabel.h): what another
// BPF object writing entries of this map (the kernel-events source's handshake marks) puts.
std::uint8_t ext_header_byte(ExtHeader ext, bool write_label) noexcept;

// A rule evaluated in the kernel for the packets of flows that have no entry: destination
// in `destination` (IPv6; ::/0 = all) and destination port in [port_first, port_last]. The
// most specific prefix decides; among the rules of one prefix the first that holds the
// port. `mark.label` carries the experiment and activity bits only: the program adds 5
// entropy bits from a hash of the 5-tuple, so a flow keeps one label.
struct MarkRule {
  Network destination;
  std::uint16_t port_first = 0;
  std::uint16_t port_last = 65535;
  Mark mark;
};

// What FlowLabelMarker::set_rules() refuses, found without the kernel (for --check): a
// prefix that is not IPv6, an empty port range, more than kMaxRulePrefixes prefixes, more
// than kMaxRulePortRanges rules applying to one prefix.
Result<void> check_rules(std::span<const MarkRule> rules);

// The user-space side of the map: what set()/erase() did.
struct MapStats {
  std::size_t fill = 0;             // flows in the map now
  std::size_t capacity = 0;         // set() refuses new flows beyond this
  std::uint64_t inserted = 0;       // set() of a new flow
  std::uint64_t replaced = 0;       // set() of a flow already there (label changed)
  std::uint64_t erased = 0;         // erase() that removed a flow
  std::uint64_t rejected_full = 0;  // set() refused: map full
  std::uint64_t errors = 0;         // other failed map updates
};

enum class SetOutcome { kInserted, kReplaced };

// The marker's map as another BPF object of the same process uses it (bpf_map__reuse_fd):
// the kernel-events program puts connections in it before their first packet. The fds stay
// the marker's. `fill_fd`: a one-entry BPF array (BPF_F_MMAPABLE) holding the count of
// entries, which both writers keep and hold to `capacity`.
// `handshakes_fd`: the map of the passive side's SYN-ACKs (FLOWMARK_HANDSHAKE_ENTRIES, an LRU
// of its own: a SYN flood evicts handshakes, never flows).
struct SharedFlowMap {
  int flows_fd = -1;
  int fill_fd = -1;
  std::size_t capacity = 0;
  int handshakes_fd = -1;
};

struct MarkerOptions {
  // Flows the map holds. The LRU map is created larger than this, and set() refuses
  // new flows beyond it, so that the kernel never evicts a live flow silently.
  std::size_t capacity = kDefaultCapacity;
  // Entries of the handshake map (an LRU of the accepting side's SYN-ACKs).
  std::size_t handshake_capacity = kDefaultHandshakeCapacity;
};

// One interface we attached to.
struct Attachment {
  std::string ifname;
  std::uint32_t ifindex = 0;
  bool created_clsact = false;     // we created the clsact qdisc (and remove it if empty)
  bool replaced_leftover = false;  // a crashed run's filter of ours was there and replaced
};

class FlowLabelMarker {
 public:
  // Opens and loads the embedded program and maps. Errors name what is missing
  // (privileges, kernel support).
  static Result<FlowLabelMarker> load(const MarkerOptions& options = {});

  FlowLabelMarker(FlowLabelMarker&&) noexcept;
  FlowLabelMarker& operator=(FlowLabelMarker&&) noexcept;
  ~FlowLabelMarker();  // detach_all()

  // Adds our filter on the egress of `ifname`'s clsact qdisc, creating the qdisc only
  // when absent. Keeps other qdiscs and filters. A leftover filter of ours (same handle,
  // priority and program name) is replaced; a foreign filter at our handle and priority
  // is an error. Attaching twice to one interface is a no-op.
  Result<void> attach(std::string_view ifname);
  // Removes our filter from `ifname` (only if it still runs our program), then the clsact
  // qdisc if we created it and no filter is left in it. An interface that is gone (its
  // filters and qdisc went with it) is forgotten without error.
  Result<void> detach(std::string_view ifname);
  void detach_all() noexcept;
  const std::vector<Attachment>& attachments() const noexcept;

  // Marks `flow` with the low 20 bits of `label` (encode it with scitags::encode_flow_label).
  // Errors: not IPv6 / not TCP or UDP (kInvalidArgument), map full (kTruncated, counted
  // in rejected_full), kernel refusal (errno).
  Result<SetOutcome> set(const FlowTuple& flow, std::uint32_t label);
  // The same, optionally adding the extension-header option (only to packets with no
  // extension header yet, and only when the grown packet fits the device MTU).
  Result<SetOutcome> set(const FlowTuple& flow, const Mark& mark);
  // Replaces the rules (none by default). Errors: a prefix that is not IPv6, more than
  // kMaxRulePrefixes prefixes, more than kMaxRulePortRanges ranges under one prefix, an
  // empty port range (kInvalidArgument, naming the rule); kernel refusal (errno).
  Result<void> set_rules(std::span<const MarkRule> rules);
  // Stops marking `flow`; false when it was not in the map.
  Result<bool> erase(const FlowTuple& flow);
  // The label in the map for `flow`, if any.
  std::optional<std::uint32_t> lookup(const FlowTuple& flow) const;

  Result<Counters> counters() const;
  MapStats map_stats() const noexcept;
  // Entries in the map, including those another BPF object put through shared_map().
  std::size_t fill() const noexcept;
  SharedFlowMap shared_map() const noexcept;

  // For tests and benchmarks (BPF_PROG_TEST_RUN) and `bpf status`.
  int program_fd() const noexcept;
  std::uint32_t program_id() const noexcept;

 private:
  struct Impl;
  explicit FlowLabelMarker(std::unique_ptr<Impl> impl);
  Result<void> detach_one(const Attachment& att);
  std::unique_ptr<Impl> impl_;
};

// Interfaces with an IPv6 address of global scope (not loopback, not link-local), sorted:
// where to mark when the configuration names no interface (flowd's default).
std::vector<std::string> interfaces_with_global_ipv6();

// A filter of ours found on an interface of the current network namespace.
struct HookInfo {
  std::string ifname;
  std::uint32_t ifindex = 0;
  std::uint32_t prog_id = 0;
  std::uint32_t flows_map_id = 0;     // 0 when not found
  std::uint32_t counters_map_id = 0;  // 0 when not found
  // A process holding the program open (a running flowmark); none: a crash leftover.
  std::optional<int> owner_pid;
  std::string owner_comm;
};

// Our filters on every interface (or on `ifname` only).
Result<std::vector<HookInfo>> find_hooks(std::optional<std::string_view> ifname = {});

// The map fill and counters behind a hook (read through the map ids; any process).
struct HookStatus {
  std::size_t fill = 0;
  Counters counters;
};
Result<HookStatus> read_hook_status(const HookInfo& hook);

// Removes our filters left by a crashed process from every interface (or from `ifname`
// only); hooks of a running process are kept unless `include_live`. Returns the removed
// hooks. clsact qdiscs are left in place: nothing records whether flowmark created them,
// and an empty clsact costs nothing.
Result<std::vector<HookInfo>> clean_hooks(std::optional<std::string_view> ifname = {},
                                          bool include_live = false);

}  // namespace flowmark::bpf
