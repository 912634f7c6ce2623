// The IPFIX writer's messages decoded here by a small reader of RFC 7011 written from the
// RFC (not from the writer): headers, template sets, data sets, sequence numbers, splitting
// under the maximum size, biflow reverse elements and the uniflow split.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "flowmark/observe/ipfix.hpp"

namespace flowmark::observe {
namespace {

std::uint64_t be(const std::uint8_t* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

struct Spec {
  std::uint16_t id;
  std::uint16_t length;
  std::uint32_t pen;
};
// A decoded data record: element (id, pen) → value bytes.
using Rec = std::map<std::pair<std::uint16_t, std::uint32_t>, std::vector<std::uint8_t>>;

struct Decoded {
  std::uint16_t version, length;
  std::uint32_t export_time, sequence, domain;
  std::vector<Rec> records;
  int template_sets = 0;
};

// Decodes one message; templates persist across messages in `templates`.
Decoded decode(const std::vector<std::uint8_t>& m,
               std::map<std::uint16_t, std::vector<Spec>>& templates) {
  Decoded d{};
  EXPECT_GE(m.size(), 16u);
  d.version = static_cast<std::uint16_t>(be(&m[0], 2));
  d.length = static_cast<std::uint16_t>(be(&m[2], 2));
  d.export_time = static_cast<std::uint32_t>(be(&m[4], 4));
  d.sequence = static_cast<std::uint32_t>(be(&m[8], 4));
  d.domain = static_cast<std::uint32_t>(be(&m[12], 4));
  EXPECT_EQ(d.length, m.size());
  std::size_t off = 16;
  while (off < m.size()) {
    const auto sid = static_cast<std::uint16_t>(be(&m[off], 2));
    const auto slen = static_cast<std::size_t>(be(&m[off + 2], 2));
    EXPECT_GE(slen, 4u);
    EXPECT_LE(off + slen, m.size());
    std::size_t p = off + 4;
    const std::size_t end = off + slen;
    if (sid == 2) {
      ++d.template_sets;
      while (p + 4 <= end) {
        const auto tid = static_cast<std::uint16_t>(be(&m[p], 2));
        const auto count = be(&m[p + 2], 2);
        p += 4;
        std::vector<Spec> specs;
        for (std::uint64_t i = 0; i < count; ++i) {
          Spec s{static_cast<std::uint16_t>(be(&m[p], 2)),
                 static_cast<std::uint16_t>(be(&m[p + 2], 2)), 0};
          p += 4;
          if (s.id & 0x8000) {
            s.id &= 0x7fff;
            s.pen = static_cast<std::uint32_t>(be(&m[p], 4));
            p += 4;
          }
          specs.push_back(s);
        }
        templates[tid] = specs;
      }
    } else {
      EXPECT_GE(sid, 256);
      EXPECT_TRUE(templates.count(sid)) << "data set before its template " << sid;
      const auto& specs = templates[sid];
      std::size_t rlen = 0;
      for (const auto& s : specs) rlen += s.length;
      while (p + rlen <= end) {
        Rec r;
        for (const auto& s : specs) {
          r[{s.id, s.pen}] = std::vector<std::uint8_t>(m.begin() + p, m.begin() + p + s.length);
          p += s.length;
        }
        d.records.push_back(std::move(r));
      }
      EXPECT_EQ(p, end) << "padding in a data set";
    }
    off = end;
  }
  return d;
}

std::uint64_t num(const Rec& r, std::uint16_t id, std::uint32_t pen = 0) {
  auto it = r.find({id, pen});
  EXPECT_TRUE(it != r.end()) << "element " << id << "/" << pen;
  if (it == r.end()) return ~0ULL;
  return be(it->second.data(), it->second.size());
}

FlowRecord v4_record(std::uint32_t n) {
  FlowRecord r;
  r.sip = IpAddress::v4(0x0a000001);
  r.dip = IpAddress::v4(0x0a000002 + n);
  r.sp = 40000;
  r.dp = 443;
  r.proto = 6;
  r.ip_version = 4;
  r.vlan = 12;
  r.first = 1'700'000'000'123'456'789;
  r.last = 1'700'000'005'987'654'321;
  r.pkt_fwd = 10 + n;
  r.pkt_rev = 8;
  r.oct_fwd = 1500;
  r.oct_rev = 900;
  r.tcp_flags_fwd = 0x1b;
  r.tcp_flags_rev = 0x12;
  r.tos_fwd = 0x28;
  r.tos_rev = 0x0a;
  r.end_reason = EndReason::kEndDetected;
  r.direction = BiflowDirection::kInitiator;
  r.has_ports = true;
  return r;
}

struct Capture {
  std::vector<std::vector<std::uint8_t>> messages;
  IpfixWriter::MessageSink sink() {
    return [this](std::span<const std::uint8_t> m) { messages.emplace_back(m.begin(), m.end()); };
  }
};

TEST(Ipfix, BiflowRecordWithReverseElements) {
  Capture c;
  IpfixWriter w({.observation_domain = 77, .now = [] { return 1234u; }}, c.sink());
  w.add(v4_record(0));
  FlowRecord r6 = v4_record(1);
  r6.ip_version = 6;
  r6.sip = *IpAddress::parse("2001:db8::1");
  r6.dip = *IpAddress::parse("2001:db8::2");
  w.add(r6);
  w.flush();
  ASSERT_EQ(c.messages.size(), 1u);
  std::map<std::uint16_t, std::vector<Spec>> t;
  Decoded d = decode(c.messages[0], t);
  EXPECT_EQ(d.version, 10);
  EXPECT_EQ(d.export_time, 1234u);
  EXPECT_EQ(d.sequence, 0u);
  EXPECT_EQ(d.domain, 77u);
  EXPECT_EQ(d.template_sets, 1);
  ASSERT_EQ(d.records.size(), 2u);
  const Rec& a = d.records[0];
  EXPECT_EQ(num(a, 8), 0x0a000001u);
  EXPECT_EQ(num(a, 12), 0x0a000002u);
  EXPECT_EQ(num(a, 7), 40000u);
  EXPECT_EQ(num(a, 11), 443u);
  EXPECT_EQ(num(a, 4), 6u);
  EXPECT_EQ(num(a, 58), 12u);
  EXPECT_EQ(num(a, 152), 1'700'000'000'123u);
  EXPECT_EQ(num(a, 153), 1'700'000'005'987u);
  EXPECT_EQ(num(a, 2), 10u);
  EXPECT_EQ(num(a, 1), 1500u);
  EXPECT_EQ(num(a, 6), 0x1bu);
  EXPECT_EQ(num(a, 2, kIpfixReversePen), 8u);
  EXPECT_EQ(num(a, 1, kIpfixReversePen), 900u);
  EXPECT_EQ(num(a, 6, kIpfixReversePen), 0x12u);
  EXPECT_EQ(num(a, 5), 0x28u);  // ipClassOfService
  EXPECT_EQ(num(a, 5, kIpfixReversePen), 0x0au);
  EXPECT_EQ(num(a, 136), 3u);  // flowEndReason: end of flow detected
  EXPECT_EQ(num(a, 239), 1u);  // biflowDirection: initiator
  EXPECT_FALSE(a.count({156, 0})) << "nanoseconds without the option";
  EXPECT_FALSE(a.count({kIpfixScitagExperimentId, kIpfixCesnetPen}));
  const Rec& b = d.records[1];
  ASSERT_TRUE(b.count({27, 0}));
  EXPECT_EQ(b.at({27, 0}).size(), 16u);
  EXPECT_EQ(b.at({27, 0})[0], 0x20);
  EXPECT_EQ(b.at({28, 0})[15], 0x02);
  EXPECT_EQ(num(b, 2), 11u);
}

TEST(Ipfix, SplitsUnderMaximumSizeAndCountsSequence) {
  Capture c;
  IpfixWriter w({.observation_domain = 1, .max_message_size = 600, .now = {}}, c.sink());
  const int n = 100;
  for (int i = 0; i < n; ++i) w.add(v4_record(static_cast<std::uint32_t>(i)));
  w.flush();
  ASSERT_GT(c.messages.size(), 5u);
  std::map<std::uint16_t, std::vector<Spec>> t;
  std::uint32_t expected_seq = 0;
  std::vector<Rec> all;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    EXPECT_LE(c.messages[i].size(), 600u);
    Decoded d = decode(c.messages[i], t);
    EXPECT_EQ(d.template_sets, i == 0 ? 1 : 0);
    EXPECT_EQ(d.sequence, expected_seq);
    expected_seq += static_cast<std::uint32_t>(d.records.size());
    all.insert(all.end(), d.records.begin(), d.records.end());
  }
  ASSERT_EQ(all.size(), static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) EXPECT_EQ(num(all[i], 2), 10u + i);
  EXPECT_EQ(w.records_written(), static_cast<std::uint64_t>(n));
  EXPECT_EQ(w.sequence(), static_cast<std::uint32_t>(n));
}

TEST(Ipfix, UniflowSplitsEachRecordInTwo) {
  Capture c;
  IpfixWriter w({.uniflow = true, .now = {}}, c.sink());
  w.add(v4_record(0));
  FlowRecord one_way = v4_record(1);
  one_way.pkt_rev = 0;
  one_way.oct_rev = 0;
  w.add(one_way);
  w.flush();
  std::map<std::uint16_t, std::vector<Spec>> t;
  ASSERT_EQ(c.messages.size(), 1u);
  Decoded d = decode(c.messages[0], t);
  ASSERT_EQ(d.records.size(), 3u);  // the one-way flow has no reverse record
  for (const Rec& r : d.records)
    for (const auto& [k, v] : r) EXPECT_EQ(k.second, 0u) << "reverse element in uniflow";
  EXPECT_EQ(num(d.records[0], 8), 0x0a000001u);
  EXPECT_EQ(num(d.records[0], 2), 10u);
  EXPECT_EQ(num(d.records[1], 8), 0x0a000002u);  // endpoints swapped
  EXPECT_EQ(num(d.records[1], 7), 443u);
  EXPECT_EQ(num(d.records[1], 11), 40000u);
  EXPECT_EQ(num(d.records[1], 2), 8u);
  EXPECT_EQ(num(d.records[1], 1), 900u);
  EXPECT_EQ(num(d.records[1], 6), 0x12u);
  EXPECT_EQ(num(d.records[0], 5), 0x28u);  // each side's own class of service
  EXPECT_EQ(num(d.records[1], 5), 0x0au);
  for (const Rec& r : d.records) {
    EXPECT_EQ(num(r, 136), 3u);
    EXPECT_FALSE(r.count({239, 0})) << "biflowDirection in a uniflow record";
  }
  EXPECT_EQ(num(d.records[2], 2), 11u);
  EXPECT_EQ(w.sequence(), 3u);
}

TEST(Ipfix, FlowLabelsInTheIpv6TemplateOnly) {
  Capture c;
  IpfixWriter w({.flow_label = true, .now = {}}, c.sink());
  FlowRecord r6 = v4_record(0);
  r6.ip_version = 6;
  r6.sip = *IpAddress::parse("2001:db8::1");
  r6.dip = *IpAddress::parse("2001:db8::2");
  w.add(r6, {.flow_label_fwd = 0xabcde, .flow_label_rev = 0x12345});
  w.add(v4_record(1), {.flow_label_fwd = 7, .flow_label_rev = 8});
  w.flush();
  std::map<std::uint16_t, std::vector<Spec>> t;
  Decoded d = decode(c.messages.at(0), t);
  ASSERT_EQ(d.records.size(), 2u);
  EXPECT_EQ(num(d.records[0], 31), 0xabcdeu);
  EXPECT_EQ(num(d.records[0], 31, kIpfixReversePen), 0x12345u);
  EXPECT_FALSE(d.records[1].count({31, 0})) << "flow label in the IPv4 template";

  Capture u;
  IpfixWriter uw({.uniflow = true, .flow_label = true, .now = {}}, u.sink());
  uw.add(r6, {.flow_label_fwd = 0xabcde, .flow_label_rev = 0x12345});
  uw.flush();
  std::map<std::uint16_t, std::vector<Spec>> ut;
  Decoded ud = decode(u.messages.at(0), ut);
  ASSERT_EQ(ud.records.size(), 2u);
  EXPECT_EQ(num(ud.records[0], 31), 0xabcdeu);
  EXPECT_EQ(num(ud.records[1], 31), 0x12345u);
  EXPECT_FALSE(ud.records[0].count({31, kIpfixReversePen}));
}

TEST(Ipfix, ScitagsMarkingAsCesnetElementsInTheIpv6TemplateOnly) {
  Capture c;
  IpfixWriter w({.flow_label = true, .scitags = true, .now = {}}, c.sink());
  FlowRecord r6 = v4_record(0);
  r6.ip_version = 6;
  r6.sip = *IpAddress::parse("2001:db8::1");
  r6.dip = *IpAddress::parse("2001:db8::2");
  w.add(r6, {.flow_label_fwd = 0x10024,
             .flow_label_rev = 0,
             .scitags_experiment = 300,
             .scitags_activity = 9});
  w.add(r6);  // not marked
  w.add(v4_record(1), {.scitags_experiment = 2, .scitags_activity = 2});
  w.flush();
  std::map<std::uint16_t, std::vector<Spec>> t;
  Decoded d = decode(c.messages.at(0), t);
  ASSERT_EQ(d.records.size(), 3u);
  const std::pair<std::uint16_t, std::uint32_t> exp{kIpfixScitagExperimentId, kIpfixCesnetPen},
      act{kIpfixScitagExperimentAct, kIpfixCesnetPen};
  ASSERT_TRUE(d.records[0].count(exp));
  EXPECT_EQ(d.records[0].at(exp).size(), 2u);  // unsigned16, as CESNET defines it
  EXPECT_EQ(d.records[0].at(act).size(), 1u);  // unsigned8
  EXPECT_EQ(num(d.records[0], exp.first, exp.second), 300u);
  EXPECT_EQ(num(d.records[0], act.first, act.second), 9u);
  EXPECT_EQ(num(d.records[1], exp.first, exp.second), 0u);
  EXPECT_EQ(num(d.records[1], act.first, act.second), 0u);
  EXPECT_FALSE(d.records[2].count(exp)) << "Scitags elements in the IPv4 template";
  // The template names the elements with the enterprise bit and PEN 8057.
  const auto& specs = t.at(kIpfixTemplateV6);
  EXPECT_TRUE(std::any_of(specs.begin(), specs.end(), [](const Spec& s) {
    return s.id == kIpfixScitagExperimentId && s.pen == 8057 && s.length == 2;
  }));
}

TEST(Ipfix, NanosecondTimesInNtpFormat) {
  // Exact both ways over the whole fraction range, and at the epochs.
  EXPECT_EQ(nanos_to_ntp(0), std::uint64_t{2'208'988'800} << 32);
  EXPECT_EQ(nanos_to_ntp(500'000'000), std::uint64_t{2'208'988'800} << 32 | 0x80000000u);
  for (std::int64_t ns :
       {std::int64_t{0}, std::int64_t{1}, std::int64_t{999'999'999},
        std::int64_t{1'700'000'000'123'456'789}, std::int64_t{1'700'000'000'999'999'999},
        std::int64_t{-1}, std::int64_t{-1'500'000'000}, std::int64_t{2'085'978'495'999'999'999}})
    EXPECT_EQ(ntp_to_nanos(nanos_to_ntp(ns)), ns) << ns;
  for (std::int64_t sub = 0; sub < 1'000'000'000; sub += 999'983)
    ASSERT_EQ(ntp_to_nanos(nanos_to_ntp(1'700'000'000'000'000'000 + sub)),
              1'700'000'000'000'000'000 + sub);

  Capture c;
  IpfixWriter w({.nanoseconds = true, .now = {}}, c.sink());
  w.add(v4_record(0));
  w.flush();
  std::map<std::uint16_t, std::vector<Spec>> t;
  Decoded d = decode(c.messages.at(0), t);
  ASSERT_EQ(d.records.size(), 1u);
  EXPECT_FALSE(d.records[0].count({152, 0}));
  EXPECT_FALSE(d.records[0].count({153, 0}));
  EXPECT_EQ(ntp_to_nanos(num(d.records[0], 156)), 1'700'000'000'123'456'789);
  EXPECT_EQ(ntp_to_nanos(num(d.records[0], 157)), 1'700'000'005'987'654'321);
  EXPECT_EQ(num(d.records[0], 156) >> 32, 1'700'000'000u + 2'208'988'800u);
}

TEST(Ipfix, EveryOptionFitsTheSmallestMessage) {
  for (const bool uniflow : {false, true}) {
    Capture c;
    IpfixWriter w({.max_message_size = 512,
                   .uniflow = uniflow,
                   .flow_label = true,
                   .scitags = true,
                   .nanoseconds = true,
                   .template_refresh_messages = 1,
                   .now = {}},
                  c.sink());
    FlowRecord r6 = v4_record(0);
    r6.ip_version = 6;
    r6.sip = *IpAddress::parse("2001:db8::1");
    r6.dip = *IpAddress::parse("2001:db8::2");
    for (int i = 0; i < 50; ++i) w.add(i % 2 ? r6 : v4_record(static_cast<std::uint32_t>(i)));
    w.flush();
    std::map<std::uint16_t, std::vector<Spec>> t;
    std::size_t n = 0;
    for (const auto& m : c.messages) {
      EXPECT_LE(m.size(), 512u);
      Decoded d = decode(m, t);
      EXPECT_EQ(d.template_sets, 1);
      n += d.records.size();
    }
    EXPECT_EQ(n, uniflow ? 100u : 50u);
  }
}

TEST(Ipfix, TemplatesRefreshedEveryNMessagesAndSSeconds) {
  Capture c;
  IpfixWriter w({.max_message_size = 600, .template_refresh_messages = 3, .now = {}}, c.sink());
  for (int i = 0; i < 200; ++i) w.add(v4_record(static_cast<std::uint32_t>(i)));
  w.flush();
  ASSERT_GT(c.messages.size(), 10u);
  std::map<std::uint16_t, std::vector<Spec>> t;
  for (std::size_t i = 0; i < c.messages.size(); ++i) {
    Decoded d = decode(c.messages[i], t);
    EXPECT_EQ(d.template_sets, i % 3 == 0 ? 1 : 0) << "message " << i;
    EXPECT_LE(c.messages[i].size(), 600u);
  }
  std::uint32_t clock = 1000;
  Capture s;
  IpfixWriter ws({.template_refresh_seconds = 60, .now = [&clock] { return clock; }}, s.sink());
  ws.add(v4_record(0));
  ws.flush();
  clock += 59;
  ws.add(v4_record(1));
  ws.flush();
  clock += 1;
  ws.add(v4_record(2));
  ws.flush();
  ASSERT_EQ(s.messages.size(), 3u);
  std::map<std::uint16_t, std::vector<Spec>> st;
  EXPECT_EQ(decode(s.messages[0], st).template_sets, 1);
  EXPECT_EQ(decode(s.messages[1], st).template_sets, 0);
  EXPECT_EQ(decode(s.messages[2], st).template_sets, 1);
}

TEST(Ipfix, NothingWrittenWithoutRecords) {
  Capture c;
  IpfixWriter w({}, c.sink());
  w.flush();
  EXPECT_TRUE(c.messages.empty());
}

}  // namespace
}  // namespace flowmark::observe
