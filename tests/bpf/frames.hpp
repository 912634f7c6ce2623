// Crafted Ethernet frames for the BPF program tests and benchmark, written byte by byte
// (independently of the program's parser), and a BPF_PROG_TEST_RUN wrapper.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include <bpf/bpf.h>

namespace flowmark::bpf::test {

using Bytes = std::vector<std::uint8_t>;

inline void put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}

struct FrameSpec {
  std::vector<std::uint16_t> vlan_tpids;  // e.g. {0x88A8, 0x8100} for QinQ
  std::uint8_t traffic_class = 0;
  std::uint32_t flow_label = 0;  // the label before the program runs
  std::uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  std::uint8_t dst[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  // Extension headers in order, by next-header value: 0 hop-by-hop, 43 routing,
  // 44 fragment, 60 destination options, 51 AH.
  std::vector<std::uint8_t> ext;
  std::uint16_t fragment_offset = 0;  // in 8-byte units, for a fragment header
  std::uint8_t protocol = IPPROTO_TCP;
  std::uint16_t src_port = 40000;
  std::uint16_t dst_port = 443;
  std::size_t payload = 32;
  std::uint8_t tcp_flags = 0x18;  // PSH ACK; 0x12 a SYN-ACK
};

// Offset of the IPv6 header in a frame built from `s`.
inline std::size_t ipv6_offset(const FrameSpec& s) { return 14 + 4 * s.vlan_tpids.size(); }

inline Bytes ipv6_frame(const FrameSpec& s) {
  Bytes b = {0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1};  // dst MAC, src MAC
  for (auto tpid : s.vlan_tpids) {
    put16(b, tpid);
    put16(b, 100);  // TCI: VLAN 100
  }
  put16(b, 0x86DD);
  const std::size_t ip = b.size();
  const std::uint32_t word =
      (6u << 28) | (std::uint32_t{s.traffic_class} << 20) | (s.flow_label & 0xFFFFF);
  put16(b, static_cast<std::uint16_t>(word >> 16));
  put16(b, static_cast<std::uint16_t>(word));
  put16(b, 0);  // payload length, set below
  b.push_back(s.ext.empty() ? s.protocol : s.ext[0]);
  b.push_back(64);  // hop limit
  b.insert(b.end(), s.src, s.src + 16);
  b.insert(b.end(), s.dst, s.dst + 16);
  for (std::size_t i = 0; i < s.ext.size(); ++i) {
    const std::uint8_t next = i + 1 < s.ext.size() ? s.ext[i + 1] : s.protocol;
    switch (s.ext[i]) {
      case 44:  // fragment: next, reserved, offset|M, identification
        b.push_back(next);
        b.push_back(0);
        put16(b, static_cast<std::uint16_t>(s.fragment_offset << 3 | 1));
        put16(b, 0x1234);
        put16(b, 0x5678);
        break;
      case 51:  // AH: next, length 4 (= 24 bytes), reserved, SPI, sequence, 12 bytes ICV
        b.push_back(next);
        b.push_back(4);
        b.insert(b.end(), 22, 0xA5);
        break;
      case 43:  // routing, 24 bytes (length 2): type 4, segments left 0, padding
        b.push_back(next);
        b.push_back(2);
        b.push_back(4);
        b.push_back(0);
        b.insert(b.end(), 20, 0);
        break;
      default:  // hop-by-hop, destination options: 8 bytes, PadN
        b.push_back(next);
        b.push_back(0);
        b.push_back(1);
        b.push_back(4);
        b.insert(b.end(), 4, 0);
        break;
    }
  }
  put16(b, s.src_port);
  put16(b, s.dst_port);
  if (s.protocol == IPPROTO_TCP) {
    b.insert(b.end(), 8, 0);  // sequence, acknowledgement
    b.push_back(5 << 4);      // data offset
    b.push_back(s.tcp_flags);
    put16(b, 65535);
    put16(b, 0);  // checksum (not checked by the program)
    put16(b, 0);
  } else if (s.protocol == IPPROTO_UDP) {
    put16(b, static_cast<std::uint16_t>(8 + s.payload));
    put16(b, 0);
  }
  b.insert(b.end(), s.payload, 0x42);
  const std::size_t plen = b.size() - ip - 40;
  b[ip + 4] = static_cast<std::uint8_t>(plen >> 8);
  b[ip + 5] = static_cast<std::uint8_t>(plen);
  return b;
}

inline Bytes ipv4_udp_frame() {
  Bytes b = {0x02, 0, 0, 0,    0, 2,  0x02, 0, 0, 0,   0, 1, 0x08, 0x00, 0x45, 0xB8, 0,
             48,   0, 0, 0x40, 0, 64, 17,   0, 0, 192, 0, 2, 1,    192,  0,    2,    2};
  put16(b, 40000);
  put16(b, 443);
  put16(b, 28);
  put16(b, 0);
  b.insert(b.end(), 20, 0x42);
  return b;
}

inline Bytes arp_frame() {
  Bytes b = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0,    0, 0,   1, 0x08, 0x06,
             0,    1,    0x08, 0,    6,    4,    0,    1, 0x02, 0, 0,   0, 0,    1,
             192,  0,    2,    1,    0,    0,    0,    0, 0,    0, 192, 0, 2,    2};
  b.insert(b.end(), 18, 0);  // padding to 60 bytes
  return b;
}

// The 32-bit word version | traffic class | flow label of the IPv6 header at `off`.
inline std::uint32_t ip6_word(const Bytes& b, std::size_t off) {
  return std::uint32_t{b[off]} << 24 | std::uint32_t{b[off + 1]} << 16 |
         std::uint32_t{b[off + 2]} << 8 | b[off + 3];
}

struct RunResult {
  int error = 0;  // negative errno of the test run itself
  std::uint32_t retval = 0;
  std::uint32_t duration_ns = 0;  // average per repetition
  Bytes out;
};

inline RunResult test_run(int prog_fd, const Bytes& in, int repeat = 1) {
  RunResult r;
  r.out.resize(in.size() + 256);
  bpf_test_run_opts o{};
  o.sz = sizeof(o);
  o.data_in = in.data();
  o.data_size_in = static_cast<std::uint32_t>(in.size());
  o.data_out = r.out.data();
  o.data_size_out = static_cast<std::uint32_t>(r.out.size());
  o.repeat = repeat;
  r.error = bpf_prog_test_run_opts(prog_fd, &o);
  r.retval = o.retval;
  r.duration_ns = o.duration;
  r.out.resize(o.data_size_out);
  return r;
}

}  // namespace flowmark::bpf::test
