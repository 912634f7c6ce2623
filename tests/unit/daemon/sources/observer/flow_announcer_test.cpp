// The observer source's announcements (FlowAnnouncer) from frames built here byte by byte:
// classify = "scitags" announces a flow at its first marked packet with the mark's ids and
// ends it with its octets; unmarked flows reach a backend only through a rule; an option in
// the hop-by-hop header wins over the flow label; marks the registry does not know are not
// announced. Events go through a real Pipeline where what a backend would get matters.
#include "daemon/sources/observer/flow_announcer.hpp"

#include <gtest/gtest.h>

#include <mutex>
#include <vector>

#include "flowmark/daemon/pipeline.hpp"
#include "../../../testing/bytes.hpp"

namespace flowmark::daemon {
namespace {

using flowmark::testing::Bytes;
using flowmark::testing::put16;
using flowmark::testing::put32;
using scitags::FlowEvent;
using scitags::FlowState;

constexpr observe::Nanos kMs = 1'000'000;
constexpr std::uint8_t kFin = 0x01, kSyn = 0x02, kAck = 0x10;
constexpr std::uint8_t kTcp = 6, kHopByHop = 0;

// The Scitags flow label, written out from the layout (not flowmark's encoder): entropy in
// bits 19-18, 8 and 1-0; the experiment bit-reversed in 17-9; the activity in 7-2.
std::uint32_t label(std::uint32_t exp, std::uint32_t act, std::uint32_t entropy) {
  std::uint32_t rev = 0;
  for (int i = 0; i < 9; ++i) rev |= ((exp >> i) & 1u) << (8 - i);
  return (entropy >> 3 & 3u) << 18 | rev << 9 | (entropy >> 2 & 1u) << 8 | act << 2 |
         (entropy & 3u);
}


struct Host {
  std::uint8_t last;  // 2001:db8::last
  unsigned port;
  IpAddress ip() const { return *IpAddress::parse("2001:db8::" + std::to_string(last)); }
  Endpoint endpoint() const { return {ip(), static_cast<std::uint16_t>(port)}; }
};
const Host kClient{7, 40000}, kServer{1, 5002};

struct Mark {
  std::uint32_t flow_label = 0;
  bool hbh = false;  // the Scitags option in a hop-by-hop header
  std::uint16_t experiment = 0;
  std::uint8_t activity = 0;
};

// Ethernet, IPv6 (label, optional hop-by-hop header with the option), TCP with `payload`
// bytes. ip_length: the IPv6 header and its payload, what the observer counts.
Bytes frame(const Host& s, const Host& d, unsigned flags, std::size_t payload, Mark m,
            std::size_t* ip_length = nullptr) {
  Bytes l4;
  put16(l4, s.port), put16(l4, d.port), put32(l4, 1), put32(l4, 1);
  l4.push_back(5 << 4), l4.push_back(static_cast<std::uint8_t>(flags));
  put16(l4, 65535), put16(l4, 0), put16(l4, 0);
  l4.insert(l4.end(), payload, 0x5a);
  Bytes ext;
  if (m.hbh) {  // next header, length 0 (8 bytes): option 0x1E, 3 data bytes, Pad1
    ext = {kTcp,
           0,
           0x1e,
           3,
           static_cast<std::uint8_t>(m.experiment >> 8),
           static_cast<std::uint8_t>(m.experiment),
           m.activity,
           0};
  }
  Bytes b{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2};
  put16(b, 0x86dd);
  put32(b, 0x60000000u | m.flow_label);
  put16(b, static_cast<unsigned>(ext.size() + l4.size()));
  b.push_back(m.hbh ? kHopByHop : kTcp), b.push_back(64);
  for (const Host* h : {&s, &d}) {
    b.insert(b.end(), {0x20, 0x01, 0x0d, 0xb8});
    b.insert(b.end(), 11, 0);
    b.push_back(h->last);
  }
  b.insert(b.end(), ext.begin(), ext.end());
  b.insert(b.end(), l4.begin(), l4.end());
  if (ip_length) *ip_length = 40 + ext.size() + l4.size();
  return b;
}

// A backend keeping what it gets.
class Keep : public Backend {
 public:
  struct Log {
    std::mutex mutex;
    std::vector<FlowEvent> events;
  };
  explicit Keep(std::shared_ptr<Log> log) : log_(std::move(log)) {}
  Result<void> start() override { return {}; }
  void on_event(const FlowEvent& e) noexcept override {
    std::lock_guard lock(log_->mutex);
    log_->events.push_back(e);
  }
  void stop() noexcept override {}

