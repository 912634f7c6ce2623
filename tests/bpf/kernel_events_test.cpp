// The kernel-events source on loopback: real TCP connections opened and closed in the test,
// the start and end events read by a test FlowSink through the service's EventLoop, and the
// TCP state tracer (bpf::TcpStateWatcher) with its kernel port filter.
// Needs CAP_BPF + CAP_PERFMON (root): without them every test skips, saying so.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <vector>

#include "../unit/daemon/test_util.hpp"
#include "daemon/sources/kernel_events/kernel_events_source.hpp"
#include "flowmark/bpf/flowlabel.hpp"
#include "flowmark/bpf/kernel_events.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::daemon::kernel_events {
namespace {

using scitags::FlowEvent;
using scitags::FlowState;

using testing::TestSink;

// A listener on loopback (port 0): its endpoint.
UniqueFd listen_on(const char* addr, Endpoint& bound) {
  auto fd = net::listen_tcp({*IpAddress::parse(addr), 0}, 8);
  EXPECT_TRUE(fd.has_value()) << fd.error().message();
  if (!fd) return UniqueFd{};
  bound = net::local_endpoint(fd->get()).value_or(Endpoint{});
  return std::move(*fd);
}

UniqueFd connect_to(const Endpoint& to, Endpoint& local) {
  auto fd = net::connect_tcp(to);
  EXPECT_TRUE(fd.has_value()) << fd.error().message();
  if (!fd) return UniqueFd{};
  local = net::local_endpoint(fd->get()).value_or(Endpoint{});
  return std::move(*fd);
}

// Runs the loop until `sink` holds `n` events (or 3 s pass).
void run_until(EventLoop& loop, const TestSink& sink, std::size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (sink.events.size() < n && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(loop.run_once(std::chrono::milliseconds(50)));
  }
}

const FlowEvent* find(const TestSink& sink, FlowState state, const Endpoint& src) {
  for (const auto& e : sink.events) {
    if (e.state == state && e.src == src) return &e;
  }
  return nullptr;
}

// Whether a start error may skip the test: a missing privilege (EPERM) or a kernel without
// the feature (no BTF, no BPF, an operation it does not support). Anything else — the
// verifier refusing the program, a missing tracepoint on a kernel that should have it — is
// a failure.
bool may_skip(const Error& e) {
  const auto& c = e.code();
  return c == Errc::kUnsupported || c == std::errc::operation_not_permitted ||
         c == std::errc::function_not_supported || c == std::errc::operation_not_supported ||
         c == std::errc::not_supported;
}

// Starts `source`; skips (GTEST_SKIP) only where may_skip() says so, fails otherwise.
#define START_OR_SKIP(source, loop, sink)                                          \
  do {                                                                             \
    if (auto r_ = (source).start((loop), (sink)); !r_) {                           \
      if (may_skip(r_.error())) GTEST_SKIP() << r_.error().message();              \
      FAIL() << "cannot start the kernel-events source: " << r_.error().message(); \
    }                                                                              \
  } while (0)

class KernelEventsTest : public ::testing::TestWithParam<const char*> {};

TEST_P(KernelEventsTest, StartThenEndOfBothSidesWithTheTuple) {
  Endpoint server_ep, client_ep;
  UniqueFd listener = listen_on(GetParam(), server_ep);
  Counters counters;
  KernelEventsOptions o;
  o.skip_private = false;  // loopback
  o.ports = {{server_ep.port, server_ep.port}};
  o.tag = {2, 9};
  KernelEventsSource source("kev", o, counters);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  TestSink sink;
  START_OR_SKIP(source, *loop, sink);

  const auto t0 = monotonic_ns();
  UniqueFd client = connect_to(server_ep, client_ep);
  UniqueFd served(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_GE(served.get(), 0);
  run_until(*loop, sink, 2);
  ASSERT_EQ(sink.events.size(), 2u);
  std::printf("connect() -> start event in the sink: %.1f us\n",
              static_cast<double>(sink.at_ns[0] - t0) / 1e3);

  // The connecting side: local → listener; the accepting side: listener → client.
  const FlowEvent* c = find(sink, FlowState::kStart, client_ep);
  const FlowEvent* s = find(sink, FlowState::kStart, server_ep);
  ASSERT_TRUE(c && s);
  EXPECT_EQ(c->dst, server_ep);
  EXPECT_EQ(s->dst, client_ep);
  EXPECT_EQ(c->protocol, scitags::Protocol::kTcp);
  EXPECT_EQ(c->experiment, 2u);
  EXPECT_EQ(c->activity, 9u);
  EXPECT_NE(c->start_time, 0);
  EXPECT_EQ(source.tracked(), 2u);

  const std::string data(1000, 'x');
  ASSERT_EQ(::write(client.get(), data.data(), data.size()), 1000);
  char buf[2000];
  ASSERT_EQ(::read(served.get(), buf, sizeof(buf)), 1000);
  client.reset();  // FIN: client ESTABLISHED → FIN_WAIT1, server → CLOSE_WAIT
  run_until(*loop, sink, 3);
  served.reset();
  run_until(*loop, sink, 4);
  ASSERT_EQ(sink.events.size(), 4u);
  const FlowEvent* ce = find(sink, FlowState::kEnd, client_ep);
  const FlowEvent* se = find(sink, FlowState::kEnd, server_ep);
  ASSERT_TRUE(ce && se);
  EXPECT_EQ(ce->dst, server_ep);
  EXPECT_EQ(se->dst, client_ep);
  EXPECT_EQ(ce->start_time, c->start_time);
  EXPECT_GE(ce->end_time, ce->start_time);
  ASSERT_TRUE(se->usage.has_value());
  EXPECT_EQ(se->usage->received, 1000u);
  EXPECT_EQ(source.tracked(), 0u);

  // One end per connection: nothing more comes as the sockets finish closing.
  loop->run_once(std::chrono::milliseconds(100));
  EXPECT_EQ(sink.events.size(), 4u);
  source.stop();
  EXPECT_EQ(counters.counter("flowmark_kernel_events_total", {{"source", "kev"}, {"state", "end"}})
                .load(),
            2u);
}

INSTANTIATE_TEST_SUITE_P(Loopback, KernelEventsTest, ::testing::Values("127.0.0.1", "::1"));

TEST(KernelEvents, OtherPortsAndPrivateDestinationsAreSkipped) {
  Endpoint wanted_ep, other_ep, local;
  UniqueFd wanted = listen_on("127.0.0.1", wanted_ep);
  UniqueFd other = listen_on("127.0.0.1", other_ep);
  Counters counters;
  KernelEventsOptions o;  // skip_private: loopback destinations are not announced
  o.ports = {{wanted_ep.port, wanted_ep.port}};
  KernelEventsSource source("kev", o, counters);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  TestSink sink;
  START_OR_SKIP(source, *loop, sink);
  {
    UniqueFd a = connect_to(wanted_ep, local);
    UniqueFd b = connect_to(other_ep, local);
    UniqueFd a2(::accept(wanted.get(), nullptr, nullptr));
    UniqueFd b2(::accept(other.get(), nullptr, nullptr));
  }
  for (int i = 0; i < 4; ++i) loop->run_once(std::chrono::milliseconds(50));
  source.stop();  // publishes the kernel's counters
  EXPECT_TRUE(sink.events.empty());
  auto c = [&](const char* reason) {
    return counters
        .counter("flowmark_kernel_events_skipped_total", {{"source", "kev"}, {"reason", reason}})
        .load();
  };
  EXPECT_EQ(c("internal"), 2u);  // both starts of the wanted port: loopback
  EXPECT_EQ(c("existing"), 2u);  // ...so their ends have no start
  EXPECT_GE(c("port"), 4u);      // the other port's changes, in the kernel
}

TEST(KernelEvents, ConnectionsOpenBeforeTheStartAreNotAnnounced) {
  Endpoint server_ep, local;
  UniqueFd listener = listen_on("::1", server_ep);
  UniqueFd early = connect_to(server_ep, local);
  UniqueFd early_served(::accept(listener.get(), nullptr, nullptr));
  Counters counters;
  KernelEventsOptions o;
  o.skip_private = false;
  o.ports = {{server_ep.port, server_ep.port}};
  KernelEventsSource source("kev", o, counters);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  TestSink sink;
  START_OR_SKIP(source, *loop, sink);
  early.reset();
  early_served.reset();
  for (int i = 0; i < 4; ++i) loop->run_once(std::chrono::milliseconds(50));
  EXPECT_TRUE(sink.events.empty());
  source.stop();
}

// The cgroup v2 hierarchy: /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid systems.
std::string cgroup2_root() {
  for (const char* p : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    if (bpf::cgroup_id_of(p)) return p;
  }
  return {};
}

TEST(KernelEvents, OnlySocketsOfTheCgroupAndBelow) {
  const std::string root = cgroup2_root();
  if (root.empty()) GTEST_SKIP() << "no cgroup v2 hierarchy mounted";
  const std::string outer = root + "/flowmark-kev-test-" + std::to_string(::getpid());
  const std::string inner = outer + "/inner";
  if (::mkdir(outer.c_str(), 0755) != 0 || ::mkdir(inner.c_str(), 0755) != 0) {
    ::rmdir(outer.c_str());
    GTEST_SKIP() << "cannot create a cgroup under " << root;
  }
  struct Cleanup {
    std::string inner, outer;
    ~Cleanup() {
      ::rmdir(inner.c_str());
      ::rmdir(outer.c_str());
    }
  } cleanup{inner, outer};

  Endpoint server_ep, local;
  UniqueFd listener = listen_on("127.0.0.1", server_ep);
  Counters counters;
  KernelEventsOptions o;
  o.skip_private = false;
  o.ports = {{server_ep.port, server_ep.port}};
  o.cgroup = outer;  // the child's socket is in outer/inner: an ancestor matches
  KernelEventsSource source("kev", o, counters);
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  TestSink sink;
  START_OR_SKIP(source, *loop, sink);

  // Ours (this process's cgroup): not reported.
  UniqueFd mine = connect_to(server_ep, local);
  UniqueFd mine_served(::accept(listener.get(), nullptr, nullptr));
  // The child's, from inside the inner cgroup.
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::ofstream(inner + "/cgroup.procs") << ::getpid() << std::flush;
    sockaddr_storage ss{};
    socklen_t len = server_ep.to_sockaddr(ss);
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) ::_exit(1);
    sockaddr_in me{};
    len = sizeof(me);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
    const std::uint16_t port = ntohs(me.sin_port);
    (void)!::write(report[1], &port, sizeof(port));
    char b;
    (void)!::read(fd, &b, 1);  // until the parent closes its side
    ::close(fd);
    ::_exit(0);
  }
  ::close(report[1]);
  std::uint16_t child_port = 0;
  ASSERT_EQ(::read(report[0], &child_port, sizeof(child_port)), 2);
  ::close(report[0]);
  UniqueFd theirs_served(::accept(listener.get(), nullptr, nullptr));
  run_until(*loop, sink, 1);
  theirs_served.reset();
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  run_until(*loop, sink, 2);
  for (int i = 0; i < 2; ++i) loop->run_once(std::chrono::milliseconds(50));
  source.stop();
  ASSERT_EQ(sink.events.size(), 2u);
  EXPECT_EQ(sink.events[0].state, FlowState::kStart);
  EXPECT_EQ(sink.events[0].src.port, child_port);
  EXPECT_EQ(sink.events[0].dst, server_ep);
  EXPECT_EQ(sink.events[1].state, FlowState::kEnd);
  EXPECT_EQ(sink.events[1].src.port, child_port);
  EXPECT_GE(counters
                .counter("flowmark_kernel_events_skipped_total",
                         {{"source", "kev"}, {"reason", "cgroup"}})
                .load(),
            2u);  // our connection's two sides (and the accepted side of the child's)
}

