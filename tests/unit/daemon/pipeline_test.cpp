// The pipeline: live-flow state, duplicates, classification, public addresses, expiry,
// per-backend queues and the accounting of every event.
#include "flowmark/daemon/pipeline.hpp"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <set>
#include <stop_token>
#include <thread>

namespace flowmark::daemon {
namespace {

using scitags::FlowState;
using scitags::Protocol;

FlowEvent event(FlowState state, std::string_view src, std::string_view dst, std::uint32_t exp = 2,
                std::uint32_t act = 1) {
  FlowEvent e;
  e.state = state;
  e.protocol = Protocol::kTcp;
  e.src = *Endpoint::parse(src);
  e.dst = *Endpoint::parse(dst);
  e.experiment = exp;
  e.activity = act;
  return e;
}

// Records what it receives; can be held (stalled) until released. What it records lives in
// a shared Log, readable after the pipeline has destroyed the backend (shutdown()).
class Capture : public Backend {
 public:
  struct Log {
    std::mutex mutex;
    std::condition_variable grew;
    std::vector<FlowEvent> events;
    std::atomic<bool> stopped = false;
  };

  Result<void> start() override { return {}; }
  void on_event(const FlowEvent& e) noexcept override {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !held_; });
    {
      std::lock_guard log_lock(log->mutex);
      log->events.push_back(e);
    }
    log->grew.notify_all();
  }
  void stop() noexcept override { log->stopped = true; }
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      held_ = false;
    }
    cv_.notify_all();
  }
  std::vector<FlowEvent> events() {
    std::lock_guard lock(log->mutex);
    return log->events;
  }
  // Waits (up to 10 s) until `n` events came; false if they did not.
  bool wait_events(std::size_t n) {
    std::unique_lock lock(log->mutex);
    return log->grew.wait_for(lock, std::chrono::seconds(10),
                              [&] { return log->events.size() >= n; });
  }
  std::shared_ptr<Log> log = std::make_shared<Log>();

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool held_ = false;
};

// A backend acting on this host's packets: it needs the real (private) source address.
class LocalCapture : public Capture {
 public:
  bool wants_public_addresses() const noexcept override { return false; }
};

struct PipelineTest : ::testing::Test {
  Counters counters;
  ServiceContext ctx{counters, &scitags::Registry::builtin(), "test"};
  Micros now = 1'000'000'000'000;
  PipelineOptions options() {
    PipelineOptions o;
    o.clock = [this] { return now; };
    o.flow_timeout = 60;
    return o;
  }
  Capture* add(Pipeline& p, std::string name, bool adopt = false) {
    auto b = std::make_unique<Capture>();
    auto* raw = b.get();
    EXPECT_TRUE(p.add_backend(std::move(name), std::move(b), adopt).has_value());
    return raw;
  }
};

// Holds `b` inside on_event with one event, its queue empty: what is pushed next waits there.
void stick(Pipeline& p, Capture& b, Counters& counters, std::string_view name) {
  b.hold();
  p.push_lossless(event(FlowState::kStart, "192.0.2.9:65000", "198.51.100.9:9"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (counters.value("flowmark_backend_queue_depth", {{"backend", std::string(name)}}) != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
}

TEST_F(PipelineTest, EndCarriesStartTimeAndDuplicatesAreSuppressed) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  p.push(event(FlowState::kStart, "192.0.2.1:1000", "198.51.100.1:2000"));
  now += 5'000'000;
  p.push(event(FlowState::kStart, "192.0.2.1:1000", "198.51.100.1:2000"));
  EXPECT_EQ(p.live_flows(), 1u);
  now += 5'000'000;
  p.push(event(FlowState::kEnd, "192.0.2.1:1000", "198.51.100.1:2000"));
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].state, FlowState::kStart);
  EXPECT_EQ(got[0].start_time, 1'000'000'000'000);
  EXPECT_EQ(got[1].state, FlowState::kEnd);
  EXPECT_EQ(got[1].start_time, 1'000'000'000'000);
  EXPECT_EQ(got[1].end_time, 1'000'010'000'000);
  EXPECT_EQ(p.live_flows(), 0u);
  EXPECT_EQ(counters.value("flowmark_pipeline_events_total", {{"outcome", "duplicate_start"}}), 1u);
  EXPECT_EQ(counters.value("flowmark_pipeline_received_total"), 3u);
}

