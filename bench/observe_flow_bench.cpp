// Observer::on_packet throughput (decode included) with N concurrent flows, frames
// pre-built in memory.
//
// The stream holds each flow's two directions once, in a random order, and is replayed
// while the packet clock advances 1 µs a packet. Flows are created by a warm-up pass in a
// different random order, so that the timed passes reach the flow table at random (as a
// real capture would), not in the order the flows were allocated. No flow ends during a
// timed pass (idle timeout 30 s of packet clock, far more than a pass).
//
// Times and rates are per CPU second of this process (the default): on a shared machine the
// wall clock also counts other processes' turns. Run repetitions and read the best: `_min`
// rows for the time per packet, `_max` rows for items_per_second.
//
//   build/release/bench/observe_flow_bench --benchmark_repetitions=5
//     --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "flowmark/observe/observer.hpp"

namespace {

double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }
double max_of(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }

using flowmark::observe::LinkType;
using flowmark::observe::Nanos;
using flowmark::observe::Observer;
using flowmark::observe::ObserverConfig;

constexpr std::size_t kStride = 80;  // bytes per pre-built frame slot

// Ethernet + IPv4 + (UDP + 22 bytes | TCP ACK + 10 bytes): 64-byte frames.
std::size_t build_frame(std::uint8_t* f, std::uint32_t a, std::uint32_t b, std::uint16_t sp,
                        std::uint16_t dp, bool tcp, bool v6) {
  std::size_t n = 0;
  auto u8 = [&](unsigned v) { f[n++] = static_cast<std::uint8_t>(v); };
  auto u16 = [&](unsigned v) { u8(v >> 8), u8(v); };
  auto u32 = [&](std::uint32_t v) { u16(v >> 16), u16(v & 0xffff); };
  u32(0x02000000), u16(1), u32(0x02000000), u16(2), u16(v6 ? 0x86dd : 0x0800);
  const unsigned l4 = tcp ? 20 + 10 : 8 + 22;
  if (!v6) {
    u8(0x45), u8(0), u16(20 + l4), u16(0), u16(0x4000), u8(64), u8(tcp ? 6 : 17), u16(0);
    u32(a), u32(b);
  } else {
    u32(0x60000000), u16(l4), u8(tcp ? 6 : 17), u8(64);
    u32(0x20010db8), u32(0), u32(0), u32(a);
    u32(0x20010db8), u32(0), u32(0), u32(b);
  }
  u16(sp), u16(dp);
  if (tcp) {
    u32(1), u32(2), u8(5 << 4), u8(0x10), u16(65535), u16(0), u16(0);
    for (int i = 0; i < 10; ++i) u8(0);
  } else {
    u16(l4), u16(0);
    for (int i = 0; i < 22; ++i) u8(0);
  }
  return n;
}

struct Stream {
  std::unique_ptr<std::uint8_t[]> bytes;
  std::vector<std::uint16_t> len;
  std::size_t count = 0;
  std::span<const std::byte> frame(std::size_t i) const {
    return {reinterpret_cast<const std::byte*>(bytes.get() + i * kStride), len[i]};
  }
};

// Two frames per flow (both directions; or one, the client's), shuffled. Flows: client
// 10.x.y.z:port ↔ one of 64 servers, half TCP, half UDP.
Stream make_stream(std::size_t flows, bool v6, std::uint32_t seed, bool both = true) {
  Stream s;
  const std::size_t per_flow = both ? 2 : 1;
  s.count = flows * per_flow;
  s.bytes = std::make_unique<std::uint8_t[]>(s.count * kStride);
  s.len.resize(s.count);
  std::vector<std::uint32_t> order(s.count);
  std::iota(order.begin(), order.end(), 0u);
  std::mt19937 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  for (std::size_t i = 0; i < s.count; ++i) {
    const std::uint32_t id = order[i] / static_cast<std::uint32_t>(per_flow);
    const bool reply = both && order[i] % 2;
    const std::uint32_t client = 0x0a000000u + id / 8, server = 0xc6336400u + id % 64;
    const auto cport = static_cast<std::uint16_t>(10000 + id % 8 * 1000 + id % 997);
    const std::uint16_t sport = id % 2 ? 443 : 53;
    const bool tcp = id % 2;
    s.len[i] = static_cast<std::uint16_t>(
        reply ? build_frame(s.bytes.get() + i * kStride, server, client, sport, cport, tcp, v6)
              : build_frame(s.bytes.get() + i * kStride, client, server, cport, sport, tcp, v6));
  }
  return s;
}

