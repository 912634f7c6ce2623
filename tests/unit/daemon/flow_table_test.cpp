// FlowTable, the pipeline's flat live-flow table: against a node-based map and a list kept
// the obvious way, through random inserts, lookups, touches and erasures (the index's
// backward-shift erasure, growth, reuse of ids, memory given back when it empties).
#include "flowmark/daemon/flow_table.hpp"

#include <gtest/gtest.h>

#include <list>
#include <map>
#include <random>

namespace flowmark::daemon {
namespace {

FlowKey key(std::uint32_t i, bool v6 = false) {
  FlowKey k;
  k.protocol = (i & 1) ? scitags::Protocol::kUdp : scitags::Protocol::kTcp;
  if (v6) {
    in6_addr a{};
    a.s6_addr[0] = 0x20;
    a.s6_addr[1] = 0x01;
    a.s6_addr[12] = static_cast<std::uint8_t>(i >> 24);
    a.s6_addr[13] = static_cast<std::uint8_t>(i >> 16);
    a.s6_addr[14] = static_cast<std::uint8_t>(i >> 8);
    a.s6_addr[15] = static_cast<std::uint8_t>(i);
    k.src = {IpAddress::v6(a), static_cast<std::uint16_t>(1024 + i % 7)};
    k.dst = {*IpAddress::parse("2001:db8::1"), 443};
  } else {
    k.src = {IpAddress::v4(0x0A000000u + (i >> 3)), static_cast<std::uint16_t>(1024 + (i & 7))};
    k.dst = {IpAddress::v4(0xC0000201u), 443};
  }
  return k;
}

TEST(FlowTable, FindsWhatWasInsertedAndNothingElse) {
  FlowTable t;
  EXPECT_EQ(t.find(key(1)), FlowTable::kNone);
  const auto a = t.insert(key(1));
  const auto b = t.insert(key(2, true));
  t[a].start_time = 11;
  t[b].start_time = 22;
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.find(key(1)), a);
  EXPECT_EQ(t.find(key(2, true)), b);
  EXPECT_EQ(t.find(key(2)), FlowTable::kNone);  // same numbers, IPv4: another key
  EXPECT_EQ(t.key(a), key(1));
  EXPECT_EQ(t.key(b), key(2, true));
  EXPECT_EQ(t[t.find(key(2, true))].start_time, 22);
  EXPECT_EQ(t.oldest(), a);
  EXPECT_EQ(t.newest(), b);
  t.touch(a);
  EXPECT_EQ(t.oldest(), b);
  EXPECT_EQ(t.newer(b), a);
  EXPECT_EQ(t.newer(a), FlowTable::kNone);
  t.erase(b);
  EXPECT_EQ(t.find(key(2, true)), FlowTable::kNone);
  EXPECT_EQ(t.oldest(), a);
  EXPECT_EQ(t.newest(), a);
  t.erase(a);
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.oldest(), FlowTable::kNone);
  EXPECT_EQ(t.find(key(1)), FlowTable::kNone);
}

TEST(FlowTable, KeepsAUsageOnlyForTheFlowsThatHaveOne) {
  FlowTable t;
  const auto a = t.insert(key(1));
  const auto b = t.insert(key(2));
  EXPECT_EQ(t.usage(a), std::nullopt);
  t.set_usage(a, scitags::Usage{10, 20});
  t.set_usage(b, scitags::Usage{30, 40});
  EXPECT_EQ(t.usage(a), (scitags::Usage{10, 20}));
  EXPECT_EQ(t.usage(b), (scitags::Usage{30, 40}));
  t.set_usage(a, scitags::Usage{11, 21});
  EXPECT_EQ(t.usage(a), (scitags::Usage{11, 21}));
  t.set_usage(b, std::nullopt);
  EXPECT_EQ(t.usage(b), std::nullopt);
  t.erase(a);
  const auto c = t.insert(key(3));  // a's entry again: none of a's usage
  EXPECT_EQ(t.usage(c), std::nullopt);
  t.set_usage(c, scitags::Usage{5, 6});
  EXPECT_EQ(t.usage(c), (scitags::Usage{5, 6}));
  EXPECT_EQ(t.usage(b), std::nullopt);
}

