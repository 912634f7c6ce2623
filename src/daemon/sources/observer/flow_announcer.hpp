// The observer source's core: the passive observer over captured frames, and the flow events
// it announces. Apart from the capture so that tests can feed it frames of their own.
//
// classify = "rules" (the default): a new TCP or UDP flow is a start event at its first
// packet, its record an end event; the events carry the source's fixed experiment and
// activity, or none (the service's [[rule]]s then classify them).
//
// classify = "scitags" (passive tagging): the flow's own marks decide — the Scitags
// extension-header option as the observer's scitags chain reads it (the first one seen; it
// wins over a label), else the IPv6 flow label of the packet at hand (either direction). A
// flow is announced with the experiment and activity of its first marked packet, at that
// packet; a mark whose (experiment, activity) the registry does not know is no mark (a
// kernel's automatic flow labels look like marks: never a guess), so a hash in the other
// side's first packets does not hide the marks that follow. A
// flow whose first packet is unmarked is a start event as in "rules" mode (fixed ids, or the
// rules; no rule: not announced); if it is not announced then, its first marked packet
// announces it. The end event comes with the flow's record, its usage from the octets seen
// each way (IP length, headers included), `sent` being what its source sent.
//
//   FlowAnnouncer a(opts, [&](const FlowEvent& e) { queue.push_back(e); });
//   for each frame: a.on_packet(ts_ns, LinkType::kEthernet, bytes);
//   a.finish();  // end events for every flow still held
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "flowmark/observe/observer.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon {

enum class Classify : std::uint8_t { kRules, kScitags };

struct AnnouncerOptions {
  observe::ObserverConfig observer;
  Classify classify = Classify::kRules;
  std::uint32_t experiment = 0, activity = 0;  // a fixed classification; 0: the rules
  // kScitags: the (experiment, activity) pairs announced (those of the registry).
  std::vector<std::uint32_t> known_tags;  // experiment << 8 | activity, sorted
  // Counted when set (the source's counters): flows announced by their mark, and marks
  // not announced because the registry does not know them (once per flow and kind of mark).
  std::atomic<std::uint64_t>* tagged = nullptr;
  std::atomic<std::uint64_t>* unknown_tags = nullptr;
};

// The pairs of `registry`, in the form AnnouncerOptions::known_tags wants.
std::vector<std::uint32_t> known_tags(const scitags::Registry& registry);

class FlowAnnouncer {
 public:
  using Post = std::function<void(const scitags::FlowEvent&)>;
  FlowAnnouncer(AnnouncerOptions options, Post post);
  ~FlowAnnouncer();
  FlowAnnouncer(const FlowAnnouncer&) = delete;
  FlowAnnouncer& operator=(const FlowAnnouncer&) = delete;

  void on_packet(observe::Nanos ts_ns, observe::LinkType link,
                 std::span<const std::byte> frame) noexcept;
  // Emits every flow still held (end events).
  void finish() noexcept;
  const observe::ObserverStats& stats() const noexcept;

 private:
  class TagChain;
  scitags::FlowEvent event_of(const observe::FlowRecord& r, scitags::FlowState state,
                              std::uint32_t experiment, std::uint32_t activity) const;
  void on_record(const observe::FlowRecord& r);
  bool known(std::uint32_t experiment, std::uint32_t activity) const noexcept;

  AnnouncerOptions o_;
  Post post_;
  std::size_t scitags_index_ = 0, tag_index_ = 0;  // chains, kScitags only
  std::unique_ptr<observe::Observer> obs_;
};

}  // namespace flowmark::daemon