TEST(KernelEvents, CgroupMustBeACgroupV2Directory) {
  bpf::TcpStateFilter f;
  f.cgroup = "/tmp";
  auto w = bpf::TcpStateWatcher::open(f, [](const bpf::TcpStateEvent&) {});
  ASSERT_FALSE(w);
  EXPECT_NE(w.error().message().find("cgroup v2"), std::string::npos) << w.error().message();
}

// Handshake marking, the library's side: the TCP state program fills a FlowLabelMarker's map
// (shared fds, not attached to an interface) from the kernel — the connecting side at
// tcp_connect(), the accepting side in the handshake map when the SYN arrives, moved to the
// flow map at ESTABLISHED with the same label — keeps to the shared capacity, and
// removes its entries at CLOSE, a refused connect's included.
TEST(KernelEvents, HandshakeMarkingFillsTheMarkersMapFromTheKernel) {
  auto marker = bpf::FlowLabelMarker::load({.capacity = 2});
  if (!marker && may_skip(marker.error())) GTEST_SKIP() << marker.error().message();
  ASSERT_TRUE(marker) << marker.error().message();
  Endpoint server_ep, refused_ep, client_ep;
  UniqueFd listener = listen_on("::1", server_ep);
  {
    UniqueFd gone = listen_on("::1", refused_ep);  // a port nobody listens on afterwards
  }
  bpf::TcpStateFilter f;
  f.ports = {{server_ep.port, server_ep.port}, {refused_ep.port, refused_ep.port}};
  bpf::TcpStateFilter::Premark p;
  p.map = marker->shared_map();
  for (std::uint32_t e = 0; e < 32; ++e) p.labels[e] = 0x12300 | e;
  f.premark = p;
  auto w = bpf::TcpStateWatcher::open(f, [](const bpf::TcpStateEvent&) {});
  if (!w && may_skip(w.error())) GTEST_SKIP() << w.error().message();
  ASSERT_TRUE(w) << w.error().message();
  ASSERT_TRUE(w->premarking());
  if (!w->premarking_syn())
    GTEST_SKIP() << "the sock_ops connect hook cannot be attached here (no cgroup v2?)";
  auto wait_fill = [&](std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (marker->fill() != n && std::chrono::steady_clock::now() < deadline) {
      ::usleep(1000);
    }
    return marker->fill();
  };
  auto refused_connect = [&] {
    auto fd = net::connect_tcp(refused_ep);
    ASSERT_FALSE(fd);
    EXPECT_EQ(fd.error().code(), std::errc::connection_refused) << fd.error().message();
  };

  UniqueFd client = connect_to(server_ep, client_ep);
  UniqueFd served(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_GE(served.get(), 0);
  EXPECT_EQ(wait_fill(2), 2u);  // both ends of the connection, without any user space
  const auto out = marker->lookup(
      {client_ep.address, server_ep.address, client_ep.port, server_ep.port, IPPROTO_TCP});
  const auto back = marker->lookup(
      {server_ep.address, client_ep.address, server_ep.port, client_ep.port, IPPROTO_TCP});
  ASSERT_TRUE(out && back);
  EXPECT_EQ(*out & ~0x1Fu, 0x12300u);  // one of the labels given, the kernel's bit hidden
  EXPECT_EQ(*back & ~0x1Fu, 0x12300u);
  {
    auto hc = w->counters();
    ASSERT_TRUE(hc);
    EXPECT_EQ(hc->handshake_marked, 1u);  // the accepting side's SYN-ACK, in the handshake map
    // ... and moved out of it at ESTABLISHED.
    std::uint8_t key[40];
    EXPECT_NE(bpf_map_get_next_key(marker->shared_map().handshakes_fd, nullptr, key), 0);
  }

  // At capacity: the kernel refuses a new flow, and so does user space.
  refused_connect();
  auto c = w->counters();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->premarked, 2u);
  EXPECT_EQ(c->premark_full, 1u);
  bpf::FlowTuple other{server_ep.address, server_ep.address, 1, 2, IPPROTO_TCP};
  auto set = marker->set(other, 5u);
  ASSERT_FALSE(set);
  EXPECT_EQ(set.error().code(), make_error_code(Errc::kTruncated));

  // Closed: both entries go when their sockets reach CLOSE (no user space erased them).
  client.reset();
  served.reset();
  EXPECT_EQ(wait_fill(0), 0u);
  // A refused connect: in the map before its SYN, removed at SYN_SENT → CLOSE.
  refused_connect();
  EXPECT_EQ(marker->fill(), 0u);
  c = w->counters();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->premarked, 3u);
  EXPECT_EQ(c->premark_removed, 3u);
  EXPECT_EQ(c->premark_full, 1u);
}