 private:
  std::shared_ptr<Log> log_;
};

// The announcer, its events as they come, and a pipeline (rules as given) they are pushed to.
struct Harness {
  explicit Harness(Classify classify = Classify::kScitags, std::vector<Rule> rules = {},
                   std::uint32_t experiment = 0, std::uint32_t activity = 0)
      : pipeline(ctx, [&] {
          PipelineOptions p;
          p.rules = std::move(rules);
          p.flow_timeout = 0;
          return p;
        }()) {
    EXPECT_TRUE(pipeline.add_backend("keep", std::make_unique<Keep>(log)));
    AnnouncerOptions o;
    o.classify = classify;
    o.experiment = experiment;
    o.activity = activity;
    o.known_tags = known_tags(scitags::Registry::builtin());
    o.tagged = &tagged;
    o.unknown_tags = &unknown;
    announcer = std::make_unique<FlowAnnouncer>(o, [this](const FlowEvent& e) {
      events.push_back(e);
      pipeline.push(e);
    });
  }
  ~Harness() { pipeline.shutdown(); }
  // Feeds one frame at t ms; returns its IP length.
  std::size_t feed(observe::Nanos t_ms, const Host& s, const Host& d, unsigned flags,
                   std::size_t payload = 0, Mark m = {}) {
    std::size_t n = 0;
    const Bytes f = frame(s, d, flags, payload, m, &n);
    announcer->on_packet(1'700'000'000'000 * kMs + t_ms * kMs, observe::LinkType::kEthernet,
                         std::as_bytes(std::span(f)));
    return n;
  }
  std::vector<FlowEvent> delivered() {
    pipeline.wait_idle();
    std::lock_guard lock(log->mutex);
    return log->events;
  }