// The events of one batch (a source's read) get one time: the clock is read once, at
// begin_batch(); outside a batch, once per event.
TEST_F(PipelineTest, EventsOfOneBatchShareOneClockReading) {
  auto o = options();
  int reads = 0;
  o.clock = [&] {
    ++reads;
    return now += 1'000;  // a clock that moves at every reading
  };
  Pipeline p(ctx, o);
  auto* cap = add(p, "cap");
  SourceTap tap("pipe", counters, p);
  const Micros batch_time = now;  // before the batch's reading
  tap.begin_batch();
  tap.push_lossless(event(FlowState::kStart, "192.0.2.1:1000", "198.51.100.1:2000"));
  tap.push_lossless(event(FlowState::kStart, "192.0.2.1:1001", "198.51.100.1:2000"));
  tap.push_lossless(event(FlowState::kEnd, "192.0.2.1:1000", "198.51.100.1:2000"));
  tap.end_batch();
  EXPECT_EQ(reads, 1);
  tap.push_lossless(event(FlowState::kEnd, "192.0.2.1:1001", "198.51.100.1:2000"));
  EXPECT_EQ(reads, 2);
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 4u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].start_time, batch_time + 1'000) << i;
    EXPECT_EQ(got[i].current_time, batch_time + 1'000) << i;
  }
  EXPECT_EQ(got[2].end_time, batch_time + 1'000);
  EXPECT_EQ(got[3].start_time, batch_time + 1'000);
  EXPECT_EQ(got[3].end_time, batch_time + 2'000);
}

TEST_F(PipelineTest, RulesClassifyFirstMatchWins) {
  auto o = options();
  Rule a;
  a.dst = {*Network::parse("198.51.100.0/24")};
  a.dst_ports = {{5000, 5100}};
  a.experiment = 3;
  a.activity = 4;
  Rule b;
  b.dst = {*Network::parse("198.51.0.0/16")};
  b.experiment = 5;
  b.activity = 6;
  o.rules = {a, b};
  Pipeline p(ctx, o);
  auto* cap = add(p, "cap");
  p.push(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.1:5050", 0, 0));  // a
  p.push(event(FlowState::kStart, "192.0.2.1:2", "198.51.100.1:80", 0, 0));    // b
  p.push(event(FlowState::kStart, "192.0.2.1:3", "203.0.113.1:80", 0, 0));     // none
  p.push(event(FlowState::kStart, "192.0.2.1:4", "203.0.113.1:80", 7, 8));     // given
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0].experiment, 3u);
  EXPECT_EQ(got[0].activity, 4u);
  EXPECT_EQ(got[1].experiment, 5u);
  EXPECT_EQ(got[2].experiment, 7u);
  EXPECT_EQ(counters.value("flowmark_pipeline_events_total", {{"outcome", "unclassified"}}), 1u);
  EXPECT_EQ(p.live_flows(), 3u);
}

TEST_F(PipelineTest, PrivateSourcesAreRewrittenToPublicAddresses) {
  auto o = options();
  o.public_address.ipv4 = *IpAddress::parse("203.0.113.7");
  o.public_address.map = {{*IpAddress::parse("10.0.0.9"), *IpAddress::parse("203.0.113.9")}};
  Pipeline p(ctx, o);
  auto* cap = add(p, "cap");
  p.push(event(FlowState::kStart, "10.0.0.1:1", "8.8.8.8:2"));
  p.push(event(FlowState::kStart, "10.0.0.9:1", "8.8.8.8:2"));
  p.push(event(FlowState::kStart, "8.8.4.4:1", "8.8.8.8:2"));
  p.push(event(FlowState::kEnd, "10.0.0.1:1", "8.8.8.8:2"));
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].src.address.to_string(), "203.0.113.7");
  EXPECT_EQ(got[1].src.address.to_string(), "203.0.113.9");
  EXPECT_EQ(got[2].src.address.to_string(), "8.8.4.4");
  EXPECT_EQ(got[3].src.address.to_string(), "203.0.113.7");  // the end matched the key
  EXPECT_EQ(p.live_flows(), 2u);
}

