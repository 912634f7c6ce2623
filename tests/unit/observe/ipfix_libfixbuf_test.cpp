// The IPFIX writer's messages read back by libfixbuf (the IPFIX library of YAF), an
// independent reader: random records (IPv4 and IPv6, counters over the whole 64-bit range,
// random ports, VLANs, flags, classes of service, end reasons, directions, times, flow labels
// and Scitags markings) under random message size limits and options (biflow or uniflow,
// milliseconds or nanoseconds), every field compared after the round trip. The seed is
// printed on failure.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "../testing/ipfix_fixbuf_reader.hpp"
#include "flowmark/observe/ipfix.hpp"

namespace flowmark::observe {
namespace {

using testing::IpfixRead;

struct Written {
  FlowRecord r;
  IpfixExtras x;
  bool reverse_side;
};

TEST(IpfixLibfixbuf, RandomRecordsRoundTrip) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 12; ++round) {  // rounds 8-11: octets only (packet_fields off)
    const std::size_t max_size = 512 + rng() % (65535 - 512 + 1);
    const IpfixOptions options{.observation_domain = static_cast<std::uint32_t>(rng()),
                               .max_message_size = max_size,
                               .uniflow = round % 2 == 1,
                               .flow_label = round % 4 < 2,
                               .scitags = round % 4 != 1,
                               .nanoseconds = round % 3 == 0,
                               .packet_fields = round < 8,
                               .now = {}};
    SCOPED_TRACE(::testing::Message()
                 << "max message " << max_size << " uniflow " << options.uniflow << " ns "
                 << options.nanoseconds << " packet fields " << options.packet_fields);
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    std::vector<Written> written;
    IpfixWriter w(options,
                  [f](std::span<const std::uint8_t> m) { std::fwrite(m.data(), 1, m.size(), f); });
    const int n = 3000 + static_cast<int>(rng() % 3000);
    for (int i = 0; i < n; ++i) {
      Written x{};
      FlowRecord& r = x.r;
      const bool v6 = rng() % 3 == 0;
      r.ip_version = v6 ? 6 : 4;
      if (v6) {
        in6_addr a, b;
        for (int k = 0; k < 16; ++k) {
          a.s6_addr[k] = static_cast<std::uint8_t>(rng());
          b.s6_addr[k] = static_cast<std::uint8_t>(rng());
        }
        r.sip = IpAddress::v6(a);
        r.dip = IpAddress::v6(b);
        x.x.flow_label_fwd = static_cast<std::uint32_t>(rng() & 0xfffff);
        x.x.flow_label_rev = static_cast<std::uint32_t>(rng() & 0xfffff);
        x.x.scitags_experiment = static_cast<std::uint16_t>(rng() % 512);
        x.x.scitags_activity = static_cast<std::uint8_t>(rng() % 64);
      } else {
        r.sip = IpAddress::v4(static_cast<std::uint32_t>(rng()));
        r.dip = IpAddress::v4(static_cast<std::uint32_t>(rng()));
      }
      r.sp = static_cast<std::uint16_t>(rng());
      r.dp = static_cast<std::uint16_t>(rng());
      r.proto = static_cast<std::uint8_t>(rng());
      r.vlan = static_cast<std::uint16_t>(rng() & 0xfff);
      r.first = static_cast<Nanos>(rng() >> 3);  // 1970 .. 2262
      r.last = r.first + static_cast<Nanos>(rng() >> 30);
      r.pkt_fwd = rng();
      // Any width, 0 included (a shift by 64 would be undefined).
      const unsigned shift = static_cast<unsigned>(rng() % 65);
      r.pkt_rev = shift == 64 ? 0 : rng() >> shift;
      r.oct_fwd = rng();
      r.oct_rev = rng();
      r.tcp_flags_fwd = static_cast<std::uint8_t>(rng());
      r.tcp_flags_rev = static_cast<std::uint8_t>(rng());
      r.tos_fwd = static_cast<std::uint8_t>(rng());
      r.tos_rev = static_cast<std::uint8_t>(rng());
      r.end_reason = static_cast<EndReason>(1 + rng() % 5);
      r.direction = static_cast<BiflowDirection>(rng() % 3);
      w.add(r, x.x);
      written.push_back(x);
      if (options.uniflow && r.pkt_rev != 0) {
        x.reverse_side = true;
        written.push_back(x);
      }
    }
    w.flush();
    std::rewind(f);
    std::string error;
    const std::vector<IpfixRead> got = testing::read_ipfix_with_libfixbuf(f, error);
    std::fclose(f);
    ASSERT_EQ(error, "");
    ASSERT_EQ(got.size(), written.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      const Written& x = written[i];
      ASSERT_EQ(testing::ipfix_mismatch(got[i], x.r, x.x, options, x.reverse_side), "")
          << "record " << i;
    }
  }
}

}  // namespace
}  // namespace flowmark::observe
