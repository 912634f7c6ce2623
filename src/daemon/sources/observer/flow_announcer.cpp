#include "daemon/sources/observer/flow_announcer.hpp"

#include <algorithm>
#include <optional>
#include <string>

#include "flowmark/observe/chains.hpp"

namespace flowmark::daemon {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;
using scitags::Protocol;

constexpr std::uint8_t kTcp = 6, kUdp = 17;

bool announceable(const observe::FlowRecord& r) noexcept {
  return r.proto == kTcp || r.proto == kUdp;
}

// What the tag chain did for a flow.
struct TagState {
  std::uint16_t experiment;  // of the mark announced (kTagged)
  std::uint8_t activity;
  std::uint8_t flags;
};
constexpr std::uint8_t kStarted = 1,         // a start at the first packet, not by a mark
    kTagged = 2,                             // a start with the flow's mark
    kDone = 4,                               // nothing more to look for
    kUnknownLabel = 8, kUnknownOption = 16;  // a mark the registry does not know, counted

}  // namespace

// Runs after the scitags chain on every packet: announces the flow at its first packet that
// carries a known mark (or, unmarked, at its first packet for the rules to classify).
class FlowAnnouncer::TagChain final : public observe::Chain {
 public:
  explicit TagChain(FlowAnnouncer& a) : a_(a) {}
  std::string_view name() const noexcept override { return "passive-tag"; }
  std::size_t state_size() const noexcept override { return sizeof(TagState); }
  std::size_t state_align() const noexcept override { return alignof(TagState); }
  unsigned hooks() const noexcept override { return observe::kHookIp | observe::kHookQuick; }
  bool quick() const noexcept override { return true; }
  std::vector<std::string> columns() const override { return {}; }
  void write(const observe::FlowRecord&, const std::byte*, observe::FieldWriter&) const override {}

  observe::Verdict on_ip(observe::FlowRecord& r, std::byte* st, const observe::PacketView&,
                         bool) noexcept override {
    step(r, *reinterpret_cast<TagState*>(st));
    return observe::Verdict::kContinue;
  }
  observe::Verdict on_quick(observe::FlowRecord& r, std::byte* st, const observe::QuickFacts&,
                            bool) noexcept override {
    step(r, *reinterpret_cast<TagState*>(st));
    return observe::Verdict::kContinue;
  }

