// observe_gen — writes a synthetic capture for whole-process flow-meter benchmarks
// (bench/observe_bench.sh): N Ethernet frames of K concurrent bidirectional flows.
//
//   observe_gen [--packets N] [--flows K] [--duration S] [--seed X] [--plain] OUT.pcap
//
// - Flows: 80 % IPv4, 20 % IPv6; 70 % TCP, 30 % UDP; distinct endpoints per flow (the
//   flow index is in the source address), server ports from a small set.
// - The first K frames open the K flows (one frame each, in a random order: a TCP flow
//   opens with a SYN); the rest pick a flow uniformly at random, either direction (TCP:
//   ACK or PSH|ACK). No FIN or RST: every flow stays open to the end, so all K are
//   concurrent (N defaults to 5,000,000; with K = 1,000,000 each flow has ~5 frames).
// - What the observer's chains (--chains) look at, unless --plain (the capture as it was
//   before the chains: options-less SYNs, no SYN-ACK, TOS and flow label 0): the SYN
//   carries MSS, window-scale and SACK-permitted options (32-byte TCP header); a TCP
//   flow's first server frame is a SYN-ACK with the same options; 3 in 4 IPv6 flows carry
//   a nonzero flow label (one per direction, random: most have Scitags semantic bits);
//   half the flows are ECT(0), one in ten has DSCP AF11. UDP checksums are zero.
// - Sizes (frame bytes, no FCS): 40 % minimum (64 for IPv4, 78 for IPv6: headers and a
//   few bytes of payload), 20 % 590 (a 576-byte IP packet), 40 % 1514 (1500-byte IP).
//   Every frame is captured whole (caplen = len).
// - Time: microsecond pcap, from 2023-11-14 22:13:20 UTC, increasing evenly over
//   --duration seconds (10): less than the usual idle timeouts (30 s or more), so no
//   flow ends before the file does.
// - IPv4 header checksums are valid; transport checksums are left zero.
// Deterministic for a given seed.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct SplitMix {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  std::uint64_t below(std::uint64_t n) { return next() % n; }
};

struct FlowDef {
  std::uint32_t index;
  bool v6;
  std::uint8_t proto;  // 6 or 17
  std::uint16_t cport, sport;
  std::uint8_t tos;        // the same both ways
  std::uint32_t label[2];  // IPv6 flow label: client, server
  bool replied;            // TCP: the server's SYN-ACK has been written
};

void put16(std::uint8_t* p, unsigned v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
// pcap fields in host byte order (the magic number tells readers which order that is).
void put32le(std::uint8_t* p, std::uint32_t v) { std::memcpy(p, &v, 4); }

// Client and server addresses of flow i.
void addrs4(std::uint32_t i, std::uint8_t* c, std::uint8_t* s) {
  c[0] = 10;
  c[1] = static_cast<std::uint8_t>(i >> 16);
  c[2] = static_cast<std::uint8_t>(i >> 8);
  c[3] = static_cast<std::uint8_t>(i);
  s[0] = 172;
  s[1] = 16;
  s[2] = static_cast<std::uint8_t>(i % 251);
  s[3] = static_cast<std::uint8_t>(1 + i % 7);
}
void addrs6(std::uint32_t i, std::uint8_t* c, std::uint8_t* s) {
  static constexpr std::uint8_t kPrefixC[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0};
  static constexpr std::uint8_t kPrefixS[8] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0};
  std::memcpy(c, kPrefixC, 8);
  std::memset(c + 8, 0, 4);
  c[12] = static_cast<std::uint8_t>(i >> 24);
  c[13] = static_cast<std::uint8_t>(i >> 16);
  c[14] = static_cast<std::uint8_t>(i >> 8);
  c[15] = static_cast<std::uint8_t>(i);
  std::memcpy(s, kPrefixS, 8);
  std::memset(s + 8, 0, 7);
  s[15] = static_cast<std::uint8_t>(1 + i % 200);
}

