// IPFIX messages read back by libfixbuf (the IPFIX library of YAF), an independent reader of
// the writer's output: every record through fBufNext into one internal template that holds
// every element the writer may send, and the comparison of a record read with the FlowRecord
// (and extras) it was written from. Shared by the unit test (ipfix_libfixbuf_test.cpp) and the
// fuzz target (fuzz_ipfix.cpp).
#pragma once

#include <fixbuf/public.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "flowmark/observe/ipfix.hpp"

namespace flowmark::testing {

// libfixbuf copies each record into this struct as the internal template below lays it out;
// elements a record's template lacks are zero.
struct IpfixRead {
  std::uint64_t start_ms, end_ms, start_ns, end_ns, pkts, octs, rpkts, roctets;
  std::uint8_t sip6[16], dip6[16];
  std::uint32_t sip4, dip4, label, rlabel;
  std::uint16_t sp, dp, vlan, flags, rflags, experiment;
  std::uint8_t proto, tos, rtos, end_reason, direction, activity;
  std::uint8_t pad[4];
};
static_assert(sizeof(IpfixRead) == 136);

inline fbInfoElementSpec_t kIpfixReadSpec[] = {{(char*)"flowStartMilliseconds", 8, 0},
                                               {(char*)"flowEndMilliseconds", 8, 0},
                                               {(char*)"flowStartNanoseconds", 8, 0},
                                               {(char*)"flowEndNanoseconds", 8, 0},
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
                                               {(char*)"scitagExperimentID", 2, 0},
                                               {(char*)"protocolIdentifier", 1, 0},
                                               {(char*)"ipClassOfService", 1, 0},
                                               {(char*)"reverseIpClassOfService", 1, 0},
                                               {(char*)"flowEndReason", 1, 0},
                                               {(char*)"biflowDirection", 1, 0},
                                               {(char*)"scitagExperimentAct", 1, 0},
                                               {(char*)"paddingOctets", 4, 0},
                                               FB_IESPEC_NULL};

// CESNET's Scitags elements (libfds config/system/elements/cesnet.xml), unknown to libfixbuf.
inline fbInfoElement_t kIpfixCesnetElements[] = {
    FB_IE_INIT_FULL("scitagExperimentID", observe::kIpfixCesnetPen,
                    observe::kIpfixScitagExperimentId, 2, FB_IE_F_ENDIAN, 0, 0, FB_UINT_16,
                    nullptr),
    FB_IE_INIT_FULL("scitagExperimentAct", observe::kIpfixCesnetPen,
                    observe::kIpfixScitagExperimentAct, 1, FB_IE_F_ENDIAN, 0, 0, FB_UINT_8,
                    nullptr),
    FB_IE_NULL};

// Every record of the messages in `f` (from its current position to its end); `error` is set
// to libfixbuf's message when it fails before the end.
inline std::vector<IpfixRead> read_ipfix_with_libfixbuf(std::FILE* f, std::string& error) {
  std::vector<IpfixRead> out;
  GError* err = nullptr;
  fbInfoModel_t* model = fbInfoModelAlloc();
  fbInfoModelAddElementArray(model, kIpfixCesnetElements);
  fbSession_t* session = fbSessionAlloc(model);
  fbTemplate_t* tmpl = fbTemplateAlloc(model);
  if (!fbTemplateAppendSpecArray(tmpl, kIpfixReadSpec, 0xffffffff, &err) ||
      !fbSessionAddTemplate(session, TRUE, 999, tmpl, &err)) {
    error = err->message;
    g_clear_error(&err);
    fbSessionFree(session);
    fbInfoModelFree(model);
    return out;
  }
  fbCollector_t* collector = fbCollectorAllocFP(nullptr, f);
  fBuf_t* buf = fBufAllocForCollection(session, collector);
  if (!fBufSetInternalTemplate(buf, 999, &err)) {
    error = err->message;
    g_clear_error(&err);
    fBufFree(buf);
    fbInfoModelFree(model);
    return out;
  }
  while (true) {
    IpfixRead r{};
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

// "" when `g` is what a writer with options `o` writes for `r` with `x`: its forward record, or
// (uniflow, reverse_side) its reverse one; else the first difference.
inline std::string ipfix_mismatch(const IpfixRead& g, const observe::FlowRecord& r,
                                  const observe::IpfixExtras& x, const observe::IpfixOptions& o,
                                  bool reverse_side) {
  const bool v6 = r.ip_version == 6, rs = reverse_side;
  const IpAddress& src = rs ? r.dip : r.sip;
  const IpAddress& dst = rs ? r.sip : r.dip;
  auto differ = [](const char* what, std::uint64_t got, std::uint64_t want) {
    return std::string(what) + ": read " + std::to_string(got) + ", written " +
           std::to_string(want);
  };
#define FM_IPFIX_CHECK(what, got, want)                                    \
  if (static_cast<std::uint64_t>(got) != static_cast<std::uint64_t>(want)) \
    return differ(what, static_cast<std::uint64_t>(got), static_cast<std::uint64_t>(want));
  static const std::uint8_t kZero[16] = {};
  if (v6) {
    if (std::memcmp(g.sip6, src.bytes(), 16) != 0) return "sourceIPv6Address";
    if (std::memcmp(g.dip6, dst.bytes(), 16) != 0) return "destinationIPv6Address";
    FM_IPFIX_CHECK("sourceIPv4Address in an IPv6 record", g.sip4, 0);
  } else {
    std::uint32_t a, b;
    std::memcpy(&a, src.bytes(), 4);
    std::memcpy(&b, dst.bytes(), 4);
    FM_IPFIX_CHECK("sourceIPv4Address", g.sip4, __builtin_bswap32(a));
    FM_IPFIX_CHECK("destinationIPv4Address", g.dip4, __builtin_bswap32(b));
    if (std::memcmp(g.sip6, kZero, 16) != 0) return "sourceIPv6Address in an IPv4 record";
  }
  FM_IPFIX_CHECK("sourceTransportPort", g.sp, rs ? r.dp : r.sp);
  FM_IPFIX_CHECK("destinationTransportPort", g.dp, rs ? r.sp : r.dp);
  FM_IPFIX_CHECK("protocolIdentifier", g.proto, r.proto);
  // Without packet_fields the packet, flag, class-of-service and VLAN elements are not in the
  // template: the reader's internal template holds 0 for them.
  auto pf = [&](auto v) -> std::uint64_t {
    return o.packet_fields ? static_cast<std::uint64_t>(v) : 0;
  };
  FM_IPFIX_CHECK("vlanId", g.vlan, pf(r.vlan));
  if (o.nanoseconds) {
    FM_IPFIX_CHECK("flowStartNanoseconds", g.start_ns, observe::nanos_to_ntp(r.first));
    FM_IPFIX_CHECK("flowEndNanoseconds", g.end_ns, observe::nanos_to_ntp(r.last));
    // Exact in NTP era 0 (1900 .. 2036-02-07).
    constexpr std::int64_t kEra0Low = -2'208'988'800'000'000'000,
                           kEra0High = 2'085'978'496'000'000'000;
    if (r.first >= kEra0Low && r.first < kEra0High)
      FM_IPFIX_CHECK("flowStartNanoseconds as ns", observe::ntp_to_nanos(g.start_ns), r.first);
    FM_IPFIX_CHECK("flowStartMilliseconds with ns", g.start_ms, 0);
  } else {
    FM_IPFIX_CHECK("flowStartMilliseconds", g.start_ms, r.first / 1'000'000);
    FM_IPFIX_CHECK("flowEndMilliseconds", g.end_ms, r.last / 1'000'000);
    FM_IPFIX_CHECK("flowStartNanoseconds with ms", g.start_ns, 0);
  }
  if (o.uniflow) {
    FM_IPFIX_CHECK("packetDeltaCount", g.pkts, pf(rs ? r.pkt_rev : r.pkt_fwd));
    FM_IPFIX_CHECK("octetDeltaCount", g.octs, rs ? r.oct_rev : r.oct_fwd);
    FM_IPFIX_CHECK("tcpControlBits", g.flags, pf(rs ? r.tcp_flags_rev : r.tcp_flags_fwd));
    FM_IPFIX_CHECK("ipClassOfService", g.tos, pf(rs ? r.tos_rev : r.tos_fwd));
    FM_IPFIX_CHECK("reversePacketDeltaCount in uniflow", g.rpkts, 0);
    FM_IPFIX_CHECK("reverseIpClassOfService in uniflow", g.rtos, 0);
    FM_IPFIX_CHECK("biflowDirection in uniflow", g.direction, 0);
  } else {
    FM_IPFIX_CHECK("packetDeltaCount", g.pkts, pf(r.pkt_fwd));
    FM_IPFIX_CHECK("octetDeltaCount", g.octs, r.oct_fwd);
    FM_IPFIX_CHECK("tcpControlBits", g.flags, pf(r.tcp_flags_fwd));
    FM_IPFIX_CHECK("ipClassOfService", g.tos, pf(r.tos_fwd));
    FM_IPFIX_CHECK("reversePacketDeltaCount", g.rpkts, pf(r.pkt_rev));
    FM_IPFIX_CHECK("reverseOctetDeltaCount", g.roctets, r.oct_rev);
    FM_IPFIX_CHECK("reverseTcpControlBits", g.rflags, pf(r.tcp_flags_rev));
    FM_IPFIX_CHECK("reverseIpClassOfService", g.rtos, pf(r.tos_rev));
    FM_IPFIX_CHECK("biflowDirection", g.direction, static_cast<unsigned>(r.direction));
  }
  FM_IPFIX_CHECK("flowEndReason", g.end_reason, static_cast<unsigned>(r.end_reason));
  const bool labels = v6 && o.flow_label, tags = v6 && o.scitags;
  FM_IPFIX_CHECK("flowLabelIPv6", g.label, !labels ? 0 : rs ? x.flow_label_rev : x.flow_label_fwd);
  FM_IPFIX_CHECK("reverseFlowLabelIPv6", g.rlabel, labels && !o.uniflow ? x.flow_label_rev : 0);
  FM_IPFIX_CHECK("scitagExperimentID", g.experiment, tags ? x.scitags_experiment : 0);
  FM_IPFIX_CHECK("scitagExperimentAct", g.activity, tags ? x.scitags_activity : 0);
#undef FM_IPFIX_CHECK
  return "";
}

}  // namespace flowmark::testing