 private:
  void step(const observe::FlowRecord& r, TagState& s) noexcept {
    if (s.flags & kDone) [[likely]]
      return;
    if (!announceable(r)) {
      s.flags |= kDone;
      return;
    }
    using Source = observe::ScitagsTag::Source;
    // The scitags chain's mark: an option (the first one seen), else a label — a later label
    // the registry knows replacing an earlier one it does not (automatic labels, or marks that
    // began after the handshake), since the chain judges labels by this source's registry.
    const std::byte* scitags = a_.obs_->chain_state(r, a_.scitags_index_);
    const observe::ScitagsTag tag =
        scitags ? observe::scitags_tag(scitags) : observe::ScitagsTag{};
    if (tag.source != Source::kNone) {
      if (a_.known(tag.experiment, tag.activity)) {
        s.experiment = tag.experiment;
        s.activity = tag.activity;
        s.flags |= kTagged | kDone;
        a_.post_(a_.event_of(r, FlowState::kStart, tag.experiment, tag.activity));
        if (a_.o_.tagged) a_.o_.tagged->fetch_add(1, std::memory_order_relaxed);
        return;
      }
      const std::uint8_t bit = tag.source == Source::kFlowLabel ? kUnknownLabel : kUnknownOption;
      if (!(s.flags & bit)) {
        s.flags |= bit;
        if (a_.o_.unknown_tags) a_.o_.unknown_tags->fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (!(s.flags & kStarted)) {
      // The first packet, without a known mark: the fixed classification or the rules.
      s.flags |= kStarted;
      a_.post_(a_.event_of(r, FlowState::kStart, a_.o_.experiment, a_.o_.activity));
      if (a_.o_.experiment != 0) s.flags |= kDone;  // announced for good
      if (r.ip_version != 6) s.flags |= kDone;      // no marks in IPv4
    }
    // The first option seen stays the flow's: no later mark can replace an unknown one.
    if (s.flags & kUnknownOption) s.flags |= kDone;
  }

  FlowAnnouncer& a_;
};

std::vector<std::uint32_t> known_tags(const scitags::Registry& registry) {
  std::vector<std::uint32_t> out;
  for (const auto& e : registry.experiments()) {
    if (e.id == 0 || e.id > 0xffff) continue;
    for (const auto& a : e.activities)
      if (a.id <= 0xff) out.push_back(e.id << 8 | a.id);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

FlowAnnouncer::FlowAnnouncer(AnnouncerOptions options, Post post)
    : o_(std::move(options)), post_(std::move(post)) {
  // One record per flow: the end event comes with it, its usage the flow's whole octets (a
  // flow split by the active timeout would end at the first part).
  o_.observer.active_timeout_ns = 0;
  obs_ = std::make_unique<observe::Observer>(
      o_.observer, [this](const observe::FlowRecord& r) { on_record(r); });
  obs_->add_new_flow([this](observe::FlowRecord& r, const observe::PacketView& p) {
    // A TCP flow first seen by its FIN or RST is the tail of a connection that ended:
    // nothing to announce (the observer ignores its later packets too).
    if (r.proto == kTcp && (p.tcp_flags & 0x05) != 0) return false;
    if (o_.classify == Classify::kRules && announceable(r))
      post_(event_of(r, FlowState::kStart, o_.experiment, o_.activity));
    return true;
  });
  // TCP flows complete on FIN from both sides or RST, as the seed's TCP chain does.
  obs_->add_tcp(observe::tcp_complete_on_fin_or_rst);
  if (o_.classify == Classify::kScitags) {
    scitags_index_ = obs_->chains().size();
    // The chain knows which pairs this source's registry names (labels it does not are
    // replaced by a later one it does); no names are written here.
    observe::ChainOptions chain_options;
    chain_options.names.activity = [this](std::uint32_t e,
                                          std::uint32_t act) -> std::optional<std::string> {
      if (known(e, act)) return std::string();
      return std::nullopt;
    };
    obs_->add_chain(observe::make_chain("scitags", chain_options));
    tag_index_ = obs_->chains().size();
    obs_->add_chain(std::make_unique<TagChain>(*this));
  }
}

FlowAnnouncer::~FlowAnnouncer() = default;

void FlowAnnouncer::on_packet(observe::Nanos ts_ns, observe::LinkType link,
                              std::span<const std::byte> frame) noexcept {
  obs_->on_packet(ts_ns, link, frame);
}

void FlowAnnouncer::finish() noexcept { obs_->finish(); }

const observe::ObserverStats& FlowAnnouncer::stats() const noexcept { return obs_->stats(); }

bool FlowAnnouncer::known(std::uint32_t experiment, std::uint32_t activity) const noexcept {
  return std::binary_search(o_.known_tags.begin(), o_.known_tags.end(), experiment << 8 | activity);
}

FlowEvent FlowAnnouncer::event_of(const observe::FlowRecord& r, FlowState state,
                                  std::uint32_t experiment, std::uint32_t activity) const {
  FlowEvent e;
  e.state = state;
  e.protocol = r.proto == kTcp ? Protocol::kTcp : Protocol::kUdp;
  e.src = {r.sip, r.sp};
  e.dst = {r.dip, r.dp};
  e.experiment = experiment;
  e.activity = activity;
  e.start_time = r.first / 1000;
  if (state == FlowState::kEnd) {
    e.end_time = r.last / 1000;
    // Oriented as the event: its source is the flow's first sender.
    e.usage = scitags::Usage{r.oct_rev, r.oct_fwd};
  }
  return e;
}

void FlowAnnouncer::on_record(const observe::FlowRecord& r) {
  if (!announceable(r)) return;
  if (r.continuation) return;  // not made (no active timeout); a part would be still live
  if (o_.classify == Classify::kRules) {
    post_(event_of(r, FlowState::kEnd, o_.experiment, o_.activity));
    return;
  }
  const std::byte* st = obs_->chain_state(r, tag_index_);
  if (st == nullptr) return;
  const TagState& s = *reinterpret_cast<const TagState*>(st);
  if (s.flags & kTagged) {
    // Announced by its mark at once: the mark's ids. After a start for the rules: none, so
    // that the pipeline ends it with the ids the flow went live with (a rule's, or the mark's
    // when no rule had taken it).
    const bool first = !(s.flags & kStarted);
    post_(event_of(r, FlowState::kEnd, first ? s.experiment : 0, first ? s.activity : 0));
  } else if (s.flags & kStarted) {
    post_(event_of(r, FlowState::kEnd, o_.experiment, o_.activity));
  }
}

}  // namespace flowmark::daemon
