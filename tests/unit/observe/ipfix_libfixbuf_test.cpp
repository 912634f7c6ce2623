// The IPFIX writer's messages read back by libfixbuf (the IPFIX library of YAF), an
// independent reader: random records (IPv4 and IPv6, counters over the whole 64-bit range,
// random ports, VLANs, flags, times and flow labels) under random message size limits, every
// field compared after the round trip. The seed is printed on failure.
#include <fixbuf/public.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "flowmark/observe/ipfix.hpp"

namespace flowmark::observe {
namespace {

// libfixbuf copies each record into this struct as the internal template below lays it out;
// elements a record's template lacks (the other IP version's addresses) are zero.
struct Read {
  std::uint64_t start_ms, end_ms, pkts, octs, rpkts, roctets;
  std::uint8_t sip6[16], dip6[16];
  std::uint32_t sip4, dip4, label, rlabel;
  std::uint16_t sp, dp, vlan, flags, rflags;
  std::uint8_t proto;
  std::uint8_t pad[5];
};
static_assert(sizeof(Read) == 112);

fbInfoElementSpec_t kSpec[] = {{(char*)"flowStartMilliseconds", 8, 0},
                               {(char*)"flowEndMilliseconds", 8, 0},
                               {(char*)"packetDeltaCount", 8, 0},
                               {(char*)"octetDeltaCount", 8, 0},
                               {(char*)"reversePacketDeltaCount", 8, 0},
                               {(char*)"reverseOctetDeltaCount", 8, 0},
                               {(char*)"sourceIPv6Address", 16, 0},
                               {(char*)"destinationIPv6Address", 16, 0},
                               {(char*)"sourceIPv4Address", 4, 0},
                               {(char*)"destinationIPv4Address", 4, 0},
                               {(char*)"flowLabelIPv6", 4, 0},
                               {(char*)"reverseFlowLabelIPv6", 4, 0},
                               {(char*)"sourceTransportPort", 2, 0},
                               {(char*)"destinationTransportPort", 2, 0},
                               {(char*)"vlanId", 2, 0},
                               {(char*)"tcpControlBits", 2, 0},
                               {(char*)"reverseTcpControlBits", 2, 0},
                               {(char*)"protocolIdentifier", 1, 0},
                               {(char*)"paddingOctets", 5, 0},
                               FB_IESPEC_NULL};

struct Written {
  FlowRecord r;
  IpfixExtras x;
};

std::vector<Read> read_with_libfixbuf(std::FILE* f, std::string& error) {
  std::vector<Read> out;
  GError* err = nullptr;
  fbInfoModel_t* model = fbInfoModelAlloc();
  fbSession_t* session = fbSessionAlloc(model);
  fbTemplate_t* tmpl = fbTemplateAlloc(model);
  if (!fbTemplateAppendSpecArray(tmpl, kSpec, 0xffffffff, &err) ||
      !fbSessionAddTemplate(session, TRUE, 999, tmpl, &err)) {
    error = err->message;
    return out;
  }
  fbCollector_t* collector = fbCollectorAllocFP(nullptr, f);
  fBuf_t* buf = fBufAllocForCollection(session, collector);
  if (!fBufSetInternalTemplate(buf, 999, &err)) {
    error = err->message;
    return out;
  }
  while (true) {
    Read r{};
    std::size_t len = sizeof r;
    if (!fBufNext(buf, reinterpret_cast<std::uint8_t*>(&r), &len, &err)) {
      if (!g_error_matches(err, FB_ERROR_DOMAIN, FB_ERROR_EOF)) error = err->message;
      g_clear_error(&err);
      break;
    }
    out.push_back(r);
  }
  fBufFree(buf);
  fbInfoModelFree(model);
  return out;
}

TEST(IpfixLibfixbuf, RandomRecordsRoundTrip) {
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE(testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 6; ++round) {
    const std::size_t max_size = 512 + rng() % (65535 - 512 + 1);
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    std::vector<Written> written;
    IpfixWriter w({.observation_domain = static_cast<std::uint32_t>(rng()),
                   .max_message_size = max_size,
                   .flow_label = true,
                   .now = {}},
                  [f](std::span<const std::uint8_t> m) { std::fwrite(m.data(), 1, m.size(), f); });
    const int n = 3000 + static_cast<int>(rng() % 3000);
    for (int i = 0; i < n; ++i) {
      Written x;
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
      } else {
        r.sip = IpAddress::v4(static_cast<std::uint32_t>(rng()));
        r.dip = IpAddress::v4(static_cast<std::uint32_t>(rng()));
      }
      r.sp = static_cast<std::uint16_t>(rng());
      r.dp = static_cast<std::uint16_t>(rng());
      r.proto = static_cast<std::uint8_t>(rng());
      r.vlan = static_cast<std::uint16_t>(rng() & 0xfff);
      r.first = static_cast<Nanos>(rng() >> 2);
      r.last = r.first + static_cast<Nanos>(rng() >> 30);
      r.pkt_fwd = rng();
      r.pkt_rev = rng() >> (rng() % 64);
      r.oct_fwd = rng();
      r.oct_rev = rng();
      r.tcp_flags_fwd = static_cast<std::uint8_t>(rng());
      r.tcp_flags_rev = static_cast<std::uint8_t>(rng());
      w.add(r, x.x);
      written.push_back(x);
    }
    w.flush();
    std::rewind(f);
    std::string error;
    const std::vector<Read> got = read_with_libfixbuf(f, error);
    std::fclose(f);
    ASSERT_EQ(error, "") << "max message " << max_size;
    ASSERT_EQ(got.size(), written.size()) << "max message " << max_size;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const FlowRecord& r = written[i].r;
      const Read& g = got[i];
      SCOPED_TRACE(testing::Message() << "record " << i << " max message " << max_size);
      if (r.ip_version == 6) {
        ASSERT_EQ(std::memcmp(g.sip6, r.sip.bytes(), 16), 0);
        ASSERT_EQ(std::memcmp(g.dip6, r.dip.bytes(), 16), 0);
        ASSERT_EQ(g.label, written[i].x.flow_label_fwd);
        ASSERT_EQ(g.rlabel, written[i].x.flow_label_rev);
        ASSERT_EQ(g.sip4, 0u);
      } else {
        std::uint32_t a;
        std::memcpy(&a, r.sip.bytes(), 4);
        ASSERT_EQ(g.sip4, __builtin_bswap32(a));
        std::memcpy(&a, r.dip.bytes(), 4);
        ASSERT_EQ(g.dip4, __builtin_bswap32(a));
        ASSERT_EQ(g.label, 0u);
      }
      ASSERT_EQ(g.sp, r.sp);
      ASSERT_EQ(g.dp, r.dp);
      ASSERT_EQ(g.proto, r.proto);
      ASSERT_EQ(g.vlan, r.vlan);
      ASSERT_EQ(g.start_ms, static_cast<std::uint64_t>(r.first / 1'000'000));
      ASSERT_EQ(g.end_ms, static_cast<std::uint64_t>(r.last / 1'000'000));
      ASSERT_EQ(g.pkts, r.pkt_fwd);
      ASSERT_EQ(g.octs, r.oct_fwd);
      ASSERT_EQ(g.rpkts, r.pkt_rev);
      ASSERT_EQ(g.roctets, r.oct_rev);
      ASSERT_EQ(g.flags, r.tcp_flags_fwd);
      ASSERT_EQ(g.rflags, r.tcp_flags_rev);
    }
  }
}

}  // namespace
}  // namespace flowmark::observe
