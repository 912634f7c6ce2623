// firefly_bench — cost of the Scitags firefly codec on one core.
//
// What it measures (the targets: encode ≥ 3,000,000 fireflies/s, decode + validate
// ≥ 1,000,000 fireflies/s, both on one core; printed in the label, never asserted here):
//   encode/<shape>        FireflyEncoder::encode with the syslog header (and once without)
//                         for a start event, an end event with usage, an IPv6 event
//   decode/<form>         FireflyDecoder::decode (parse + schema validation) of each golden
//                         form in tests/data/fireflies: flowd (Python, spaced JSON, header),
//                         flowd-go (compact, empty timestamp), bare JSON, XRootD-style (IPv6,
//                         end, usage and an extra top-level object)
//   decode/reject_port0   a firefly the decoder refuses (flowd-go's port 0 defect)
//   time/format_rfc3339_micros, time/parse_rfc3339/<form>   the time codec alone
// Counters: items_per_second (one item = one firefly or one time), and allocs/item — the
// calls of the global operator new (all forms) per item, counted over 1000 more calls
// after the timed loop (so after warm-up). The encoder must show 0, and so must every
// accepted decode (kept extra objects reuse the previous firefly's strings); a rejection
// allocates its detail text.
//
//   ./build/release/bench/firefly_bench [--benchmark_filter=decode]
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <new>
#include <sstream>
#include <string>

#include "flowmark/core/time.hpp"
#include "flowmark/scitags/firefly.hpp"

