// mcast_bench — throughput and CPU cost of the multicast library on loopback.
//
// What it measures (the targets are printed by bench/run.sh, never asserted here):
//   SAY/<call>/<size>            the sender alone: nobody has joined the group, the kernel
//                                loops each datagram back and drops it
//   SAY_RECV/<call>/<size>       the full SAY→RECV path: a receiving thread on the other
//                                core drains a Receiver (recvmmsg) and checks the stream
//                                header of every datagram, counting received vs sent
//   SAY_RECV_PACED/.../500000    the same, paced at 500,000 datagrams/s
//   <call>: sendto   — Sender::send, one sendto per datagram
//           sendmmsg — Sender::send_batch, 64 datagrams per sendmmsg
//           sendmmsg_connected_raw — not the library: a connect()ed socket and sendmmsg
//                                without destination addresses (the route is cached)
//           sendmsg_gso — Sender::send_batch with SenderConfig::gso: UDP_SEGMENT, one
//                                sendmsg per 64 datagrams (fewer for 1400 bytes: 65,507
//                                bytes per call at most)
// Each iteration sends 64 datagrams. Counters: items_per_second (wall time), cpu_ns/msg
// (the sending thread's CPU time per datagram: its syscalls and, on loopback, the
// delivery softirq that runs in its context), and for SAY_RECV rx_cpu_ns/msg, recv_ratio,
// loss_pct (sent, never received) and rcvbuf_drops (the namespace's UDP RcvbufErrors).
// The sending thread is pinned to the first CPU the process may use, the receiving thread
// to the second; the label says where they ran.
// Micro-benchmarks: encode/decode_stream_header, StreamStats::add, StatsTable::add, and
// DatagramReader::read with 0, 1, 8 or 64 datagrams waiting (on 127.0.0.1).
//
// Sockets need a private network namespace whose loopback does multicast:
//   ip netns add X; ip -n X link set lo up; ip -n X link set lo multicast on
//   ip -n X route add 224.0.0.0/4 dev lo; ip netns exec X ./mcast_bench
// (bench/run.sh does this). Anywhere else it stops at once with a message saying so.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "flowmark/core/fd.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/mcast/receiver.hpp"
#include "flowmark/mcast/sender.hpp"
#include "flowmark/mcast/stream.hpp"
#include "flowmark/net/socket.hpp"

namespace {

using namespace flowmark;
using namespace flowmark::mcast;

constexpr const char* kProbeGroup = "239.9.9.9";
constexpr std::size_t kPerIteration = Sender::kBatch;  // datagrams per benchmark iteration
constexpr int kRcvbuf = 64 << 20;                      // as run.sh's RECV --rcvbuf 67108864

std::atomic<std::uint16_t> g_next_port{42000};
std::uint16_t fresh_port() { return g_next_port++; }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mcast_bench: %s\n", what.c_str());
  std::exit(2);
}

IpAddress group_address(int n) {
  auto g = IpAddress::parse("239.9.9." + std::to_string(n));
  if (!g) die(g.error().message());
  return *g;
}

std::int64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The namespace's UDP RcvbufErrors (datagrams dropped because a receive buffer was full).
std::int64_t udp_rcvbuf_errors() {
  std::ifstream f("/proc/net/snmp");
  std::string header, values;
  while (std::getline(f, header) && std::getline(f, values)) {
    if (header.rfind("Udp:", 0) != 0) continue;
    std::istringstream h(header), v(values);
    std::string name, value;
    while (h >> name && v >> value)
      if (name == "RcvbufErrors") return std::stoll(value);
  }
  return -1;
}

// ---- where we run ----------------------------------------------------------------------

std::optional<Interface> g_lo;

// Configurations spelled out (designated initialisers would leave -Wextra warnings).
ReceiverConfig receiver_config(const IpAddress& group, std::uint16_t port, int rcvbuf) {
  ReceiverConfig c;
  c.groups = {group};
  c.port = port;
  c.iface = g_lo;
  c.rcvbuf = rcvbuf;
  return c;
}
SenderConfig sender_config(const IpAddress& group, std::uint16_t port) {
  SenderConfig c;
  c.group = {group, port};
  c.send.iface = g_lo;
  return c;
}