TEST_F(PipelineTest, BackendsOfThisHostsPacketsKeepTheRealSourceAddress) {
  auto o = options();
  o.public_address.ipv4 = *IpAddress::parse("203.0.113.7");
  Pipeline p(ctx, o);
  auto* announced = add(p, "fireflies");
  auto local_backend = std::make_unique<LocalCapture>();
  auto* local = local_backend.get();
  ASSERT_TRUE(p.add_backend("label", std::move(local_backend)).has_value());
  p.push(event(FlowState::kStart, "10.0.0.1:1", "8.8.8.8:2"));
  p.wait_idle();
  ASSERT_EQ(announced->events().size(), 1u);
  ASSERT_EQ(local->events().size(), 1u);
  EXPECT_EQ(announced->events()[0].src.address.to_string(), "203.0.113.7");
  EXPECT_EQ(local->events()[0].src.address.to_string(), "10.0.0.1");
}

TEST_F(PipelineTest, FlowsWithoutEndExpireOnTheClock) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  p.push(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.1:2"));
  now += 30'000'000;
  p.push(event(FlowState::kStart, "192.0.2.1:3", "198.51.100.1:4"));
  now += 31'000'000;  // the first is 61 s old, the second 31 s
  EXPECT_EQ(p.expire(), 1u);
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[2].state, FlowState::kEnd);
  EXPECT_EQ(got[2].src.port, 1);
  EXPECT_EQ(got[2].start_time, 1'000'000'000'000);
  EXPECT_EQ(counters.value("flowmark_pipeline_expired_total"), 1u);
  EXPECT_EQ(p.live_flows(), 1u);
}

// The live-flow table keeps times as offsets from a base and the class in the flow label's
// bits; what does not fit is kept exactly: the end of a flow that lived five years, whose
// source gave a start time of 1970 and an experiment beyond 9 bits, carries them unchanged.
TEST_F(PipelineTest, ALiveFlowsTimesAndClassAreKeptExactlyWhateverTheirValues) {
  auto o = options();
  o.flow_timeout = 0;           // never expires
  now = 1'796'000'000'000'000;  // 2026-12
  const Micros t0 = now;
  Pipeline p(ctx, o);
  auto* cap = add(p, "cap");
  auto odd = event(FlowState::kStart, "192.0.2.1:1", "198.51.100.1:2", 70'000, 100);
  odd.start_time = 17;  // 1970
  p.push(odd);
  p.push(event(FlowState::kStart, "192.0.2.1:3", "198.51.100.1:4"));
  constexpr Micros kYear = 365LL * 86'400'000'000;
  for (int i = 1; i <= 5; ++i) {
    now += kYear + 3;
    auto ongoing = event(FlowState::kOngoing, "192.0.2.1:3", "198.51.100.1:4", 0, 0);
    p.push(ongoing);
  }
  p.push(event(FlowState::kEnd, "192.0.2.1:1", "198.51.100.1:2", 0, 0));
  p.push(event(FlowState::kEnd, "192.0.2.1:3", "198.51.100.1:4", 0, 0));
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 9u);
  EXPECT_EQ(got[7].src.port, 1);
  EXPECT_EQ(got[7].start_time, 17);
  EXPECT_EQ(got[7].experiment, 70'000u);
  EXPECT_EQ(got[7].activity, 100u);
  EXPECT_EQ(got[7].end_time, now);
  EXPECT_EQ(got[8].src.port, 3);
  EXPECT_EQ(got[8].start_time, t0);
  EXPECT_EQ(got[8].experiment, 2u);
  EXPECT_EQ(got[8].activity, 1u);
  EXPECT_EQ(got[8].end_time, t0 + 5 * (kYear + 3));
  EXPECT_EQ(p.live_flows(), 0u);
}

TEST_F(PipelineTest, EndWithoutStartIsForwardedWithAStartTime) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  p.push(event(FlowState::kEnd, "192.0.2.1:1", "198.51.100.1:2"));
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].start_time, got[0].end_time);
  EXPECT_EQ(counters.value("flowmark_pipeline_end_without_start_total"), 1u);
}

