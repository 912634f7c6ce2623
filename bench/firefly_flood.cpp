// firefly_flood — sends fireflies of many distinct flows as fast as it can (or paced), for
// the collector's flood test and its ingest benchmarks. Not a user tool: `flowmark firefly
// send --repeat` repeats one flow; this varies the flow.
//
//   firefly_flood --to 127.0.0.1:10514 --count 2000000 [--first 0] [--states start|start,end|
//                 start,ongoing,end] [--rate 500000] [--bytes 1000000] [--experiment 2
//                 --activity 1] [--no-header] [--base-time MICROS] [--preencode]
//
// --preencode: every datagram is encoded before the first is sent (memory: ~450 bytes a
// datagram), so the send rate is that of sendmmsg alone — an offered load the receiver,
// not the encoder, has to keep up with.
//
// Flow i (first ≤ i < first+count): tcp 10.0.0.0+i port 40000 → 192.0.2.1 port 443 (IPv4), or
// 2001:db8::/64 + i → 2001:db8:ffff::1 with --ipv6; start time base + i µs. The states are
// sent flow by flow (start, then ongoing, then end of the same flow); ongoing carries usage
// sent = bytes/2, end sent = bytes (received = bytes/100). Prints one JSON line: datagrams
// sent, refused, seconds.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/scitags/firefly.hpp"

using namespace flowmark;