// The longest-prefix IPv4 route (main table) for `group`: its interface name, or "".
std::string route_interface(const IpAddress& group) {
  std::ifstream f("/proc/net/route");
  std::string line, best;
  int best_len = -1;
  std::getline(f, line);  // header
  const std::uint32_t dst = group.in4().s_addr;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string iface, dest, gw, flags, refcnt, use, metric, mask;
    if (!(in >> iface >> dest >> gw >> flags >> refcnt >> use >> metric >> mask)) continue;
    // Both are the kernel's network-order u32 printed as a host integer, like dst.
    const auto d = static_cast<std::uint32_t>(std::stoul(dest, nullptr, 16));
    const auto m = static_cast<std::uint32_t>(std::stoul(mask, nullptr, 16));
    if ((dst & m) != d) continue;
    const int len = std::popcount(m);
    if (len > best_len) {
      best_len = len;
      best = iface;
    }
  }
  return best;
}

// Stops the program with a message unless this is a private network namespace whose
// loopback is up, does multicast, is where 239.9.9.0/24 is routed, and really loops a
// datagram back to a member.
void check_environment() {
  const char* how =
      "\n  run it with bench/run.sh BUILD_DIR, or in a namespace of your own:\n"
      "    ip netns add X; ip -n X link set lo up; ip -n X link set lo multicast on\n"
      "    ip -n X route add 224.0.0.0/4 dev lo; ip netns exec X mcast_bench";
  struct stat self{}, init{};
  const bool any_netns = std::getenv("FLOWMARK_BENCH_ANY_NETNS") != nullptr;
  if (!any_netns && stat("/proc/self/ns/net", &self) == 0 && stat("/proc/1/ns/net", &init) == 0 &&
      self.st_ino == init.st_ino && self.st_dev == init.st_dev)
    die(std::string("refusing to run in the host's network namespace (that of PID 1): the "
                    "benchmarks flood 239.9.9.0/24 and need multicast on lo "
                    "(FLOWMARK_BENCH_ANY_NETNS=1 skips this check)") +
        how);
  auto lo = resolve_interface("lo");
  if (!lo) die(lo.error().message() + how);
  if (!lo->up || !lo->multicast)
    die(std::string("the loopback interface is ") + (lo->up ? "" : "down and ") +
        (lo->multicast ? "" : "without multicast") + how);
  const IpAddress group = group_address(9);
  const std::string via = route_interface(group);
  if (via != "lo")
    die(std::string("no multicast route on lo: ") + kProbeGroup + " is routed " +
        (via.empty() ? "nowhere" : "via " + via) + how);
  g_lo = *lo;

  // A probe: one datagram must come back to a member on lo.
  const std::uint16_t port = fresh_port();
  auto rx = Receiver::open(receiver_config(group, port, 0));
  if (!rx) die("cannot open the probe receiver: " + rx.error().message() + how);
  auto tx = Sender::open(sender_config(group, port));
  if (!tx) die("cannot open the probe sender: " + tx.error().message() + how);
  const char text[] = "mcast_bench probe";
  if (auto r = tx->send(std::as_bytes(std::span(text))); !r)
    die("cannot send the probe: " + r.error().message() + how);
  const std::int64_t deadline = monotonic_ns() + 1'000'000'000;
  while (monotonic_ns() < deadline) {
    pollfd p{rx->fd(), POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    auto batch = rx->receive();
    if (batch && !batch->empty()) return;
  }
  die(std::string("a probe datagram to ") + kProbeGroup + " did not come back on lo" + how);
}

// ---- CPU placement ---------------------------------------------------------------------

// The CPUs the process may use, as it started (threads inherit their creator's pinning,
// so this is what a thread may be pinned to).
cpu_set_t g_allowed;

// Pins the calling thread to `cpu` for its scope (if the process may use that CPU), then
// restores its previous affinity.
class PinThread {
 public:
  explicit PinThread(int cpu) {
    if (sched_getaffinity(0, sizeof old_, &old_) != 0) return;
    if (!CPU_ISSET(cpu, &g_allowed)) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned_ = sched_setaffinity(0, sizeof one, &one) == 0;
  }
  ~PinThread() {
    if (pinned_) sched_setaffinity(0, sizeof old_, &old_);
  }
  PinThread(const PinThread&) = delete;
  PinThread& operator=(const PinThread&) = delete;

 private:
  cpu_set_t old_{};
  bool pinned_ = false;
};

int online_cpus() { return CPU_COUNT(&g_allowed); }
// The n-th CPU the process may use (the first if there are fewer).
int allowed_cpu(int n) {
  int first = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &g_allowed)) continue;
    if (first < 0) first = c;
    if (n-- == 0) return c;
  }
  return first < 0 ? 0 : first;
}
// The sender on the first CPU, the receiver on the second (when there are two).
int sender_cpu() { return allowed_cpu(0); }
int receiver_cpu() { return allowed_cpu(1); }