// What the source would not announce is not marked either: destinations of the skip list
// (internal_networks, the non-global ranges) and IPv4 connections stay out of the map.
TEST(KernelEvents, HandshakeMarkingLeavesSkippedDestinationsAlone) {
  auto marker = bpf::FlowLabelMarker::load({.capacity = 8});
  if (!marker && may_skip(marker.error())) GTEST_SKIP() << marker.error().message();
  ASSERT_TRUE(marker) << marker.error().message();
  Endpoint v6_ep, v4_ep, local;
  UniqueFd v6 = listen_on("::1", v6_ep);
  UniqueFd v4 = listen_on("127.0.0.1", v4_ep);
  bpf::TcpStateFilter f;
  f.ports = {{v6_ep.port, v6_ep.port}, {v4_ep.port, v4_ep.port}};
  bpf::TcpStateFilter::Premark p;
  p.map = marker->shared_map();
  p.labels.fill(0x12345);
  p.skip = {*Network::parse("::1/128")};
  f.premark = p;
  auto w = bpf::TcpStateWatcher::open(f, [](const bpf::TcpStateEvent&) {});
  if (!w && may_skip(w.error())) GTEST_SKIP() << w.error().message();
  ASSERT_TRUE(w) << w.error().message();
  if (!w->premarking_syn()) GTEST_SKIP() << "the sock_ops connect hook cannot be attached here";

  for (const auto* ep : {&v6_ep, &v4_ep}) {
    UniqueFd client = connect_to(*ep, local);
    UniqueFd served(::accept4((ep == &v6_ep ? v6 : v4).get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_GE(served.get(), 0);
  }
  // Both ends of both connections seen (the accepted ends at ESTABLISHED), none put.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  bpf::TcpStateCounters c;
  do {
    auto r = w->counters();
    ASSERT_TRUE(r);
    c = *r;
  } while (c.premark_skipped < 4 && std::chrono::steady_clock::now() < deadline &&
           ::usleep(1000) == 0);
  EXPECT_EQ(c.premark_skipped, 4u);
  EXPECT_EQ(c.premarked, 0u);
  EXPECT_EQ(marker->fill(), 0u);
}

}  // namespace
}  // namespace flowmark::daemon::kernel_events
