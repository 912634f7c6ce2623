// FlowTable, the pipeline's flat live-flow table: against a node-based map and a list kept
// the obvious way, through random inserts, lookups, touches and erasures (the index's
// backward-shift erasure, growth, reuse of ids, memory given back when it empties); its times
// (48-bit offsets from a base, the rest in a side map) and classes exact whatever their value.
#include "flowmark/daemon/flow_table.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <list>
#include <map>
#include <random>

namespace flowmark::daemon {
namespace {

constexpr Micros kNow = 1'796'000'000'000'000;  // 2026-12-01, in microseconds
constexpr Micros kDay = 86'400'000'000;

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
  const auto a = t.insert(key(1), kNow);
  const auto b = t.insert(key(2, true), kNow + 1);
  EXPECT_EQ(t.start_time(a), kNow);  // until set
  t.set_start_time(a, kNow - 11);
  t.set_start_time(b, kNow - 22);
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.find(key(1)), a);
  EXPECT_EQ(t.find(key(2, true)), b);
  EXPECT_EQ(t.find(key(2)), FlowTable::kNone);  // same numbers, IPv4: another key
  EXPECT_EQ(t.key(a), key(1));
  EXPECT_EQ(t.key(b), key(2, true));
  EXPECT_EQ(t.start_time(t.find(key(2, true))), kNow - 22);
  EXPECT_EQ(t.last_event(b), kNow + 1);
  EXPECT_EQ(t.oldest(), a);
  EXPECT_EQ(t.newest(), b);
  t.touch(a, kNow + 5);
  EXPECT_EQ(t.last_event(a), kNow + 5);
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
  const auto a = t.insert(key(1), kNow);
  const auto b = t.insert(key(2), kNow);
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
  const auto c = t.insert(key(3), kNow);  // a's entry again: none of a's usage
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
  const auto id = t.insert(k, kNow);
  EXPECT_EQ(t.key(id).src.address.scope_id(), 1u);
  EXPECT_EQ(t.key(id).dst.address.scope_id(), 0u);
  FlowKey other = k;
  other.src.address.set_scope_id(7);  // as FlowKey's ==: the scope is not part of the key
  EXPECT_EQ(t.find(other), id);
  t.erase(id);
  const auto again = t.insert(key(3), kNow);
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
      ASSERT_EQ(t.start_time(found), m->second.second);
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
        t.touch(found, kNow + round);
        order.splice(order.end(), order, place.at(k));
      }
    } else if (!shrinking) {
      const auto id = t.insert(k, kNow + round);
      t.set_start_time(id, kNow - 1000 + ++stamp);
      const Micros started = kNow - 1000 + stamp;
      if (started % 3 == 0) {
        t.set_usage(id, scitags::Usage{1, static_cast<std::uint64_t>(started)});
      }
      model.emplace(k, std::pair(id, kNow - 1000 + stamp));
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
  const auto id = t.insert(key(5), kNow);
  EXPECT_EQ(t.find(key(5)), id);
}

TEST(FlowTable, KeepsStartTimesExactlyWhateverTheirDistanceFromTheBase) {
  FlowTable t;
  const auto a = t.insert(key(1), kNow);  // the base
  constexpr Micros kMin = std::numeric_limits<Micros>::min();
  constexpr Micros kMax = std::numeric_limits<Micros>::max();
  // Inline up to kTimeRange either way; beyond, in the side map; back inline frees it.
  const std::pair<Micros, bool> cases[] = {
      {kNow, false},
      {kNow - 1, false},
      {kNow + FlowTable::kTimeRange - 1, false},
      {kNow - FlowTable::kTimeRange, false},
      {kNow + FlowTable::kTimeRange, true},
      {kNow - FlowTable::kTimeRange - 1, true},
      {0, true},  // 1970
      {1, true},
      {-1, true},
      {kMin, true},
      {kMax, true},
      {kNow - 1000 * kDay, false},
      {kNow + 1000 * kDay, false},
  };
  for (const auto& [when, outside] : cases) {
    t.set_start_time(a, when);
    EXPECT_EQ(t.start_time(a), when);
    EXPECT_EQ(t.spilled(), outside ? 1u : 0u) << when;
    EXPECT_EQ(t.last_event(a), kNow);
  }
  t.erase(a);
  EXPECT_EQ(t.spilled(), 0u);
}

