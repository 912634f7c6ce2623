// observe_decode_bench — cost of decode_packet() per frame, the observer's first step.
//
// Each benchmark decodes one frame per iteration (hot in cache, as in a capture loop that
// decodes a packet right after reading it); items_per_second is packets per second of one
// core and the time per iteration is nanoseconds per packet:
//   Decode/EthernetIpv4Tcp      Ethernet, IPv4, TCP with options (the common case)
//   Decode/EthernetIpv6TwoExt   Ethernet, IPv6, hop-by-hop + destination options, TCP
//   Decode/VlanMplsIpv4Udp      802.1Q tag, two MPLS labels, IPv4, UDP
//   Decode/Icmpv4ErrorQuote     ICMP port unreachable quoting a UDP datagram
//   Decode/Mix                  the four above in turn (defeats the branch predictor's
//                               memory of a single path)
#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "flowmark/observe/packet.hpp"

namespace {

using flowmark::observe::DecodeError;
using flowmark::observe::LinkType;
using flowmark::observe::PacketView;

using Part = std::vector<int>;

std::vector<std::byte> cat(std::initializer_list<Part> parts) {
  std::vector<std::byte> out;
  for (const auto& part : parts)
    for (int b : part) out.push_back(static_cast<std::byte>(b));
  return out;
}

Part ether(int type) { return {2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, type >> 8, type & 0xff}; }
const Part kV4Addrs = {192, 0, 2, 1, 198, 51, 100, 7};
const Part kV6Addrs = {0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                       0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
// 43402 → 443, ACK, 12 bytes of options (NOP NOP timestamp).
const Part kTcp = {0xa9, 0x8a, 1, 0xbb, 0, 0, 0, 1,  0, 0, 0, 2, 0x80, 0x10, 0xff, 0xff,
                   0,    0,    0, 0,    1, 1, 8, 10, 0, 0, 0, 1, 0,    0,    0,    2};

const std::vector<std::byte> kIpv4Tcp =
    cat({ether(0x0800), {0x45, 0, 0, 52, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0}, kV4Addrs, kTcp});
const std::vector<std::byte> kIpv6TwoExt = cat({
    ether(0x86dd),
    {0x60, 0, 0, 0, 0, 56, 0, 64},
    kV6Addrs,
    {60, 0, 5, 2, 0, 0, 1, 0},                          // hop-by-hop: router alert
    {6, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},  // destination options: PadN
    kTcp,
});
const std::vector<std::byte> kVlanMpls = cat({
    ether(0x8100),
    {0, 42, 0x88, 0x47},                  // VLAN 42, then MPLS
    {0, 0x10, 0, 64, 0, 0x20, 0x01, 64},  // labels 1 and 2, bottom of stack on the second
    {0x45, 0, 0, 36, 0x12, 0x34, 0, 0, 64, 17, 0, 0},
    kV4Addrs,
    {0x9c, 0x40, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8},
});
const std::vector<std::byte> kIcmpError = cat({
    ether(0x0800),
    {0x45, 0, 0, 56, 0, 1, 0, 0, 64, 1, 0, 0},
    kV4Addrs,
    {3, 3, 0, 0, 0, 0, 0, 0},  // port unreachable, quoting:
    {0x45, 0, 0, 28, 0x12, 0x34, 0, 0, 64, 17, 0, 0},
    kV4Addrs,
    {0x9c, 0x40, 0, 53, 0, 8, 0, 0},
});

void run(benchmark::State& state, std::span<const std::vector<std::byte>* const> frames) {
  PacketView p;
  for (const auto* f : frames)
    if (decode_packet(LinkType::kEthernet, *f, p) != DecodeError::kNone) {
      state.SkipWithError("bench frame does not decode");
      return;
    }
  std::size_t i = 0;
  std::uint64_t ports = 0;
  for (auto _ : state) {
    const auto& f = *frames[i];
    i = i + 1 == frames.size() ? 0 : i + 1;
    auto e = decode_packet(LinkType::kEthernet, f, p);
    benchmark::DoNotOptimize(e);
    ports += p.sport;
    benchmark::DoNotOptimize(p);
  }
  benchmark::DoNotOptimize(ports);
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

void EthernetIpv4Tcp(benchmark::State& s) {
  const std::array f{&kIpv4Tcp};
  run(s, f);
}
void EthernetIpv6TwoExt(benchmark::State& s) {
  const std::array f{&kIpv6TwoExt};
  run(s, f);
}
void VlanMplsIpv4Udp(benchmark::State& s) {
  const std::array f{&kVlanMpls};
  run(s, f);
}
void Icmpv4ErrorQuote(benchmark::State& s) {
  const std::array f{&kIcmpError};
  run(s, f);
}
void Mix(benchmark::State& s) {
  const std::array f{&kIpv4Tcp, &kIpv6TwoExt, &kVlanMpls, &kIcmpError};
  run(s, f);
}

BENCHMARK(EthernetIpv4Tcp)->Name("Decode/EthernetIpv4Tcp");
BENCHMARK(EthernetIpv6TwoExt)->Name("Decode/EthernetIpv6TwoExt");
BENCHMARK(VlanMplsIpv4Udp)->Name("Decode/VlanMplsIpv4Udp");
BENCHMARK(Icmpv4ErrorQuote)->Name("Decode/Icmpv4ErrorQuote");
BENCHMARK(Mix)->Name("Decode/Mix");

}  // namespace

BENCHMARK_MAIN();