  Counters counters;
  ServiceContext ctx{counters, &scitags::Registry::builtin(), "test"};
  std::shared_ptr<Keep::Log> log = std::make_shared<Keep::Log>();
  Pipeline pipeline;
  std::atomic<std::uint64_t> tagged{0}, unknown{0};
  std::vector<FlowEvent> events;  // as the announcer posts them
  std::unique_ptr<FlowAnnouncer> announcer;
};

void expect_flow(const FlowEvent& e, FlowState state, std::uint32_t exp, std::uint32_t act) {
  EXPECT_EQ(e.state, state);
  EXPECT_EQ(e.protocol, scitags::Protocol::kTcp);
  EXPECT_EQ(e.src, kClient.endpoint());
  EXPECT_EQ(e.dst, kServer.endpoint());
  EXPECT_EQ(e.experiment, exp);
  EXPECT_EQ(e.activity, act);
}

TEST(FlowAnnouncer, MarkedFlowStartsAtItsFirstPacketAndEndsWithItsOctets) {
  Harness h;
  const Mark m{label(2, 9, 0b10110)};  // atlas, Debug; entropy in every entropy bit group
  std::uint64_t sent = 0, received = 0;
  sent += h.feed(0, kClient, kServer, kSyn, 0, m);
  ASSERT_EQ(h.events.size(), 1u) << "no start at the first marked packet";
  expect_flow(h.events[0], FlowState::kStart, 2, 9);
  EXPECT_EQ(h.events[0].start_time, 1'700'000'000'000'000);
  received += h.feed(1, kServer, kClient, kSyn | kAck);  // the server does not mark
  for (int i = 0; i < 5; ++i) {
    sent += h.feed(2 + i, kClient, kServer, kAck, 1200, m);
    received += h.feed(2 + i, kServer, kClient, kAck);
  }
  sent += h.feed(10, kClient, kServer, kFin | kAck, 0, m);
  received += h.feed(11, kServer, kClient, kFin | kAck);
  EXPECT_EQ(h.events.size(), 1u);  // one start, the end comes with the record
  h.announcer->finish();
  ASSERT_EQ(h.events.size(), 2u);
  const FlowEvent& end = h.events[1];
  expect_flow(end, FlowState::kEnd, 2, 9);
  ASSERT_TRUE(end.usage);
  EXPECT_EQ(end.usage->sent, sent);  // 5 × (40 + 20 + 1200) + 2 × 60
  EXPECT_EQ(end.usage->received, received);
  EXPECT_EQ(sent, 5u * 1260 + 120);
  EXPECT_EQ(end.end_time, 1'700'000'000'000'000 + 11'000);
  EXPECT_EQ(h.tagged.load(), 1u);
  const auto got = h.delivered();
  ASSERT_EQ(got.size(), 2u);
  expect_flow(got[0], FlowState::kStart, 2, 9);
  expect_flow(got[1], FlowState::kEnd, 2, 9);
}

TEST(FlowAnnouncer, UnmarkedHandshakeThenMarkedDataIsAnnouncedAtTheFirstMarkedPacket) {
  Harness h;  // no rule
  h.feed(0, kClient, kServer, kSyn);
  h.feed(1, kServer, kClient, kSyn | kAck);
  h.feed(2, kClient, kServer, kAck);
  EXPECT_TRUE(h.delivered().empty()) << "an unmarked flow reached the backend";
  const Mark m{label(3, 5, 7)};  // cms, Data Brokering
  h.feed(3, kClient, kServer, kAck, 500, m);
  auto got = h.delivered();
  ASSERT_EQ(got.size(), 1u);
  expect_flow(got[0], FlowState::kStart, 3, 5);
  EXPECT_EQ(got[0].start_time, 1'700'000'000'000'000);           // the flow's first packet
  h.feed(4, kClient, kServer, kAck, 500, Mark{label(2, 9, 0)});  // a later label: ignored
  h.announcer->finish();
  got = h.delivered();
  ASSERT_EQ(got.size(), 2u);
  expect_flow(got[1], FlowState::kEnd, 3, 5);  // the ids it went live with
  ASSERT_TRUE(got[1].usage);
  EXPECT_EQ(got[1].usage->sent, 60u + 560 + 560 + 60);
  EXPECT_EQ(got[1].usage->received, 60u);
}

TEST(FlowAnnouncer, UnmarkedFlowIsNotAnnouncedWithoutARule) {
  Harness h;
  h.feed(0, kClient, kServer, kSyn);
  h.feed(1, kServer, kClient, kSyn | kAck);
  for (int i = 0; i < 3; ++i) h.feed(2 + i, kClient, kServer, kAck, 800);
  h.feed(9, kClient, kServer, kFin | kAck);
  h.feed(9, kServer, kClient, kFin | kAck);
  h.announcer->finish();
  EXPECT_TRUE(h.delivered().empty());
  EXPECT_EQ(h.tagged.load(), 0u);
  EXPECT_EQ(h.counters.value("flowmark_pipeline_events_total", {{"outcome", "unclassified"}}), 2u);
}

TEST(FlowAnnouncer, RulesStillClassifyUnmarkedFlows) {
  Rule r;
  r.dst_ports = {PortRange{5002, 5002}};
  r.experiment = 1;
  r.activity = 2;
  Harness h(Classify::kScitags, {r});
  h.feed(0, kClient, kServer, kSyn);
  h.feed(1, kClient, kServer, kAck, 100);
  h.announcer->finish();
  const auto got = h.delivered();
  ASSERT_EQ(got.size(), 2u);
  expect_flow(got[0], FlowState::kStart, 1, 2);
  expect_flow(got[1], FlowState::kEnd, 1, 2);
}

TEST(FlowAnnouncer, OptionInTheHopByHopHeaderWinsOverTheLabel) {
  Harness h;
  h.feed(0, kClient, kServer, kSyn, 0, Mark{label(2, 9, 3), true, 3, 5});
  ASSERT_EQ(h.events.size(), 1u);
  expect_flow(h.events[0], FlowState::kStart, 3, 5);
  h.announcer->finish();
  ASSERT_EQ(h.events.size(), 2u);
  expect_flow(h.events[1], FlowState::kEnd, 3, 5);
  ASSERT_TRUE(h.events[1].usage);
  EXPECT_EQ(h.events[1].usage->sent, 40u + 8 + 20);  // the extension header counts
}

TEST(FlowAnnouncer, MarkTheRegistryDoesNotKnowIsNotAnnounced) {
  Harness h;
  // Experiment 300 (none has that id): what a kernel's automatic flow label may look like.
  h.feed(0, kClient, kServer, kSyn, 0, Mark{label(300, 1, 9)});
  h.feed(1, kClient, kServer, kAck, 10, Mark{label(300, 1, 9)});
  h.announcer->finish();
  EXPECT_TRUE(h.delivered().empty());
  EXPECT_EQ(h.unknown.load(), 1u);
  EXPECT_EQ(h.tagged.load(), 0u);
}

TEST(FlowAnnouncer, HashInTheOtherSidesLabelDoesNotHideTheMarksThatFollow) {
  Harness h;
  h.feed(0, kClient, kServer, kSyn);                                    // not marked yet
  h.feed(1, kServer, kClient, kSyn | kAck, 0, Mark{label(300, 1, 5)});  // the server's hash
  h.feed(2, kClient, kServer, kAck);
  EXPECT_TRUE(h.delivered().empty());
  EXPECT_EQ(h.unknown.load(), 1u);
  h.feed(3, kClient, kServer, kAck, 100, Mark{label(2, 9, 0)});  // the marker took the flow
  const auto got = h.delivered();
  ASSERT_EQ(got.size(), 1u);
  expect_flow(got[0], FlowState::kStart, 2, 9);
}

TEST(FlowAnnouncer, FixedClassificationForUnmarkedFlowsMarksStillWin) {
  Harness h(Classify::kScitags, {}, 1, 1);
  h.feed(0, kClient, kServer, kSyn);  // unmarked: the source's fixed ids
  Host other = kClient;
  other.port = 40001;
  h.feed(1, other, kServer, kSyn, 0, Mark{label(2, 9, 0)});
  h.announcer->finish();
  const auto got = h.delivered();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].experiment, 1u);
  EXPECT_EQ(got[0].src.port, 40000);
  EXPECT_EQ(got[1].experiment, 2u);
  EXPECT_EQ(got[1].activity, 9u);
  EXPECT_EQ(got[1].src.port, 40001);
}

TEST(FlowAnnouncer, RulesModeIgnoresMarks) {
  Harness h(Classify::kRules, {}, 1, 1);
  h.feed(0, kClient, kServer, kSyn, 0, Mark{label(2, 9, 0)});
  h.announcer->finish();
  ASSERT_EQ(h.events.size(), 2u);
  expect_flow(h.events[0], FlowState::kStart, 1, 1);
  expect_flow(h.events[1], FlowState::kEnd, 1, 1);
  EXPECT_EQ(h.tagged.load(), 0u);
}

}  // namespace
}  // namespace flowmark::daemon