// ---- allocation counter ----------------------------------------------------------------
// Every form of the global operator new is replaced so that nothing escapes the count
// (libstdc++ routes new[] and the nothrow forms through operator new, but not the aligned
// ones); the deletes are replaced to match (malloc / aligned_alloc → free).
namespace {
std::atomic<std::uint64_t> g_allocs{0};

void* counted_alloc(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* counted_alloc_aligned(std::size_t n, std::align_val_t al) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<std::size_t>(al);
  const std::size_t size = (n + a - 1) / a * a;  // aligned_alloc wants a multiple
  if (void* p = std::aligned_alloc(a, size ? size : a)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a) { return counted_alloc_aligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return counted_alloc_aligned(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc_aligned(n, a);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc_aligned(n, a);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using flowmark::Endpoint;
using flowmark::Micros;
using namespace flowmark::scitags;

constexpr Micros kStart = 1742896800'123456;  // 2025-03-25T10:00:00.123456Z

// allocs/item: the operator-new calls of kAllocProbe further calls of `fn`, made after the
// timed loop (the loop itself may see an allocation or two of the framework's own).
constexpr int kAllocProbe = 1000;

template <typename Fn>
void finish(benchmark::State& state, Fn&& fn, const char* target = nullptr) {
  state.SetItemsProcessed(state.iterations());
  const auto before = g_allocs.load(std::memory_order_relaxed);
  for (int i = 0; i < kAllocProbe; ++i) fn();
  const auto n = g_allocs.load(std::memory_order_relaxed) - before;
  state.counters["allocs/item"] = benchmark::Counter(static_cast<double>(n) / kAllocProbe);
  if (target) state.SetLabel(target);
}

FlowEvent start_ipv4() {
  FlowEvent e;
  e.state = FlowState::kStart;
  e.protocol = Protocol::kTcp;
  e.src = *Endpoint::parse("192.168.0.1:2345");
  e.dst = *Endpoint::parse("192.168.0.2:5777");
  e.experiment = 1;
  e.activity = 2;
  e.start_time = kStart;
  return e;  // current_time 0: the encoder uses `now`
}

FlowEvent end_usage_ipv4() {
  FlowEvent e = start_ipv4();
  e.state = FlowState::kEnd;
  e.src = *Endpoint::parse("198.51.100.123:40412");
  e.dst = *Endpoint::parse("203.0.113.254:1094");
  e.end_time = kStart + 300'000'000;
  e.usage = Usage{.received = 1024, .sent = 107374182400};
  return e;
}

FlowEvent start_ipv6() {
  FlowEvent e = start_ipv4();
  e.src = *Endpoint::parse("[2001:db8:85a3::8a2e:370:7334]:40412");
  e.dst = *Endpoint::parse("[2001:db8:1::2]:1094");
  e.experiment = 2;
  e.activity = 3;
  return e;
}

void encode(benchmark::State& state, FlowEvent (*make)(), bool header) {
  FireflyEncoder enc(
      {.hostname = "dtn1.example.org", .application = "xrootd 5.7.1", .syslog_header = header});
  const FlowEvent e = make();
  Micros now = kStart + 1;
  if (!enc.encode(e, now)) {  // warm-up: the buffer reaches its size
    state.SkipWithError("encode failed");
    return;
  }
  auto one = [&] {
    auto w = enc.encode(e, now);
    benchmark::DoNotOptimize(w);
    now += 7;  // a fresh timestamp each time, as in real use
  };
  for (auto _ : state) one();
  finish(state, one, "target >= 3,000,000/s");
}

std::string read_golden(const std::string& name) {
  std::ifstream in(std::string(FLOWMARK_TEST_DATA) + "/fireflies/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void decode_text(benchmark::State& state, const std::string& wire, bool want_accept) {
  FireflyDecoder dec;
  {
    auto r = dec.decode(wire);  // warm-up: strings and vectors reach their capacity
    if (r.has_value() != want_accept) {
      state.SkipWithError(r ? "accepted a firefly it should refuse"
                            : ("rejected: " + r.error().detail).c_str());
      return;
    }
  }
  auto one = [&] {
    auto r = dec.decode(wire);
    benchmark::DoNotOptimize(r);
  };
  for (auto _ : state) one();
  finish(state, one, "target >= 1,000,000/s");
}

void decode_golden(benchmark::State& state, const char* file) {
  const std::string wire = read_golden(file);
  if (wire.empty()) {
    state.SkipWithError((std::string("cannot read golden file ") + file).c_str());
    return;
  }
  decode_text(state, wire, true);
}

void decode_reject(benchmark::State& state) {
  // flowd-go's port-0 defect, in the compact form it sends.
  std::string wire = read_golden("go_start.txt");
  const auto at = wire.find("\"dst-port\":5777");
  if (at == std::string::npos) {
    state.SkipWithError("go_start.txt has no dst-port 5777");
    return;
  }
  wire.replace(at, 15, "\"dst-port\":0");
  decode_text(state, wire, false);
}

void time_format(benchmark::State& state) {
  char buf[flowmark::kRfc3339MicrosSize];
  Micros t = kStart;
  auto one = [&] {
    flowmark::format_rfc3339_micros(buf, t);
    benchmark::DoNotOptimize(buf);
    t += 1'000'003;
  };
  for (auto _ : state) one();
  finish(state, one);
}

void time_parse(benchmark::State& state, const char* text) {
  const std::string s = text;
  auto one = [&] {
    benchmark::DoNotOptimize(s.data());
    auto t = flowmark::parse_rfc3339(s);
    benchmark::DoNotOptimize(t);
  };
  for (auto _ : state) one();
  finish(state, one);
}

BENCHMARK_CAPTURE(encode, start_ipv4, start_ipv4, true);
BENCHMARK_CAPTURE(encode, start_ipv4_no_header, start_ipv4, false);
BENCHMARK_CAPTURE(encode, end_usage_ipv4, end_usage_ipv4, true);
BENCHMARK_CAPTURE(encode, start_ipv6, start_ipv6, true);
BENCHMARK_CAPTURE(decode_golden, python_start, "python_start.txt")->Name("decode/python_start");
BENCHMARK_CAPTURE(decode_golden, go_start, "go_start.txt")->Name("decode/go_start");
BENCHMARK_CAPTURE(decode_golden, bare_start, "bare_start.json")->Name("decode/bare_start");
BENCHMARK_CAPTURE(decode_golden, xrootd_end_ipv6, "xrootd_end_ipv6.json")
    ->Name("decode/xrootd_end_ipv6");
BENCHMARK(decode_reject)->Name("decode/reject_port0");
BENCHMARK(time_format)->Name("time/format_rfc3339_micros");
BENCHMARK_CAPTURE(time_parse, micros_offset, "2025-03-25T10:00:00.123456+00:00")
    ->Name("time/parse_rfc3339/micros_offset");
BENCHMARK_CAPTURE(time_parse, seconds_z, "2025-03-25T10:00:00Z")
    ->Name("time/parse_rfc3339/seconds_z");

}  // namespace

BENCHMARK_MAIN();