// ---- the receiving side ----------------------------------------------------------------

// A thread that drains a Receiver joined to the group, checking every datagram's stream
// header as RECV --stats does.
class DrainThread {
 public:
  DrainThread(const IpAddress& group, std::uint16_t port) {
    auto rx = Receiver::open(receiver_config(group, port, kRcvbuf));
    if (!rx) die("cannot open the receiver: " + rx.error().message());
    rx_.emplace(std::move(*rx));
    thread_ = std::thread([this] { run(); });
    while (!started_.load()) std::this_thread::yield();
  }
  ~DrainThread() { stop(); }
  DrainThread(const DrainThread&) = delete;
  DrainThread& operator=(const DrainThread&) = delete;

  // Waits until `sent` datagrams arrived or none arrived for 100 ms, then stops.
  void finish(std::uint64_t sent) {
    std::uint64_t last = received_.load();
    std::int64_t idle_since = monotonic_ns();
    while (received_.load() < sent) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      const std::uint64_t now = received_.load();
      if (now != last) {
        last = now;
        idle_since = monotonic_ns();
      } else if (monotonic_ns() - idle_since > 100'000'000) {
        break;
      }
    }
    stop();
  }
  void stop() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    thread_.join();
  }
  std::uint64_t received() const { return received_.load(); }
  std::uint64_t unique() const { return stats_.unique(); }
  std::int64_t cpu_ns() const { return cpu_ns_; }
  int cpu() const { return cpu_; }

 private:
  void run() {
    std::optional<PinThread> pin;
    if (online_cpus() > 1) pin.emplace(receiver_cpu());
    const std::int64_t cpu0 = thread_cpu_ns();
    cpu_ = sched_getcpu();
    started_.store(true);
    while (!stop_.load(std::memory_order_relaxed)) {
      pollfd p{rx_->fd(), POLLIN, 0};
      if (::poll(&p, 1, 5) <= 0) continue;
      for (;;) {
        auto batch = rx_->receive();
        if (!batch) die("receive: " + batch.error().message());
        if (batch->empty()) break;
        for (const Datagram& d : *batch) {
          if (auto h = decode_stream_header(d.payload)) stats_.add(h->sequence, 0);
        }
        received_.fetch_add(batch->size(), std::memory_order_relaxed);
      }
    }
    cpu_ns_ = thread_cpu_ns() - cpu0;
  }

  std::optional<Receiver> rx_;
  StreamStats stats_;
  std::thread thread_;
  std::atomic<bool> started_{false}, stop_{false};
  std::atomic<std::uint64_t> received_{0};
  std::int64_t cpu_ns_ = 0;
  int cpu_ = -1;
};

// ---- the sending side ------------------------------------------------------------------

enum class Call { kSendto, kSendmmsg, kSendmmsgConnectedRaw, kGso };

const char* call_name(Call c) {
  switch (c) {
    case Call::kSendto: return "sendto";
    case Call::kSendmmsg: return "sendmmsg";
    case Call::kSendmmsgConnectedRaw: return "sendmmsg_connected_raw";
    case Call::kGso: return "sendmsg_gso";
  }
  return "?";
}