void BM_ObserverPackets(benchmark::State& state) {
  const auto flows = static_cast<std::size_t>(state.range(0));
  const bool v6 = state.range(1) != 0;
  const Stream s = make_stream(flows, v6, 42);
  std::uint64_t emitted = 0;
  Observer obs(ObserverConfig{.max_flows = std::max<std::size_t>(flows, 1 << 10)},
               [&](const flowmark::observe::FlowRecord&) { ++emitted; });
  obs.add_tcp(flowmark::observe::tcp_complete_on_fin_or_rst);

  Nanos t = 1'700'000'000'000'000'000;
  {  // warm-up: create every flow, in another order than the timed passes use
    std::vector<std::uint32_t> q(s.count);
    std::iota(q.begin(), q.end(), 0u);
    std::shuffle(q.begin(), q.end(), std::mt19937(7));
    for (std::uint32_t i : q) obs.on_packet(t += 1000, LinkType::kEthernet, s.frame(i));
  }
  if (obs.active_flows() != flows) state.SkipWithError("warm-up did not create every flow");

  std::size_t i = 0;
  for (auto _ : state) {
    obs.on_packet(t += 1000, LinkType::kEthernet, s.frame(i));
    if (++i == s.count) i = 0;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["flows"] = static_cast<double>(obs.active_flows());
  state.counters["bytes_per_flow"] = static_cast<double>(obs.bytes_per_flow());
  state.counters["emitted"] = static_cast<double>(emitted);
}
// 64 flows: everything in L1/L2, the compute cost alone.
BENCHMARK(BM_ObserverPackets)
    ->ArgNames({"flows", "v6"})
    ->Args({64, 0})
    ->Args({10'000, 0})
    ->Args({1'000'000, 0})
    ->Args({10'000, 1})
    ->Args({1'000'000, 1})
    ->MinTime(2.0)
    ->ComputeStatistics("min", min_of)
    ->ComputeStatistics("max", max_of);

// The same stream through Observer::on_packets() in batches of 64 frames (as a ring-buffer
// capture would hand them over): the observer looks ahead within the batch.
void BM_ObserverPacketsBatched(benchmark::State& state) {
  const auto flows = static_cast<std::size_t>(state.range(0));
  const bool v6 = state.range(1) != 0;
  constexpr std::size_t kBatch = 64;
  const Stream s = make_stream(flows, v6, 42);
  std::uint64_t emitted = 0;
  Observer obs(ObserverConfig{.max_flows = std::max<std::size_t>(flows, 1 << 10)},
               [&](const flowmark::observe::FlowRecord&) { ++emitted; });
  obs.add_tcp(flowmark::observe::tcp_complete_on_fin_or_rst);
  Nanos t = 1'700'000'000'000'000'000;
  {
    std::vector<std::uint32_t> q(s.count);
    std::iota(q.begin(), q.end(), 0u);
    std::shuffle(q.begin(), q.end(), std::mt19937(7));
    for (std::uint32_t i : q) obs.on_packet(t += 1000, LinkType::kEthernet, s.frame(i));
  }
  if (obs.active_flows() != flows) state.SkipWithError("warm-up did not create every flow");
  std::array<flowmark::observe::FrameRef, kBatch> batch;
  std::size_t i = 0;
  for (auto _ : state) {
    for (auto& f : batch) {
      f = {t += 1000, s.frame(i)};
      if (++i == s.count) i = 0;
    }
    obs.on_packets(LinkType::kEthernet, batch);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kBatch));
  state.counters["emitted"] = static_cast<double>(emitted);
}
BENCHMARK(BM_ObserverPacketsBatched)
    ->ArgNames({"flows", "v6"})
    ->Args({64, 0})
    ->Args({10'000, 0})
    ->Args({1'000'000, 0})
    ->Args({1'000'000, 1})
    ->MinTime(2.0)
    ->ComputeStatistics("min", min_of)
    ->ComputeStatistics("max", max_of);

// Every packet a new flow in a full table: the eviction path (each packet evicts one). The
// stream cycles through twice as many flows as the table holds, so none survives until its
// next packet.
void BM_ObserverNewFlowsEvicting(benchmark::State& state) {
  const auto flows = static_cast<std::size_t>(state.range(0));
  const Stream s = make_stream(flows * 2, false, 43, /*both=*/false);
  std::uint64_t emitted = 0;
  Observer obs(ObserverConfig{.max_flows = flows},
               [&](const flowmark::observe::FlowRecord&) { ++emitted; });
  Nanos t = 1'700'000'000'000'000'000;
  std::size_t i = 0;
  for (; i < flows; ++i) obs.on_packet(t += 1000, LinkType::kEthernet, s.frame(i));  // fill
  const std::uint64_t evicted = obs.stats().evicted;
  for (auto _ : state) {
    obs.on_packet(t += 1000, LinkType::kEthernet, s.frame(i));
    if (++i == s.count) i = 0;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["evicted_per_packet"] =
      static_cast<double>(obs.stats().evicted - evicted) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_ObserverNewFlowsEvicting)
    ->ArgNames({"flows"})
    ->Arg(10'000)
    ->Arg(1'000'000)
    ->MinTime(1.0)
    ->ComputeStatistics("min", min_of)
    ->ComputeStatistics("max", max_of);

// Decode alone on the same frames, for reference.
void BM_DecodeOnly(benchmark::State& state) {
  const Stream s = make_stream(static_cast<std::size_t>(state.range(0)), false, 44);
  std::size_t i = 0;
  flowmark::observe::PacketView p;
  for (auto _ : state) {
    benchmark::DoNotOptimize(flowmark::observe::decode_packet(LinkType::kEthernet, s.frame(i), p));
    benchmark::DoNotOptimize(p);
    if (++i == s.count) i = 0;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_DecodeOnly)
    ->ArgNames({"flows"})
    ->Arg(10'000)
    ->Arg(1'000'000)
    ->ComputeStatistics("min", min_of)
    ->ComputeStatistics("max", max_of);

}  // namespace

BENCHMARK_MAIN();