TEST_F(PipelineTest, AStalledBackendDropsOnlyItsOwnEventsAndEveryEventIsAccountedFor) {
  auto o = options();
  o.queue_size = 16;
  Pipeline p(ctx, o);
  auto* slow = add(p, "slow");
  auto* fast = add(p, "fast");
  slow->hold();
  constexpr int kEvents = 200;
  // The fast backend receives everything while the slow one is stuck (each event waits for
  // the fast one, whose queue is as small, so that only the stuck one can overflow).
  for (int i = 0; i < kEvents; ++i) {
    p.push(event(FlowState::kStart, "192.0.2.1:" + std::to_string(1000 + i), "198.51.100.1:2"));
    ASSERT_TRUE(fast->wait_events(static_cast<std::size_t>(i + 1))) << "event " << i;
  }
  EXPECT_EQ(fast->events().size(), static_cast<std::size_t>(kEvents));
  slow->release();
  p.wait_idle();
  auto delivered = counters.value("flowmark_backend_events_total",
                                  {{"backend", "slow"}, {"outcome", "delivered"}});
  auto dropped = counters.value("flowmark_backend_events_total",
                                {{"backend", "slow"}, {"outcome", "dropped_queue_full"}});
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(delivered + dropped, static_cast<std::uint64_t>(kEvents));
  EXPECT_EQ(slow->events().size(), delivered);
  EXPECT_EQ(counters.value("flowmark_backend_offered_total", {{"backend", "slow"}}),
            static_cast<std::uint64_t>(kEvents));
}

TEST_F(PipelineTest, ShutdownEndsLiveFlowsAndABackendAddedLaterAdoptsThem) {
  Pipeline p(ctx, options());
  add(p, "first");
  p.push(event(FlowState::kStart, "192.0.2.1:1", "198.51.100.1:2"));
  p.push(event(FlowState::kStart, "192.0.2.1:3", "198.51.100.1:4"));
  auto* late = add(p, "late", /*adopt=*/true);
  p.wait_idle();
  EXPECT_EQ(late->events().size(), 2u);
  p.remove_backend("first");
  EXPECT_FALSE(p.has_backend("first"));
  auto log = late->log;  // the backend itself is destroyed by shutdown()
  p.shutdown();
  auto got = log->events;
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[2].state, FlowState::kEnd);
  EXPECT_EQ(got[3].state, FlowState::kEnd);
  EXPECT_TRUE(log->stopped);
  EXPECT_EQ(p.live_flows(), 0u);
}

}  // namespace
}  // namespace flowmark::daemon