std::uint16_t ip4_checksum(const std::uint8_t* h) {
  std::uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += static_cast<std::uint32_t>(h[i] << 8 | h[i + 1]);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// MSS 1460, NOP, window scale 7, SACK permitted, NOP, NOP: 12 bytes of SYN options.
constexpr std::uint8_t kSynOptions[12] = {2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1};

// Writes one frame at `out` (which has room for 1514 bytes); returns its length. opening: a
// SYN (client) or SYN-ACK (server); syn_options: with kSynOptions.
std::size_t build(std::uint8_t* out, const FlowDef& f, bool from_client, bool opening,
                  bool syn_options, int size_class, std::uint32_t seq) {
  std::uint8_t* p = out;
  static constexpr std::uint8_t kMacC[6] = {0x02, 0, 0, 0, 0, 0x0c};
  static constexpr std::uint8_t kMacS[6] = {0x02, 0, 0, 0, 0, 0x05};
  std::memcpy(p, from_client ? kMacS : kMacC, 6);
  std::memcpy(p + 6, from_client ? kMacC : kMacS, 6);
  put16(p + 12, f.v6 ? 0x86dd : 0x0800);
  p += 14;
  const bool tcp_options = f.proto == 6 && opening && syn_options;
  const std::size_t l4_hdr = f.proto == 6 ? (tcp_options ? 32 : 20) : 8;
  const std::size_t ip_hdr = f.v6 ? 40 : 20;
  std::size_t ip_len;
  switch (size_class) {
    case 0: ip_len = ip_hdr + l4_hdr + (f.v6 ? 4 : 10); break;  // frame 64 (IPv4) / 78 (IPv6)
    case 1: ip_len = 576; break;
    default: ip_len = 1500; break;
  }
  if (f.proto == 6 && opening)
    ip_len = ip_hdr + l4_hdr;  // a SYN carries no payload
  else if (size_class == 0 && tcp_options)
    ip_len += 12;
  std::uint8_t c[16], s[16];
  std::uint8_t* l4;
  if (f.v6) {
    addrs6(f.index, c, s);
    const std::uint32_t label = f.label[from_client ? 0 : 1];
    p[0] = static_cast<std::uint8_t>(0x60 | f.tos >> 4);
    p[1] = static_cast<std::uint8_t>((f.tos & 0x0f) << 4 | (label >> 16 & 0x0f));
    put16(p + 2, label & 0xffff);
    put16(p + 4, static_cast<unsigned>(ip_len - 40));
    p[6] = f.proto;
    p[7] = 64;
    std::memcpy(p + 8, from_client ? c : s, 16);
    std::memcpy(p + 24, from_client ? s : c, 16);
    l4 = p + 40;
  } else {
    addrs4(f.index, c, s);
    p[0] = 0x45;
    p[1] = f.tos;
    put16(p + 2, static_cast<unsigned>(ip_len));
    put16(p + 4, seq & 0xffff);
    put16(p + 6, 0x4000);  // DF
    p[8] = 64;
    p[9] = f.proto;
    p[10] = p[11] = 0;
    std::memcpy(p + 12, from_client ? c : s, 4);
    std::memcpy(p + 16, from_client ? s : c, 4);
    put16(p + 10, ip4_checksum(p));
    l4 = p + 20;
  }
  put16(l4, from_client ? f.cport : f.sport);
  put16(l4 + 2, from_client ? f.sport : f.cport);
  const std::size_t payload = ip_len - ip_hdr - l4_hdr;
  if (f.proto == 6) {
    put16(l4 + 4, seq >> 16);
    put16(l4 + 6, seq & 0xffff);
    std::memset(l4 + 8, 0, 4);
    l4[12] = static_cast<std::uint8_t>((l4_hdr / 4) << 4);
    l4[13] = opening ? (from_client ? 0x02 : 0x12) : (payload > 0 ? 0x18 : 0x10);
    put16(l4 + 14, 65535);
    l4[16] = l4[17] = l4[18] = l4[19] = 0;
    if (tcp_options) std::memcpy(l4 + 20, kSynOptions, sizeof kSynOptions);
  } else {
    put16(l4 + 4, static_cast<unsigned>(8 + payload));
    l4[6] = l4[7] = 0;
  }
  std::memset(l4 + l4_hdr, 0x5a, payload);
  return 14 + ip_len;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "observe_gen: %s\nusage: observe_gen [--packets N] [--flows K] [--duration S] "
               "[--seed X] [--plain] OUT.pcap\n",
               msg);
  std::exit(2);
}