namespace {

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr, "firefly_flood: %s\n", why);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string to_text, states = "start";
  std::uint64_t count = 0, first = 0, bytes = 1'000'000;
  double rate = 0;
  std::uint32_t experiment = 2, activity = 1;
  bool header = true, v6 = false, preencode = false;
  Micros base = now_micros() - 3'600'000'000;  // an hour ago: every flow starts in the past
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--to")
      to_text = next();
    else if (a == "--count")
      count = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--first")
      first = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--states")
      states = next();
    else if (a == "--rate")
      rate = std::strtod(next().c_str(), nullptr);
    else if (a == "--bytes")
      bytes = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--experiment")
      experiment = static_cast<std::uint32_t>(std::stoul(next()));
    else if (a == "--activity")
      activity = static_cast<std::uint32_t>(std::stoul(next()));
    else if (a == "--base-time")
      base = std::strtoll(next().c_str(), nullptr, 10);
    else if (a == "--no-header")
      header = false;
    else if (a == "--ipv6")
      v6 = true;
    else if (a == "--preencode")
      preencode = true;
    else
      usage(("unknown argument " + a).c_str());
  }
  auto to = Endpoint::parse(to_text);
  if (!to) usage("--to HOST:PORT is required (an IP address and a port)");
  std::vector<scitags::FlowState> seq;
  if (states == "start")
    seq = {scitags::FlowState::kStart};
  else if (states == "start,end")
    seq = {scitags::FlowState::kStart, scitags::FlowState::kEnd};
  else if (states == "start,ongoing,end")
    seq = {scitags::FlowState::kStart, scitags::FlowState::kOngoing, scitags::FlowState::kEnd};
  else
    usage("--states: start, start,end or start,ongoing,end");

  const int fd = ::socket(to->address.is_v4() ? AF_INET : AF_INET6, SOCK_DGRAM, 0);
  if (fd < 0) usage("cannot open a UDP socket");
  int sndbuf = 8 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  sockaddr_storage ss{};
  const socklen_t len = to->to_sockaddr(ss);

  scitags::EncoderOptions eo;
  eo.hostname = "flood";
  eo.syslog_header = header;
  scitags::FireflyEncoder enc(eo);
  constexpr std::size_t kBatch = 64;
  std::vector<std::string> wire(kBatch);
  std::vector<iovec> iov(kBatch);
  std::vector<mmsghdr> msgs(kBatch);
  const std::int64_t t0 = monotonic_ns();
  const double interval_ns = rate > 0 ? 1e9 / rate : 0;
  std::uint64_t sent = 0, refused = 0, queued = 0;
  const std::uint64_t total = count * seq.size();
  auto flush = [&] {
    std::size_t off = 0;
    while (off < queued) {
      const int r = ::sendmmsg(fd, msgs.data() + off, static_cast<unsigned>(queued - off), 0);
      if (r < 0) {
        if (errno == EINTR) continue;
        ++refused;  // e.g. ECONNREFUSED on loopback: skip one
        ++off;
        continue;
      }
      off += static_cast<std::size_t>(r);
      sent += static_cast<std::uint64_t>(r);
    }
    queued = 0;
  };
  auto make = [&](std::uint64_t n) {
    const std::uint64_t i = first + n / seq.size();
    scitags::FlowEvent e;
    e.state = seq[n % seq.size()];
    e.protocol = scitags::Protocol::kTcp;
    if (v6) {
      in6_addr s{}, d{};
      s.s6_addr[0] = 0x20;
      s.s6_addr[1] = 0x01;
      s.s6_addr[2] = 0x0d;
      s.s6_addr[3] = 0xb8;
      for (int b = 0; b < 8; ++b) s.s6_addr[15 - b] = static_cast<std::uint8_t>(i >> (8 * b));
      d = s;
      std::memset(d.s6_addr + 4, 0, 12);
      d.s6_addr[4] = 0xff;
      d.s6_addr[5] = 0xff;
      d.s6_addr[15] = 1;
      e.src = {IpAddress::v6(s), 40000};
      e.dst = {IpAddress::v6(d), 443};
    } else {
      e.src = {IpAddress::v4(0x0A000000u + static_cast<std::uint32_t>(i)), 40000};
      e.dst = {IpAddress::v4(0xC0000201u), 443};
    }
    e.experiment = experiment;
    e.activity = activity;
    e.start_time = base + static_cast<Micros>(i);
    e.current_time = e.start_time + 1'000'000;
    if (e.state == scitags::FlowState::kOngoing) e.usage = scitags::Usage{bytes / 200, bytes / 2};
    if (e.state == scitags::FlowState::kEnd) {
      e.end_time = e.start_time + 2'000'000;
      e.current_time = e.end_time;
      e.usage = scitags::Usage{bytes / 100, bytes};
    }
    auto w = enc.encode(e, e.current_time);
    if (!w) usage(w.error().message().c_str());
    return *w;
  };
  // Pre-encoded: one buffer, offsets of each datagram.
  std::string all;
  std::vector<std::size_t> offsets;
  if (preencode) {
    offsets.reserve(total + 1);
    for (std::uint64_t n = 0; n < total; ++n) {
      offsets.push_back(all.size());
      all += make(n);
    }
    offsets.push_back(all.size());
  }
  const std::int64_t t_send = monotonic_ns();
  for (std::uint64_t n = 0; n < total; ++n) {
    if (preencode) {
      iov[queued] = {all.data() + offsets[n], offsets[n + 1] - offsets[n]};
    } else {
      wire[queued].assign(make(n));
      iov[queued] = {wire[queued].data(), wire[queued].size()};
    }
    msgs[queued] = {};
    msgs[queued].msg_hdr.msg_name = &ss;
    msgs[queued].msg_hdr.msg_namelen = len;
    msgs[queued].msg_hdr.msg_iov = &iov[queued];
    msgs[queued].msg_hdr.msg_iovlen = 1;
    ++queued;
    if (queued == kBatch) {
      if (interval_ns > 0) {
        const auto due =
            t_send + static_cast<std::int64_t>(static_cast<double>(n + 1 - kBatch) * interval_ns);
        if (monotonic_ns() < due) sleep_until_monotonic(due);
      }
      flush();
    }
  }
  flush();
  (void)t0;
  const double secs = static_cast<double>(monotonic_ns() - t_send) / 1e9;
  std::printf("{\"sent\":%llu,\"refused\":%llu,\"seconds\":%.3f,\"rate\":%.0f}\n",
              static_cast<unsigned long long>(sent), static_cast<unsigned long long>(refused), secs,
              secs > 0 ? static_cast<double>(sent) / secs : 0.0);
  return 0;
}