namespace flowmark::daemon {
namespace {

FlowEvent firefly(FlowState state, std::string_view src, Micros start, std::uint64_t sent = 0,
                  std::uint64_t received = 0) {
  FlowEvent e = event(state, src, "198.51.100.1:443");
  e.start_time = start;
  if (sent != 0 || received != 0) e.usage = scitags::Usage{received, sent};
  return e;
}

TEST_F(PipelineTest, JoinCarriesUsageNeverBackwardsAndThePreviousVolume) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  const Micros t0 = now - 1'000'000;
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0));
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", t0, 1000, 10));
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", t0, 600, 20));  // an older update, late
  p.push(firefly(FlowState::kEnd, "192.0.2.1:1", t0));               // end without usage
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].previous_volume, 0u);
  EXPECT_EQ(got[1].previous_volume, 0u);
  EXPECT_EQ(got[1].usage->sent, 1000u);
  EXPECT_EQ(got[2].previous_volume, 1000u);
  EXPECT_EQ(got[2].usage->sent, 1000u);  // not back to 600
  EXPECT_EQ(got[2].usage->received, 20u);
  EXPECT_EQ(got[3].previous_volume, 1000u);
  EXPECT_EQ(got[3].usage->sent, 1000u);
  EXPECT_EQ(got[3].start_time, t0);
  EXPECT_EQ(got[3].end_reason, scitags::EndReason::kEnded);
}

TEST_F(PipelineTest, ACopyOfAnEndOrALateStartIsNotANewFlow) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  const Micros t0 = now - 1'000'000;
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0));
  p.push(firefly(FlowState::kEnd, "192.0.2.1:1", t0, 5000));
  p.push(firefly(FlowState::kEnd, "192.0.2.1:1", t0, 5000));      // relayed copy
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0));          // late copy of the start
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", t0, 4000));  // late ongoing
  p.wait_idle();
  EXPECT_EQ(cap->events().size(), 2u);
  EXPECT_EQ(p.live_flows(), 0u);
  EXPECT_EQ(counters.value("flowmark_pipeline_events_total", {{"outcome", "duplicate_after_end"}}),
            3u);
  // The same 5-tuple with a later start time is a new flow.
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0 + 10'000'000));
  p.wait_idle();
  EXPECT_EQ(cap->events().size(), 3u);
  EXPECT_EQ(p.live_flows(), 1u);
}

TEST_F(PipelineTest, ALaterStartTimeOnALiveTupleIsANewFlow) {
  Pipeline p(ctx, options());
  auto* cap = add(p, "cap");
  const Micros t0 = now - 5'000'000;
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0));
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", t0, 700));
  now += 1'000'000;
  p.push(firefly(FlowState::kStart, "192.0.2.1:1", t0 + 2'000'000));  // port reused, end lost
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", t0, 900));       // stale: the old flow
  p.wait_idle();
  auto got = cap->events();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[2].state, FlowState::kEnd);
  EXPECT_EQ(got[2].end_reason, scitags::EndReason::kExpired);
  EXPECT_EQ(got[2].start_time, t0);
  EXPECT_EQ(got[2].usage->sent, 700u);
  EXPECT_EQ(got[3].state, FlowState::kStart);
  EXPECT_EQ(got[3].start_time, t0 + 2'000'000);
  EXPECT_EQ(counters.value("flowmark_pipeline_replaced_total"), 1u);
  EXPECT_EQ(counters.value("flowmark_pipeline_events_total", {{"outcome", "stale"}}), 1u);
  EXPECT_EQ(p.live_flows(), 1u);
}