std::uint64_t number(const char* s, const char* what) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') usage((std::string("bad ") + what).c_str());
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t packets = 5'000'000, flows = 10'000, duration = 10, seed = 1;
  const char* out_path = nullptr;
  bool plain = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto val = [&](const char* what) {
      if (i + 1 >= argc) usage((std::string(what) + " needs a value").c_str());
      return number(argv[++i], what);
    };
    if (a == "--packets")
      packets = val("--packets");
    else if (a == "--flows")
      flows = val("--flows");
    else if (a == "--duration")
      duration = val("--duration");
    else if (a == "--seed")
      seed = val("--seed");
    else if (a == "--plain")
      plain = true;
    else if (!a.empty() && a[0] == '-')
      usage("unknown option");
    else
      out_path = argv[i];
  }
  if (out_path == nullptr) usage("no output file");
  if (flows == 0 || flows > 16'000'000) usage("--flows: 1..16000000");
  if (packets < flows) usage("--packets must be at least --flows (every flow opens)");
  if (duration == 0) usage("--duration must be positive");

  SplitMix rng{seed * 0x2545F4914F6CDD1Dull + 1};
  static constexpr std::uint16_t kServerPorts[] = {80, 443, 53, 8080, 123, 22, 3478, 5201};
  SplitMix extra{seed * 0x9E3779B97F4A7C15ull + 7};
  std::vector<FlowDef> defs(flows);
  for (std::uint32_t i = 0; i < flows; ++i) {
    FlowDef& f = defs[i];
    f.index = i;
    f.v6 = rng.below(100) < 20;
    f.proto = rng.below(100) < 70 ? 6 : 17;
    f.cport = static_cast<std::uint16_t>(1024 + rng.below(64000));
    f.sport = kServerPorts[rng.below(std::size(kServerPorts))];
    f.tos = 0;
    f.label[0] = f.label[1] = 0;
    f.replied = false;
    if (plain) continue;
    // From a generator of their own, so that --plain and not make the same flows and frames.
    const std::uint64_t r = extra.next();
    f.tos = static_cast<std::uint8_t>(((r & 1) ? 2 : 0) | ((r >> 1) % 10 == 0 ? 10 << 2 : 0));
    if (f.v6 && (r >> 8) % 4 != 0) {
      f.label[0] = static_cast<std::uint32_t>(r >> 20) & 0xfffff;
      f.label[1] = static_cast<std::uint32_t>(r >> 40) & 0xfffff;
    }
  }
  std::vector<std::uint32_t> order(flows);
  std::iota(order.begin(), order.end(), 0u);
  for (std::size_t i = flows - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);

  std::FILE* out = std::fopen(out_path, "wb");
  if (out == nullptr) {
    std::fprintf(stderr, "observe_gen: %s: %s\n", out_path, std::strerror(errno));
    return 1;
  }
  std::vector<std::uint8_t> buf;
  buf.reserve(8 << 20);
  // pcap global header: magic, 2.4, thiszone 0, sigfigs 0, snaplen 65535, Ethernet.
  std::uint8_t gh[24];
  put32le(gh, 0xa1b2c3d4);
  gh[4] = 2;
  gh[5] = 0;
  gh[6] = 4;
  gh[7] = 0;
  put32le(gh + 8, 0);
  put32le(gh + 12, 0);
  put32le(gh + 16, 65535);
  put32le(gh + 20, 1);
  buf.insert(buf.end(), gh, gh + 24);

  const std::uint64_t t0_us = 1'700'000'000'000'000ull;
  const double step_us = static_cast<double>(duration) * 1e6 / static_cast<double>(packets);
  std::uint64_t bytes = 24;
  std::array<std::uint64_t, 3> sizes{};
  std::uint8_t frame[1514 + 16];
  for (std::uint64_t n = 0; n < packets; ++n) {
    const bool opening = n < flows;
    FlowDef& f = defs[opening ? order[n] : rng.below(flows)];
    const std::uint64_t r = rng.next();
    const bool from_client = opening || (r & 1) != 0;
    // The server's first frame of a TCP flow is its SYN-ACK.
    const bool syn_ack = !plain && !from_client && f.proto == 6 && !f.replied;
    if (syn_ack) f.replied = true;
    const std::uint64_t pct = (r >> 8) % 100;
    const int size_class = pct < 40 ? 0 : pct < 60 ? 1 : 2;
    const std::size_t len = build(frame + 16, f, from_client, opening || syn_ack, !plain,
                                  size_class, static_cast<std::uint32_t>(r >> 32));
    ++sizes[static_cast<std::size_t>(size_class)];
    const std::uint64_t ts = t0_us + static_cast<std::uint64_t>(static_cast<double>(n) * step_us);
    put32le(frame, static_cast<std::uint32_t>(ts / 1'000'000));
    put32le(frame + 4, static_cast<std::uint32_t>(ts % 1'000'000));
    put32le(frame + 8, static_cast<std::uint32_t>(len));
    put32le(frame + 12, static_cast<std::uint32_t>(len));
    buf.insert(buf.end(), frame, frame + 16 + len);
    bytes += 16 + len;
    if (buf.size() > (8u << 20) - 2048) {
      if (std::fwrite(buf.data(), 1, buf.size(), out) != buf.size()) {
        std::fprintf(stderr, "observe_gen: %s: write failed: %s\n", out_path, std::strerror(errno));
        return 1;
      }
      buf.clear();
    }
  }
  if ((!buf.empty() && std::fwrite(buf.data(), 1, buf.size(), out) != buf.size()) ||
      std::fclose(out) != 0) {
    std::fprintf(stderr, "observe_gen: %s: write failed: %s\n", out_path, std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr,
               "observe_gen: %s: %llu frames, %llu flows, %llu bytes (small %llu, 590 %llu, "
               "1514 %llu)\n",
               out_path, static_cast<unsigned long long>(packets),
               static_cast<unsigned long long>(flows), static_cast<unsigned long long>(bytes),
               static_cast<unsigned long long>(sizes[0]), static_cast<unsigned long long>(sizes[1]),
               static_cast<unsigned long long>(sizes[2]));
  return 0;
}
