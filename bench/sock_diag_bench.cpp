// The cost of one poll of the `sockets` source: a sock_diag dump of 10,000 established
// loopback sockets (5,000 connected pairs), with and without tcp_info, and the dump feeding
// the connection tracker. The service's target is < 1 % of a core with a 2 s period, i.e.
// ≤ 20 ms per poll.
//
//   build/release/bench/sock_diag_bench [--pairs=5000] [benchmark flags]
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "daemon/common/tracker.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/net/socket.hpp"
#include "flowmark/netclient/sock_diag.hpp"

namespace {

using flowmark::Family;
using flowmark::IpAddress;
using flowmark::UniqueFd;
using flowmark::netclient::kConnectedStates;
using flowmark::netclient::SockDiag;
using flowmark::netclient::SocketInfo;
namespace sk = flowmark::daemon::sockets;

std::vector<UniqueFd> g_fds;  // every socket of the pairs, kept open for the whole run

bool raise_fd_limit(rlim_t want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur >= want) return true;
  rl.rlim_cur = std::min(want, rl.rlim_max);
  if (rl.rlim_cur < want) rl.rlim_max = rl.rlim_cur = want;  // needs CAP_SYS_RESOURCE
  return ::setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

bool open_pairs(int pairs) {
  auto listener = flowmark::net::listen_tcp({*IpAddress::parse("127.0.0.1"), 0}, 1024);
  if (!listener) {
    std::fprintf(stderr, "%s\n", listener.error().message().c_str());
    return false;
  }
  auto at = flowmark::net::local_endpoint(listener->get());
  if (!at) {
    std::fprintf(stderr, "%s\n", at.error().message().c_str());
    return false;
  }
  for (int i = 0; i < pairs; ++i) {
    auto c = flowmark::net::connect_tcp(*at);
    if (!c) {
      std::fprintf(stderr, "%s\n", c.error().message().c_str());
      return false;
    }
    UniqueFd s(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!s) {
      std::perror("accept");
      return false;
    }
    g_fds.push_back(std::move(*c));
    g_fds.push_back(std::move(s));
  }
  return true;
}

void BM_Dump(benchmark::State& state) {
  auto diag = SockDiag::open();
  if (!diag) {
    state.SkipWithError(diag.error().message().c_str());
    return;
  }
  const bool info = state.range(0) != 0;
  std::size_t sockets = 0;
  for (auto _ : state) {
    std::size_t n = 0;
    auto r = diag->dump({.family = Family::kV4, .states = kConnectedStates, .want_info = info},
                        [&](const SocketInfo& s) { n += s.cookie != 0; });
    if (!r) {
      state.SkipWithError(r.error().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(n);
    sockets = *r;
  }
  state.counters["sockets"] = static_cast<double>(sockets);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * sockets));
  state.SetLabel(info ? "with tcp_info" : "without tcp_info");
}
BENCHMARK(BM_Dump)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// What the source does every period: IPv4 and IPv6 TCP dumps with tcp_info, every socket
// through the tracker. skip_private off, so that all 10,000 loopback sockets are tracked
// (the worst case: with flowd's default they would be skipped at once).
void BM_Poll(benchmark::State& state) {
  auto diag = SockDiag::open();
  if (!diag) {
    state.SkipWithError(diag.error().message().c_str());
    return;
  }
  sk::TrackerOptions o;
  o.skip_private = state.range(0) != 0;
  o.announce_existing = true;
  std::size_t events = 0;
  sk::ConnectionTracker tracker(o, [&](const flowmark::scitags::FlowEvent&) { ++events; });
  flowmark::Micros now = 1;
  for (auto _ : state) {
    tracker.begin(now++);
    for (auto f : {Family::kV4, Family::kV6}) {
      auto r = diag->dump({.family = f, .states = kConnectedStates, .want_info = true},
                          [&](const SocketInfo& s) { tracker.observe(s); });
      if (!r) {
        state.SkipWithError(r.error().message().c_str());
        return;
      }
    }
    tracker.finish();
  }
  state.counters["tracked"] = static_cast<double>(tracker.tracked());
  state.counters["events"] = static_cast<double>(events);
  state.SetLabel(o.skip_private ? "skip_private (loopback skipped)" : "all tracked");
}
BENCHMARK(BM_Poll)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  int pairs = 5000;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with("--pairs=")) pairs = std::atoi(argv[i] + 8);
  }
  if (!raise_fd_limit(static_cast<rlim_t>(2 * pairs + 64))) {
    std::fprintf(stderr, "cannot raise RLIMIT_NOFILE to %d: %s\n", 2 * pairs + 64,
                 std::strerror(errno));
    return 1;
  }
  if (!open_pairs(pairs)) return 1;
  std::fprintf(stderr, "%d loopback pairs (%zu sockets) open\n", pairs, g_fds.size());
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