TEST_F(PipelineTest, MaxLiveFlowsEvictsTheFlowIdleLongest) {
  auto o = options();
  o.max_live_flows = 3;
  Pipeline p(ctx, o);
  auto* cap = add(p, "cap");
  for (int port = 1; port <= 3; ++port) {
    p.push(firefly(FlowState::kStart, fmt::format("192.0.2.1:{}", port), now));
    now += 1'000'000;
  }
  // Flow 1 speaks again: flow 2 is now the one idle longest.
  p.push(firefly(FlowState::kOngoing, "192.0.2.1:1", now - 3'000'000, 10));
  now += 1'000'000;
  p.push(firefly(FlowState::kStart, "192.0.2.1:4", now));
  p.wait_idle();
  EXPECT_EQ(p.live_flows(), 3u);
  EXPECT_EQ(counters.value("flowmark_pipeline_evicted_total"), 1u);
  auto got = cap->events();
  ASSERT_EQ(got.size(), 6u);
  EXPECT_EQ(got[4].state, FlowState::kEnd);
  EXPECT_EQ(got[4].end_reason, scitags::EndReason::kEvicted);
  EXPECT_EQ(got[4].src.port, 2);
  EXPECT_EQ(got[5].src.port, 4);
  // Ten thousand more: the table stays at the bound, and the last ones are live.
  for (int i = 0; i < 10'000; ++i) {
    p.push(firefly(FlowState::kStart, fmt::format("192.0.2.2:{}", 1 + i), now));
  }
  EXPECT_EQ(p.live_flows(), 3u);
  EXPECT_EQ(counters.value("flowmark_pipeline_evicted_total"), 10'001u);
  auto log = cap->log;  // the backend goes with shutdown(), its log stays
  p.shutdown();
  auto all = log->events;
  ASSERT_GE(all.size(), 3u);
  for (std::size_t i = all.size() - 3; i < all.size(); ++i) {
    EXPECT_EQ(all[i].end_reason, scitags::EndReason::kShutdown);
    EXPECT_GE(all[i].src.port, 9998);
  }
}

TEST_F(PipelineTest, ABackendGivenAFlowsEventsAlwaysGetsItsEnd) {
  auto o = options();
  o.queue_size = 16;
  Pipeline p(ctx, o);
  auto* slow = add(p, "slow");
  // Its worker inside on_event with one flow's start (that flow is held and ended too): a
  // worker slow to start would otherwise take the whole queue, ends included, at once.
  stick(p, *slow, counters, "slow");
  // 40 flows start while the backend is stuck: those that fit its queue are given to it,
  // the rest dropped. Then their ends: those of the flows it holds go in past the bound,
  // the others do not (the queue is full and it knows nothing of those flows).
  for (int i = 0; i < 40; ++i) {
    p.push(firefly(FlowState::kStart, fmt::format("192.0.2.1:{}", 1 + i), now));
  }
  for (int i = 0; i < 40; ++i) {
    p.push(firefly(FlowState::kEnd, fmt::format("192.0.2.1:{}", 1 + i), now));
  }
  slow->release();
  p.wait_idle();
  // It was given the starts that fitted (16, or a few more when its worker had taken some
  // from the queue before it stuck) and exactly their ends, nothing of the other flows.
  auto got = slow->events();
  std::set<std::uint16_t> started, ended;
  for (const auto& e : got) {
    if (e.src.port == 65000) continue;  // the flow stick() started
    (e.state == FlowState::kStart ? started : ended).insert(e.src.port);
  }
  EXPECT_EQ(started, ended);
  EXPECT_GE(started.size(), 16u);
  EXPECT_LT(started.size(), 40u);
  EXPECT_EQ(got.size(), 1 + 2 * started.size());
  EXPECT_EQ(counters.value("flowmark_backend_events_total",
                           {{"backend", "slow"}, {"outcome", "dropped_queue_full"}}),
            80u + 1u - got.size());
}

// Back-pressure: a lossless source's events are never dropped for a full queue; has_room() is
// false while a queue holds its lossless mark; when_room() calls back on the loop thread once
// the worker took the queue, wait_for_room() wakes another thread.
TEST_F(PipelineTest, LosslessEventsAreNeverDroppedAndTheSourceIsCalledBackWhenThereIsRoom) {
  auto o = options();
  o.queue_size = 16;
  o.drain_timeout = 600;  // never given up here
  // The loop first: it outlives the pipeline, which cancels its timers on it at the end.
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  Pipeline p(ctx, o);
  ASSERT_TRUE(p.attach(*loop).has_value());
  auto* slow = add(p, "slow");
  EXPECT_TRUE(p.has_room());
  stick(p, *slow, counters, "slow");
  constexpr int kEvents = 100;
  for (int i = 1; i < kEvents; ++i) {
    p.push_lossless(
        event(FlowState::kStart, fmt::format("192.0.2.1:{}", 1000 + i), "198.51.100.1:2"));
  }
  EXPECT_FALSE(p.has_room());
  EXPECT_EQ(counters.value("flowmark_backend_events_total",
                           {{"backend", "slow"}, {"outcome", "dropped_queue_full"}}),
            0u);
  // A thread that waits for room with a deadline, and one stopped by its stop token.
  EXPECT_FALSE(
      p.wait_for_room({}, std::chrono::steady_clock::now() + std::chrono::milliseconds(20)));
  std::stop_source stopper;
  std::thread stopped([&] {
    EXPECT_FALSE(p.wait_for_room(stopper.get_token(),
                                 std::chrono::steady_clock::now() + std::chrono::seconds(30)));
  });
  stopper.request_stop();
  stopped.join();
  std::atomic<bool> woke = false;
  std::thread waiter([&] {
    EXPECT_TRUE(p.wait_for_room({}, std::chrono::steady_clock::now() + std::chrono::seconds(30)));
    woke = true;
  });
  bool resumed = false;
  const auto id = p.when_room([&] { resumed = true; });
  EXPECT_NE(id, 0u);
  slow->release();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!resumed && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(loop->run_once(std::chrono::milliseconds(100)).has_value());
  }
  EXPECT_TRUE(resumed);
  waiter.join();
  EXPECT_TRUE(woke);
  p.wait_idle();
  EXPECT_EQ(slow->events().size(), static_cast<std::size_t>(kEvents));
}