TEST(FlowTable, KeepsTheScopeOfLinkScopedAddressesButDoesNotCompareIt) {
  FlowTable t;
  FlowKey k;
  k.src = *Endpoint::parse("[fe80::1%1]:5000");
  k.dst = *Endpoint::parse("[fe80::2]:80");
  ASSERT_EQ(k.src.address.scope_id(), 1u);
  const auto id = t.insert(k);
  EXPECT_EQ(t.key(id).src.address.scope_id(), 1u);
  EXPECT_EQ(t.key(id).dst.address.scope_id(), 0u);
  FlowKey other = k;
  other.src.address.set_scope_id(7);  // as FlowKey's ==: the scope is not part of the key
  EXPECT_EQ(t.find(other), id);
  t.erase(id);
  const auto again = t.insert(key(3));
  EXPECT_EQ(t.key(again).src.address.scope_id(), 0u);
}

TEST(FlowTable, AgreesWithAMapThroughRandomOperations) {
  FlowTable t;
  std::map<FlowKey, std::pair<FlowTable::Id, Micros>> model;
  std::list<FlowKey> order;  // oldest first
  std::map<FlowKey, std::list<FlowKey>::iterator> place;
  std::mt19937 rng(18);
  Micros stamp = 0;
  auto check_order = [&] {
    auto it = order.begin();
    for (auto id = t.oldest(); id != FlowTable::kNone; id = t.newer(id), ++it) {
      ASSERT_NE(it, order.end());
      ASSERT_EQ(t.key(id), *it);
    }
    ASSERT_EQ(it, order.end());
  };
  // Grows to ~30,000 flows (several index doublings and chunks), then shrinks to empty.
  for (int round = 0; round < 200'000; ++round) {
    const bool shrinking = round >= 120'000;
    const auto i = static_cast<std::uint32_t>(rng() % 40'000);
    const FlowKey k = key(i, (i % 5) == 0);
    const auto found = t.find(k);
    auto m = model.find(k);
    ASSERT_EQ(found != FlowTable::kNone, m != model.end()) << "round " << round;
    if (m != model.end()) {
      ASSERT_EQ(found, m->second.first);
      ASSERT_EQ(t[found].start_time, m->second.second);
      if (m->second.second % 3 == 0) {
        ASSERT_EQ(t.usage(found),
                  (scitags::Usage{1, static_cast<std::uint64_t>(m->second.second)}));
      } else {
        ASSERT_EQ(t.usage(found), std::nullopt);
      }
      if (shrinking || rng() % 3 == 0) {
        t.erase(found);
        order.erase(place.at(k));
        place.erase(k);
        model.erase(m);
      } else {
        t.touch(found);
        order.splice(order.end(), order, place.at(k));
      }
    } else if (!shrinking) {
      const auto id = t.insert(k);
      t[id].start_time = ++stamp;
      if (stamp % 3 == 0) t.set_usage(id, scitags::Usage{1, static_cast<std::uint64_t>(stamp)});
      model.emplace(k, std::pair(id, stamp));
      place[k] = order.insert(order.end(), k);
    }
    ASSERT_EQ(t.size(), model.size());
    if (round % 20'000 == 0) check_order();
  }
  // What is left, then nothing.
  check_order();
  while (t.oldest() != FlowTable::kNone) {
    const auto id = t.oldest();
    ASSERT_EQ(model.count(t.key(id)), 1u);
    model.erase(t.key(id));
    t.erase(id);
  }
  EXPECT_TRUE(model.empty());
  EXPECT_EQ(t.size(), 0u);
  // Usable again after it gave its memory back.
  const auto id = t.insert(key(5));
  EXPECT_EQ(t.find(key(5)), id);
}

}  // namespace
}  // namespace flowmark::daemon