// 64 datagram slots with a stream header each, as SAY --count builds them.
class Payloads {
 public:
  explicit Payloads(std::size_t size)
      : size_(std::max(size, kStreamHeaderSize)), data_(size_ * kPerIteration, std::byte{'.'}) {
    for (std::size_t i = 0; i < kPerIteration; ++i) spans_[i] = {data_.data() + i * size_, size_};
  }
  // Stamps sequence numbers seq .. seq+63 and one send time.
  void stamp(std::uint64_t seq, std::uint64_t sent_ns) {
    for (std::size_t i = 0; i < kPerIteration; ++i)
      encode_stream_header({data_.data() + i * size_, kStreamHeaderSize},
                           {.stream = 0x62656e63, .sequence = seq + i, .sent_ns = sent_ns});
  }
  std::span<const std::span<const std::byte>> all() const { return spans_; }
  std::span<const std::byte> operator[](std::size_t i) const { return spans_[i]; }

 private:
  std::size_t size_;
  std::vector<std::byte> data_;
  std::array<std::span<const std::byte>, kPerIteration> spans_;
};

// The raw comparison: sendmmsg on a connected socket, no destination per message, so the
// kernel reuses the socket's cached route instead of looking one up per datagram.
class ConnectedRaw {
 public:
  ConnectedRaw(int fd, const Endpoint& group, const Payloads& p) : fd_(fd) {
    sockaddr_storage ss{};
    const socklen_t len = group.to_sockaddr(ss);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0)
      die(std::string("connect: ") + std::strerror(errno));
    for (std::size_t i = 0; i < kPerIteration; ++i) {
      iov_[i] = {const_cast<std::byte*>(p[i].data()), p[i].size()};
      msgs_[i] = {};
      msgs_[i].msg_hdr.msg_iov = &iov_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
  }
  void send() {
    unsigned sent = 0;
    while (sent < kPerIteration) {
      const int r = ::sendmmsg(fd_, msgs_.data() + sent, kPerIteration - sent, 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        die(std::string("sendmmsg: ") + std::strerror(errno));
      }
      sent += static_cast<unsigned>(r);
    }
  }

 private:
  int fd_;
  std::array<iovec, kPerIteration> iov_{};
  std::array<mmsghdr, kPerIteration> msgs_{};
};

struct SayArgs {
  Call call;
  std::size_t size;
  bool receiver;
  std::uint64_t rate;  // datagrams per second; 0: as fast as possible
  int group;           // last octet of 239.9.9.x
};