TEST(FlowTable, ALongLivedFlowKeepsItsTimesExactlyForYears) {
  FlowTable t;
  const auto old = t.insert(key(1), kNow);
  t.set_start_time(old, kNow - 3);
  // Ten years of activity, a flow of a day every day beside it (the table never empties, so
  // its base stays): the times leave the inline range after 4.46 years, and stay exact.
  Micros now = kNow;
  for (int day = 1; day <= 3653; ++day) {
    now = kNow + day * kDay + day;  // not a multiple of anything
    const auto daily = t.insert(key(2 + static_cast<std::uint32_t>(day)), now - kDay / 2);
    t.set_start_time(daily, now - kDay / 2 - 7);
    t.touch(old, now);
    ASSERT_EQ(t.last_event(old), now);
    ASSERT_EQ(t.start_time(old), kNow - 3);
    ASSERT_EQ(t.start_time(daily), now - kDay / 2 - 7);
    ASSERT_EQ(t.last_event(daily), now - kDay / 2);
    ASSERT_EQ(t.oldest(), daily);  // the old flow was touched after it
    // Each flow whose times passed kTimeRange from the base (kNow) has its side-map entry.
    const auto spilled = (now - kNow >= FlowTable::kTimeRange ? 1u : 0u) +
                         (now - kDay / 2 - kNow >= FlowTable::kTimeRange ? 1u : 0u);
    ASSERT_EQ(t.spilled(), spilled) << "day " << day;
    t.erase(daily);
  }
  EXPECT_EQ(t.start_time(old), kNow - 3);
  EXPECT_EQ(t.last_event(old), now);
  // Empty again: the next insert is the base, its times inline.
  t.erase(old);
  const auto next = t.insert(key(1), now);
  t.set_start_time(next, now - 1);
  EXPECT_EQ(t.spilled(), 0u);
  EXPECT_EQ(t.start_time(next), now - 1);
  EXPECT_EQ(t.last_event(next), now);
}

TEST(FlowTable, KeepsClassesBeyondTheFlowLabelsBits) {
  FlowTable t;
  const auto a = t.insert(key(1), kNow);
  EXPECT_EQ(t.experiment(a), 0u);
  EXPECT_EQ(t.activity(a), 0u);
  t.set_class(a, 511, 63);  // the flow label's 9 and 6 bits: inline
  EXPECT_EQ(t.experiment(a), 511u);
  EXPECT_EQ(t.activity(a), 63u);
  EXPECT_EQ(t.spilled(), 0u);
  t.set_class(a, 512, 1);  // a firefly's experiment-id may be any 32-bit number
  EXPECT_EQ(t.experiment(a), 512u);
  EXPECT_EQ(t.activity(a), 1u);
  EXPECT_EQ(t.spilled(), 1u);
  t.set_class(a, 2, 64);
  EXPECT_EQ(t.experiment(a), 2u);
  EXPECT_EQ(t.activity(a), 64u);
  t.set_class(a, std::numeric_limits<std::uint32_t>::max(), 7);
  EXPECT_EQ(t.experiment(a), std::numeric_limits<std::uint32_t>::max());
  EXPECT_EQ(t.activity(a), 7u);
  t.set_class(a, 3, 4);
  EXPECT_EQ(t.experiment(a), 3u);
  EXPECT_EQ(t.activity(a), 4u);
  EXPECT_EQ(t.spilled(), 0u);
  // The class, the holders and the usage are not part of the key.
  t.holders(a) = 0x80000001u;
  t.set_usage(a, scitags::Usage{1, 2});
  EXPECT_EQ(t.find(key(1)), a);
  EXPECT_EQ(t.holders(a), 0x80000001u);
  EXPECT_EQ(t.key(a), key(1));
  // A reused entry starts clean.
  t.erase(a);
  const auto b = t.insert(key(2), kNow);
  EXPECT_EQ(t.experiment(b), 0u);
  EXPECT_EQ(t.holders(b), 0u);
  EXPECT_EQ(t.usage(b), std::nullopt);
}

}  // namespace
}  // namespace flowmark::daemon
