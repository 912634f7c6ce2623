#include "flowmark/scitags/firefly_listener.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "flowmark/scitags/firefly_commands.hpp"
#include "flowmark/scitags/firefly_sender.hpp"

namespace flowmark::scitags {
namespace {

struct Collect : FireflySink {
  std::vector<FlowEvent> events;
  std::vector<Endpoint> senders;
  std::vector<Reject> rejects;
  int batches = 0;
  void on_firefly(const Endpoint& from, const Firefly& f) override {
    events.push_back(f.event);
    senders.push_back(from);
  }
  void on_reject(const Endpoint&, const Rejection& r) override { rejects.push_back(r.reason); }
  void on_batch_end() override { ++batches; }
};

ListenerConfig loopback() {
  ListenerConfig c;
  c.bind = *IpAddress::parse("127.0.0.1");
  c.port = 0;
  return c;
}

FlowEvent event() {
  FlowEvent e;
  e.src = *Endpoint::parse("192.0.2.1:2345");
  e.dst = *Endpoint::parse("192.0.2.2:5777");
  e.experiment = 2;
  e.activity = 1;
  e.start_time = 1742896800'123456;
  return e;
}

// Loopback, port 0: what is sent is in the socket's queue when sendto returns.
TEST(FireflyListener, DecodesCountsAndRejectsOnLoopback) {
  auto l = FireflyListener::open(loopback());
  ASSERT_TRUE(l.has_value()) << l.error().message();
  const auto local = l->local_endpoints();
  ASSERT_EQ(local.size(), 1u);
  ASSERT_NE(local[0].port, 0);

  FireflyEncoder enc({.hostname = "test"});
  auto wire = enc.encode(event(), 1742896800'000000);
  ASSERT_TRUE(wire.has_value());
  FireflySender tx;
  ASSERT_TRUE(tx.send(local[0], *wire).has_value());
  ASSERT_TRUE(tx.send(local[0], "not json at all").has_value());
  ASSERT_TRUE(tx.send(local[0], R"({"flow-lifecycle":{}})").has_value());
  auto n = tx.send_repeated(local[0], *wire, 100, 0);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 100u);

  Collect sink;
  auto got = l->drain(sink);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(*got, 103u);
  ASSERT_EQ(sink.events.size(), 101u);
  EXPECT_EQ(sink.events[0].src, event().src);
  EXPECT_EQ(sink.events[0].experiment, 2u);
  EXPECT_EQ(sink.senders[0].address.to_string(), "127.0.0.1");
  EXPECT_EQ(sink.rejects, (std::vector<Reject>{Reject::kBadHeader, Reject::kMissingField}));
  EXPECT_GE(sink.batches, 1);

  const ListenerCounts& c = l->counts();
  EXPECT_EQ(c.received, 103u);
  EXPECT_EQ(c.accepted, 101u);
  EXPECT_EQ(c.rejected_total(), 2u);
  std::string json;
  c.append_json(json);
  EXPECT_NE(json.find(R"("type":"stats","received":103,"accepted":101)"), std::string::npos)
      << json;
  EXPECT_NE(json.find(R"("bad_header":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("missing_field":1)"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("not_json":0)"), std::string::npos) << json;

  // Nothing more waiting: an empty drain.
  auto again = l->drain(sink);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 0u);
}

TEST(FireflyListener, StopAfterCurrentLeavesTheRestOfTheBatch) {
  auto l = FireflyListener::open(loopback());
  ASSERT_TRUE(l.has_value()) << l.error().message();
  FireflySender tx;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(tx.send(l->local_endpoints()[0], "x").has_value());
  struct StopAtTwo : FireflySink {
    FireflyListener* l = nullptr;
    int seen = 0;
    void on_firefly(const Endpoint&, const Firefly&) override {}
    void on_reject(const Endpoint&, const Rejection&) override {
      if (++seen == 2) l->stop_after_current();
    }
  } sink;
  sink.l = &*l;
  ASSERT_TRUE(l->drain(sink).has_value());
  EXPECT_EQ(sink.seen, 2);
  EXPECT_EQ(l->counts().received, 2u);
}

TEST(FireflyListener, SourcesNeedAGroup) {
  ListenerConfig c;
  c.port = 0;
  c.sources = {*IpAddress::parse("192.0.2.1")};
  auto l = FireflyListener::open(c);
  ASSERT_FALSE(l.has_value());
  EXPECT_NE(l.error().message().find("--group"), std::string::npos);
}

TEST(FireflyText, OneReadableLine) {
  Firefly f;
  f.event = event();
  f.event.state = FlowState::kEnd;
  f.event.end_time = 1742897100'000000;
  f.event.usage = Usage{1024, 2048};
  f.application = "xrootd";
  std::string out;
  append_firefly_text(out, *Endpoint::parse("10.0.0.1:40000"), f);
  EXPECT_EQ(out,
            "10.0.0.1:40000 end tcp 192.0.2.1:2345 -> 192.0.2.2:5777 exp 2/atlas act 1/default "
            "start 2025-03-25T10:00:00.123456+00:00 end 2025-03-25T10:05:00.000000+00:00 "
            "usage rx 1024 tx 2048 app \"xrootd\"");
}

// Printing a decoded firefly must not invent what the datagram did not carry: no
// current-time (optional in the schema), a null start-time kept as null (--lenient), no
// empty application.
TEST(FireflyJson, PrintingNeverInventsFields) {
  FireflyDecoder dec({.lenient_start_time = true});
  auto r = dec.decode(
      R"({"flow-lifecycle":{"state":"end","start-time":null,"end-time":"2025-03-25T10:00:00Z"},)"
      R"("flow-id":{"afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp",)"
      R"("src-port":1,"dst-port":2},"context":{"experiment-id":1,"activity-id":2}})");
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  std::string out;
  append_firefly_json(out, **r);
  EXPECT_EQ(out, R"({"version":1,"flow-lifecycle":{"state":"end","start-time":null,)"
                 R"("end-time":"2025-03-25T10:00:00.000000+00:00"},"flow-id":{"afi":"ipv4",)"
                 R"("src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,)"
                 R"("dst-port":2},"context":{"experiment-id":1,"activity-id":2}})");
}

// The encoder formats addresses itself (no sprintf); it must write what inet_ntop writes.
TEST(FireflyJson, AddressesAreWrittenAsInetNtopWritesThem) {
  std::mt19937_64 rng(42);
  FireflyEncoder enc({.hostname = "h", .syslog_header = false});
  std::vector<std::array<std::uint8_t, 16>> v6 = {
      {},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1},
      {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1},
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1},
      {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
      {0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a}};
  for (int i = 0; i < 2000; ++i) {
    std::array<std::uint8_t, 16> b{};
    for (auto& x : b) {
      const auto r = rng();
      x = (r & 3) == 0 ? static_cast<std::uint8_t>(r >> 8) : 0;  // many zero runs
    }
    v6.push_back(b);
  }
  for (const auto& b : v6) {
    in6_addr a6;
    std::memcpy(&a6, b.data(), 16);
    char want[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, &a6, want, sizeof want);
    FlowEvent e = event();
    e.src = {IpAddress::v6(a6), 1};
    e.dst = {IpAddress::v6(a6), 2};
    auto w = enc.encode(e, 1742896800'000000);
    ASSERT_TRUE(w.has_value());
    EXPECT_NE(w->find(std::string(R"("src-ip":")") + want + '"'), std::string_view::npos)
        << want << " in " << *w;
  }
  for (int i = 0; i < 2000; ++i) {
    const auto v = static_cast<std::uint32_t>(i < 10 ? i * 0x01010101u : rng());
    FlowEvent e = event();
    e.src = {IpAddress::v4(v), 1};
    auto w = enc.encode(e, 1742896800'000000);
    ASSERT_TRUE(w.has_value());
    const in_addr a4 = e.src.address.in4();
    char want[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a4, want, sizeof want);
    EXPECT_NE(w->find(std::string(R"("src-ip":")") + want + '"'), std::string_view::npos)
        << want << " in " << *w;
  }
}

TEST(FireflySender, PrepareChecksGroups) {
  FireflySender tx;
  auto ll = tx.prepare(*Endpoint::parse("[ff02::1]:10514"));
  ASSERT_FALSE(ll.has_value());
  EXPECT_NE(ll.error().message().find("interface"), std::string::npos) << ll.error().message();
  EXPECT_TRUE(tx.prepare(*Endpoint::parse("239.1.1.1:10514")).has_value());
  EXPECT_FALSE(tx.prepare(*Endpoint::parse("0.0.0.0:10514")).has_value());
}

}  // namespace
}  // namespace flowmark::scitags
