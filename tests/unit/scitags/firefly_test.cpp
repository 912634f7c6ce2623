#include "flowmark/scitags/firefly.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace flowmark::scitags {
namespace {

std::string read_data(const std::string& name) {
  std::ifstream in(std::string(FLOWMARK_TEST_DATA) + "/fireflies/" + name);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

constexpr Micros kStart = 1742896800'123456;  // 2025-03-25T10:00:00.123456Z

FlowEvent spec_event() {
  FlowEvent e;
  e.state = FlowState::kStart;
  e.protocol = Protocol::kTcp;
  e.src = *Endpoint::parse("192.168.0.1:2345");
  e.dst = *Endpoint::parse("192.168.0.2:5777");
  e.experiment = 1;
  e.activity = 2;
  e.start_time = kStart;
  e.current_time = kStart;
  return e;
}

// The three forms the spec names decode to the same event.
TEST(FireflyGolden, PythonGoAndBareFormsAgree) {
  FireflyDecoder dec;
  struct Form {
    const char* file;
    bool header;
    const char* host;
    const char* application;
    Micros header_time;
  };
  for (const Form f : {Form{"python_start.txt", true, "host.example.org", "flowd v1.1.0", kStart},
                       Form{"go_start.txt", true, "host.example.org", "flowd-go", 0},
                       Form{"bare_start.json", false, "", "", 0}}) {
    const std::string wire = read_data(f.file);
    ASSERT_FALSE(wire.empty()) << f.file;
    auto r = dec.decode(wire);
    ASSERT_TRUE(r.has_value()) << f.file << ": " << r.error().detail;
    const Firefly& ff = **r;
    EXPECT_EQ(ff.event, spec_event()) << f.file;
    EXPECT_EQ(ff.has_header, f.header) << f.file;
    EXPECT_EQ(ff.hostname, f.host) << f.file;
    EXPECT_EQ(ff.application, f.application) << f.file;
    EXPECT_EQ(ff.header_time, f.header_time) << f.file;
    EXPECT_TRUE(ff.extra.empty());
  }
}

TEST(FireflyGolden, XrootdStyleKeepsExtraObjectsAndUsage) {
  FireflyDecoder dec;
  auto r = dec.decode(read_data("xrootd_end_ipv6.json"));
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  const FlowEvent& e = (*r)->event;
  EXPECT_EQ(e.state, FlowState::kEnd);
  EXPECT_EQ(e.src.to_string(), "[2001:db8::1]:1094");
  EXPECT_EQ(e.dst.port, 40412);
  EXPECT_EQ(e.experiment, 2u);
  EXPECT_EQ(e.activity, 3u);
  EXPECT_EQ(e.start_time, kStart);
  EXPECT_EQ(e.end_time, 1742897100'000000);
  ASSERT_TRUE(e.usage.has_value());
  EXPECT_EQ(e.usage->sent, 107374182400u);
  EXPECT_EQ(e.usage->received, 1024u);
  ASSERT_EQ((*r)->extra.size(), 1u);
  EXPECT_EQ((*r)->extra[0].first, "storage-stats");
  EXPECT_EQ((*r)->extra[0].second,
            R"({"read":{"bytes":107374182400,"ops":412},"lfn":"/atlas/data/file.root"})");
  // Printing keeps them too.
  std::string out;
  append_firefly_json(out, **r);
  EXPECT_NE(out.find(R"("storage-stats":{"read")"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("usage":{"received":1024,"sent":107374182400})"), std::string::npos);
}

TEST(FireflyEncoder, ExactWireForm) {
  FireflyEncoder enc(
      {.hostname = "host.example.org", .app_name = "flowmark", .application = "flowmark 0.1.0"});
  auto w = enc.encode(spec_event(), kStart);
  ASSERT_TRUE(w.has_value()) << w.error().message();
  EXPECT_EQ(*w,
            "<134>1 2025-03-25T10:00:00.123456+00:00 host.example.org flowmark - firefly-json - "
            R"({"version":1,"flow-lifecycle":{"state":"start",)"
            R"("current-time":"2025-03-25T10:00:00.123456+00:00",)"
            R"("start-time":"2025-03-25T10:00:00.123456+00:00"},)"
            R"("flow-id":{"afi":"ipv4","src-ip":"192.168.0.1","dst-ip":"192.168.0.2",)"
            R"("protocol":"tcp","src-port":2345,"dst-port":5777},)"
            R"("context":{"experiment-id":1,"activity-id":2,"application":"flowmark 0.1.0"}})");
}

TEST(FireflyEncoder, RoundTripsEveryShape) {
  FireflyEncoder enc({.hostname = "h"});
  FireflyEncoder bare({.hostname = "h", .syslog_header = false});
  FireflyDecoder dec;
  FlowEvent end = spec_event();
  end.state = FlowState::kEnd;
  end.end_time = kStart + 5'000'000;
  end.usage = Usage{10, 20};
  FlowEvent v6 = spec_event();
  v6.protocol = Protocol::kUdp;
  v6.src = *Endpoint::parse("[2001:db8::1]:65535");
  v6.dst = *Endpoint::parse("[2001:db8::2]:1");
  v6.state = FlowState::kOngoing;
  v6.tcp = TcpInfo{};
  v6.tcp->rtt_us = 1234;
  for (const FlowEvent& e : {spec_event(), end, v6}) {
    for (FireflyEncoder* en : {&enc, &bare}) {
      auto w = en->encode(e, kStart + 1);
      ASSERT_TRUE(w.has_value()) << w.error().message();
      auto r = dec.decode(*w);
      ASSERT_TRUE(r.has_value()) << r.error().detail << "\n" << *w;
      FlowEvent want = e;
      want.tcp.reset();  // TCP information travels as "netlink", kept as an extra object
      EXPECT_EQ((*r)->event, want) << *w;
      EXPECT_EQ((*r)->extra.size(), e.tcp ? 1u : 0u);
    }
  }
}

TEST(FireflyEncoder, RefusesWhatWouldBreakTheSchema) {
  FireflyEncoder enc({.hostname = "h"});
  FlowEvent e = spec_event();
  e.src.port = 0;
  EXPECT_FALSE(enc.encode(e, kStart).has_value());
  e = spec_event();
  e.start_time = 0;
  auto no_start = enc.encode(e, kStart);
  ASSERT_FALSE(no_start.has_value());
  EXPECT_NE(no_start.error().message().find("no start time"), std::string::npos);
  e = spec_event();
  e.state = FlowState::kEnd;
  EXPECT_FALSE(enc.encode(e, kStart).has_value());  // no end time
  e = spec_event();
  e.dst = *Endpoint::parse("[2001:db8::2]:80");
  EXPECT_FALSE(enc.encode(e, kStart).has_value());
}

// encode_to appends to a send buffer exactly what encode returns, after what it holds; an
// event that breaks the schema leaves the buffer as it was.
TEST(FireflyEncoder, EncodeToAppendsTheSameBytes) {
  FireflyEncoder enc({.hostname = "h"});
  FlowEvent end = spec_event();
  end.state = FlowState::kEnd;
  end.end_time = kStart + 5'000'000;
  end.usage = Usage{10, 20};
  std::string buffer = "earlier datagrams";
  std::string want = buffer;
  for (const FlowEvent& e : {spec_event(), end, spec_event()}) {
    auto size = enc.encode_to(buffer, e, kStart + 7);
    ASSERT_TRUE(size.has_value()) << size.error().message();
    const std::string wire(*enc.encode(e, kStart + 7));
    EXPECT_EQ(*size, wire.size());
    want += wire;
    EXPECT_EQ(buffer, want);
  }
  FlowEvent bad = spec_event();
  bad.src.port = 0;
  EXPECT_FALSE(enc.encode_to(buffer, bad, kStart).has_value());
  EXPECT_EQ(buffer, want);
  TcpDetail detail{};
  detail.rtt = 1500;
  auto shaped = enc.encode_to(buffer, spec_event(), kStart, detail, EnrichmentShape::kLean);
  ASSERT_TRUE(shaped.has_value());
  EXPECT_EQ(buffer.substr(want.size()),
            *enc.encode(spec_event(), kStart, detail, EnrichmentShape::kLean));
}

// One rejecting case for each rule of the schema (and of the envelope).
TEST(FireflyDecoder, EveryRuleHasARejectingCase) {
  const std::string lc =
      R"("flow-lifecycle":{"state":"start","start-time":"2025-03-25T10:00:00Z"})";
  const std::string id =
      R"("flow-id":{"afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,"dst-port":2})";
  const std::string ctx = R"("context":{"experiment-id":1,"activity-id":2})";
  auto doc = [&](std::string a, std::string b, std::string c, std::string more = "") {
    return "{" + a + "," + b + "," + c + more + "}";
  };
  auto with_id = [&](std::string fields) { return doc(lc, R"("flow-id":{)" + fields + "}", ctx); };
  const std::string ok_id_fields =
      R"("afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1)";
  struct Case {
    std::string wire;
    Reject want;
    const char* detail_part;
  };
  const Case cases[] = {
      {"   \n", Reject::kEmpty, "empty"},
      {"hello", Reject::kBadHeader, "neither"},
      {"<999>1 - h a - firefly-json - {}", Reject::kBadHeader, "PRI"},
      {"<134>2 - h a - firefly-json - {}", Reject::kBadHeader, "VERSION"},
      {"<134>1 - h a - syslog-json - {}", Reject::kBadHeader, "MSGID"},
      {"<134>1 yesterday h a - firefly-json - {}", Reject::kBadHeader, "TIMESTAMP"},
      {"<134>1 - h a", Reject::kBadHeader, "cut short"},
      {"<134>1 - h a - firefly-json - -", Reject::kNotJson, "no JSON"},
      {"{\"version\":1,", Reject::kNotJson, "not JSON"},
      {"[1,2]", Reject::kBadHeader, "neither"},
      {doc(lc, id, ctx, R"(,"version":2)"), Reject::kBadVersion, "version"},
      {doc(id, ctx, R"("x":1)"), Reject::kMissingField, "flow-lifecycle"},
      {doc(lc, ctx, R"("x":1)"), Reject::kMissingField, "flow-id"},
      {doc(lc, id, R"("x":1)"), Reject::kMissingField, "context"},
      {doc(R"("flow-lifecycle":[])", id, ctx), Reject::kNotObject, "flow-lifecycle"},
      {doc(R"("flow-lifecycle":{"start-time":"2025-03-25T10:00:00Z"})", id, ctx),
       Reject::kMissingField, "flow-lifecycle.state"},
      {doc(R"("flow-lifecycle":{"state":"begin","start-time":"2025-03-25T10:00:00Z"})", id, ctx),
       Reject::kUnknownState, "begin"},
      {doc(R"("flow-lifecycle":{"state":1,"start-time":"2025-03-25T10:00:00Z"})", id, ctx),
       Reject::kWrongType, "flow-lifecycle.state"},
      {doc(R"("flow-lifecycle":{"state":"start"})", id, ctx), Reject::kMissingField, "start-time"},
      {doc(R"("flow-lifecycle":{"state":"end","start-time":null})", id, ctx), Reject::kBadTime,
       "start-time"},
      {doc(R"("flow-lifecycle":{"state":"end","start-time":""})", id, ctx), Reject::kBadTime,
       "start-time"},
      {doc(R"("flow-lifecycle":{"state":"end","start-time":"2025-03-25T10:00:00Z"})", id, ctx),
       Reject::kMissingEndTime, "end-time"},
      {doc(R"("flow-lifecycle":{"state":"start","start-time":"2025-03-25T10:00:00Z","x":1})", id,
           ctx),
       Reject::kUnknownKey, "'x'"},
      {with_id(ok_id_fields), Reject::kMissingField, "flow-id.dst-port"},
      {with_id(ok_id_fields + R"(,"dst-port":0)"), Reject::kPortOutOfRange, "dst-port"},
      {with_id(ok_id_fields + R"(,"dst-port":65536)"), Reject::kPortOutOfRange, "65536"},
      {with_id(ok_id_fields + R"(,"dst-port":-5)"), Reject::kPortOutOfRange, "-5"},
      {with_id(ok_id_fields + R"(,"dst-port":"80")"), Reject::kWrongType, "dst-port"},
      {with_id(ok_id_fields + R"(,"dst-port":8.5)"), Reject::kWrongType, "dst-port"},
      {with_id(ok_id_fields + R"(,"dst-port":2,"vlan":3)"), Reject::kUnknownKey, "vlan"},
      {with_id(
           R"("afi":"ipv5","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,"dst-port":2)"),
       Reject::kUnknownAfi, "ipv5"},
      {with_id(
           R"("afi":"ipv6","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,"dst-port":2)"),
       Reject::kAfiMismatch, "src-ip"},
      {with_id(
           R"("afi":"ipv4","src-ip":"10.0.0.300","dst-ip":"10.0.0.2","protocol":"tcp","src-port":1,"dst-port":2)"),
       Reject::kBadAddress, "10.0.0.300"},
      {with_id(
           R"("afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"sctp","src-port":1,"dst-port":2)"),
       Reject::kUnknownProtocol, "sctp"},
      {doc(lc, id, R"("context":{"experiment-id":-1,"activity-id":2})"), Reject::kBadNumber,
       "experiment-id"},
      {doc(lc, id, R"("context":{"experiment-id":"atlas","activity-id":2})"), Reject::kWrongType,
       "experiment-id"},
      {doc(lc, id, R"("context":{"experiment-id":1})"), Reject::kMissingField, "activity-id"},
      {doc(lc, id, R"("context":{"experiment-id":1,"activity-id":2,"user":"x"})"),
       Reject::kUnknownKey, "user"},
      {doc(lc, id, ctx, R"(,"usage":{"sent":-1})"), Reject::kBadNumber, "usage.sent"},
      {doc(lc, id, ctx, R"(,"usage":{"sent":1,"lost":2})"), Reject::kUnknownKey, "lost"},
      {doc(lc, id, ctx, R"(,"usage":5)"), Reject::kNotObject, "usage"},
      {doc(R"("flow-lifecycle":{"state":"start","start-time":"25/03/2025"})", id, ctx),
       Reject::kBadTime, "RFC 3339"},
      {std::string(FireflyDecoder::kMaxSize + 1, '{'), Reject::kTooLarge, "bytes"},
  };
  FireflyDecoder dec;
  bool seen[kRejectKinds] = {};
  for (const auto& c : cases) {
    auto r = dec.decode(c.wire);
    ASSERT_FALSE(r.has_value()) << c.wire;
    EXPECT_EQ(r.error().reason, c.want)
        << c.wire << "\n got " << to_string(r.error().reason) << ": " << r.error().detail;
    EXPECT_NE(r.error().detail.find(c.detail_part), std::string::npos)
        << c.wire << "\n detail: " << r.error().detail;
    seen[static_cast<std::size_t>(r.error().reason)] = true;
  }
  for (std::size_t i = 0; i < kRejectKinds; ++i)
    EXPECT_TRUE(seen[i]) << "no rejecting case for " << to_string(static_cast<Reject>(i));
  // And the same decoder still accepts a good one afterwards.
  EXPECT_TRUE(dec.decode(doc(lc, id, ctx)).has_value());
}

TEST(FireflyDecoder, LenientStartTimeForFlowdEndEvents) {
  FireflyDecoder dec({.lenient_start_time = true});
  auto r = dec.decode(
      R"({"flow-lifecycle":{"state":"end","start-time":null,"end-time":"2025-03-25T10:00:00Z"},)"
      R"("flow-id":{"afi":"ipv4","src-ip":"10.0.0.1","dst-ip":"10.0.0.2","protocol":"tcp",)"
      R"("src-port":1,"dst-port":2},"context":{"experiment-id":1,"activity-id":2},)"
      R"("netlink":[]})");
  ASSERT_TRUE(r.has_value()) << r.error().detail;
  EXPECT_EQ((*r)->event.start_time, 0);
  ASSERT_EQ((*r)->extra.size(), 1u);  // flowd's netlink array is kept, not judged
  EXPECT_EQ((*r)->extra[0].second, "[]");
}

TEST(FireflyDecoder, TrailingNewlineAndNulAreFine) {
  FireflyDecoder dec;
  std::string wire = read_data("go_start.txt");
  wire += std::string("\r\n\0", 3);
  EXPECT_TRUE(dec.decode(wire).has_value());
}

}  // namespace
}  // namespace flowmark::scitags