// A backend stuck with a full queue is given up after drain_timeout: lossless sources no
// longer wait for it (their events that do not fit it are dropped and counted), the others
// still get everything; when it takes events again, it is waited for again.
TEST_F(PipelineTest, AStuckBackendIsGivenUpAfterDrainTimeoutAndLosslessSourcesGoOn) {
  auto o = options();
  o.queue_size = 16;
  o.drain_timeout = 0.2;
  // The loop first: it outlives the pipeline, which cancels its timers on it at the end.
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.has_value());
  Pipeline p(ctx, o);
  ASSERT_TRUE(p.attach(*loop).has_value());
  auto* stuck = add(p, "stuck");
  auto* fast = add(p, "fast");
  stick(p, *stuck, counters, "stuck");
  for (int i = 1; i < 40; ++i) {
    p.push_lossless(
        event(FlowState::kStart, fmt::format("192.0.2.1:{}", 1000 + i), "198.51.100.1:2"));
  }
  ASSERT_FALSE(p.has_room());
  bool resumed = false;
  p.when_room([&] { resumed = true; });
  const auto t0 = std::chrono::steady_clock::now();
  while (!resumed && std::chrono::steady_clock::now() < t0 + std::chrono::seconds(10)) {
    ASSERT_TRUE(loop->run_once(std::chrono::milliseconds(100)).has_value());
  }
  EXPECT_TRUE(resumed);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(150));
  EXPECT_TRUE(p.has_room());
  // Given up: what does not fit its queue is dropped for it, the fast one gets everything.
  for (int i = 40; i < 80; ++i) {
    p.push_lossless(
        event(FlowState::kStart, fmt::format("192.0.2.1:{}", 1000 + i), "198.51.100.1:2"));
  }
  ASSERT_TRUE(fast->wait_events(80));
  EXPECT_EQ(counters.value("flowmark_backend_events_total",
                           {{"backend", "stuck"}, {"outcome", "dropped_queue_full"}}),
            40u);
  stuck->release();
  p.wait_idle();
  EXPECT_EQ(stuck->events().size(), 40u);
  EXPECT_EQ(fast->events().size(), 80u);
}

}  // namespace
}  // namespace flowmark::daemon