void BM_Say(benchmark::State& state, SayArgs a) {
  const IpAddress group = group_address(a.group);
  const std::uint16_t port = fresh_port();
  std::optional<PinThread> pin;
  if (online_cpus() > 1) pin.emplace(sender_cpu());
  std::optional<DrainThread> drain;
  if (a.receiver) drain.emplace(group, port);
  SenderConfig config = sender_config(group, port);
  config.gso = a.call == Call::kGso;
  auto tx = Sender::open(config);
  if (!tx) die("cannot open the sender: " + tx.error().message());
  Payloads payloads(a.size);
  std::optional<ConnectedRaw> raw;
  if (a.call == Call::kSendmmsgConnectedRaw) raw.emplace(tx->fd(), tx->group(), payloads);

  const std::int64_t drops0 = udp_rcvbuf_errors();
  const std::int64_t period_ns =
      a.rate ? static_cast<std::int64_t>(1e9 * kPerIteration / static_cast<double>(a.rate)) : 0;
  std::uint64_t seq = 0;
  std::int64_t cpu0 = 0, start = 0;
  bool first = true;
  for (auto _ : state) {
    if (first) {
      first = false;
      cpu0 = thread_cpu_ns();
      start = monotonic_ns();
    }
    if (period_ns) {
      const std::int64_t due = start + static_cast<std::int64_t>(seq / kPerIteration) * period_ns;
      if (monotonic_ns() < due) {
        timespec ts{static_cast<time_t>(due / 1'000'000'000),
                    static_cast<long>(due % 1'000'000'000)};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
        }
      }
    }
    payloads.stamp(seq, static_cast<std::uint64_t>(seq));
    switch (a.call) {
      case Call::kSendto:
        for (std::size_t i = 0; i < kPerIteration; ++i) {
          if (auto r = tx->send(payloads[i]); !r) {
            state.SkipWithError(r.error().message().c_str());
            break;
          }
        }
        break;
      case Call::kSendmmsg:
      case Call::kGso:
        if (auto r = tx->send_batch(payloads.all()); !r)
          state.SkipWithError(r.error().message().c_str());
        break;
      case Call::kSendmmsgConnectedRaw: raw->send(); break;
    }
    seq += kPerIteration;
  }
  const std::int64_t cpu = thread_cpu_ns() - cpu0;
  const auto sent = static_cast<std::int64_t>(seq);
  state.SetItemsProcessed(sent);
  state.SetBytesProcessed(sent * static_cast<std::int64_t>(a.size));
  state.counters["cpu_ns/msg"] = static_cast<double>(cpu) / static_cast<double>(sent);
  if (drain) {
    drain->finish(seq);
    const auto got = static_cast<double>(drain->received());
    state.counters["recv_ratio"] = got / static_cast<double>(sent);
    // Lost: sent and never received (tail losses included, duplicates not counted).
    state.counters["loss_pct"] = 100.0 * static_cast<double>(seq - std::min(seq, drain->unique())) /
                                 static_cast<double>(sent);
    state.counters["rx_cpu_ns/msg"] = got > 0 ? static_cast<double>(drain->cpu_ns()) / got : 0.0;
    state.counters["rcvbuf_drops"] = static_cast<double>(udp_rcvbuf_errors() - drops0);
  }
  std::string label = "tx cpu" + std::to_string(sched_getcpu());
  if (drain) label += ", rx cpu" + std::to_string(drain->cpu());
  state.SetLabel(label);
}

// ---- micro-benchmarks ------------------------------------------------------------------

void BM_EncodeStreamHeader(benchmark::State& state) {
  std::array<std::byte, kStreamHeaderSize> out{};
  std::uint64_t seq = 0;
  for (auto _ : state) {
    encode_stream_header(out, {.stream = 0x12345678, .sequence = seq++, .sent_ns = seq * 1000});
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_DecodeStreamHeader(benchmark::State& state) {
  std::array<std::byte, 64> buf{};
  encode_stream_header(buf, {.stream = 0x12345678, .sequence = 42, .sent_ns = 1'700'000'000});
  if (state.range(0) == 0) buf[0] = std::byte{'x'};  // a plain datagram: no header
  std::span<const std::byte> p(buf);
  for (auto _ : state) {
    benchmark::DoNotOptimize(p);
    auto h = decode_stream_header(p);
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(state.range(0) ? "header" : "plain");
}

// range(0): 0 in order, 1 pairs swapped (every other datagram reordered), 2 one in 100 lost.
void BM_StreamStatsAdd(benchmark::State& state) {
  StreamStats s;
  std::uint64_t i = 0;
  const auto pattern = state.range(0);
  for (auto _ : state) {
    std::uint64_t seq = i++;
    if (pattern == 1) seq ^= 1;
    if (pattern == 2) seq += seq / 99;
    s.add(seq, 1000);
  }
  benchmark::DoNotOptimize(s.lost());
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(pattern == 0 ? "in order" : pattern == 1 ? "pairs swapped" : "1% lost");
}

// What RECV --stats does per datagram: the map lookup by (sender, group, stream) too.
void BM_StatsTableAdd(benchmark::State& state) {
  StatsTable t;
  const StatsTable::Key key{{*IpAddress::parse("10.0.0.1"), 40000}, group_address(9), 7};
  std::uint64_t seq = 0;
  for (auto _ : state) t.add(key, seq++, 1000);
  benchmark::DoNotOptimize(t.streams().size());
  state.SetItemsProcessed(state.iterations());
}

// DatagramReader::read on a unicast UDP socket on lo (64 headers, 64 KiB buffers, as a
// Receiver reads): range(0) datagrams are put in its queue first (sendmmsg to itself,
// timed too), then one read takes them. With 0 it is the read that finds nothing — what
// every drain ends with.
void BM_ReaderRead(benchmark::State& state) {
  const auto waiting = static_cast<std::size_t>(state.range(0));
  auto bound = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0});
  if (!bound) die(bound.error().message());
  UniqueFd fd = std::move(*bound);
  auto here = net::local_endpoint(fd.get());
  if (!here) die(here.error().message());
  sockaddr_storage self{};
  const socklen_t len = here->to_sockaddr(self);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&self), len) != 0)
    die(std::string("a UDP socket on 127.0.0.1: ") + std::strerror(errno));
  if (auto r = net::enable_packet_info(fd.get(), Family::kV4); !r) die(r.error().message());
  DatagramReader reader(65536, 64);
  Payloads payloads(64);
  payloads.stamp(0, 0);
  std::array<iovec, kPerIteration> iov{};
  std::array<mmsghdr, kPerIteration> msgs{};
  for (std::size_t i = 0; i < kPerIteration; ++i) {
    iov[i] = {const_cast<std::byte*>(payloads[i].data()), payloads[i].size()};
    msgs[i].msg_hdr.msg_iov = &iov[i];
    msgs[i].msg_hdr.msg_iovlen = 1;
  }
  std::uint64_t got = 0;
  for (auto _ : state) {
    if (waiting > 0 && ::sendmmsg(fd.get(), msgs.data(), static_cast<unsigned>(waiting), 0) !=
                           static_cast<int>(waiting))
      die(std::string("sendmmsg to 127.0.0.1: ") + std::strerror(errno));
    auto batch = reader.read(fd.get());
    if (!batch) die(batch.error().message());
    got += batch->size();
  }
  if (got != waiting * state.iterations()) die("DatagramReader::read missed datagrams");
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.SetLabel(waiting ? "incl. sendmmsg of the datagrams" : "nothing waiting");
}

}  // namespace

int main(int argc, char** argv) {
  if (sched_getaffinity(0, sizeof g_allowed, &g_allowed) != 0) {
    CPU_ZERO(&g_allowed);
    CPU_SET(0, &g_allowed);
  }
  // Listing needs no network; anything that runs does. (Before Initialize, which takes
  // the --benchmark_* flags out of argv.)
  bool listing = false;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--benchmark_list_tests") == 0 ||
        std::strcmp(argv[i], "--benchmark_list_tests=true") == 0)
      listing = true;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  benchmark::RegisterBenchmark("stream/encode_header", BM_EncodeStreamHeader);
  benchmark::RegisterBenchmark("stream/decode_header", BM_DecodeStreamHeader)->Arg(1)->Arg(0);
  benchmark::RegisterBenchmark("stream/StreamStats::add", BM_StreamStatsAdd)
      ->Arg(0)
      ->Arg(1)
      ->Arg(2);
  benchmark::RegisterBenchmark("stream/StatsTable::add", BM_StatsTableAdd);
  benchmark::RegisterBenchmark("recv/DatagramReader::read", BM_ReaderRead)
      ->Arg(0)
      ->Arg(1)
      ->Arg(8)
      ->Arg(64);

  int group = 10;
  auto add = [&](const char* kind, SayArgs a) {
    a.group = group++;
    std::string name = std::string(kind) + "/" + call_name(a.call) + "/" + std::to_string(a.size);
    if (a.rate) name += "/" + std::to_string(a.rate) + "_per_s";
    benchmark::RegisterBenchmark(name.c_str(), BM_Say, a)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  };
  for (std::size_t size : {64, 1400}) {
    for (Call c : {Call::kSendto, Call::kSendmmsg, Call::kSendmmsgConnectedRaw, Call::kGso})
      add("SAY", {c, size, false, 0, 0});
    for (Call c : {Call::kSendto, Call::kSendmmsg, Call::kSendmmsgConnectedRaw, Call::kGso})
      add("SAY_RECV", {c, size, true, 0, 0});
    add("SAY_RECV_PACED", {Call::kSendmmsg, size, true, 500'000, 0});
  }

  if (!listing) check_environment();

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
