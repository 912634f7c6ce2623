// The api source's POST /flow body: flowd-go's flow event (its own test data, the
// "ADDRESS:PORT" form, names, case-insensitive keys), a firefly document (flowmark's schema),
// and every refusal by reason; the answer in flowd-go's shape.
#include "daemon/sources/api/flow_request.hpp"

#include <gtest/gtest.h>
#include <simdjson.h>

#include <string>

#include "flowmark/core/time.hpp"

namespace flowmark::daemon::api {
namespace {

using scitags::FlowState;
using scitags::Protocol;
using scitags::Registry;

struct Parse {
  FlowRequestParser parser;
  std::expected<FlowRequest, RequestError> operator()(std::string_view body) {
    return parser.parse(body, Registry::builtin());
  }
};

TEST(FlowRequest, FlowdGoStartWithAddressPortStrings) {
  Parse parse;
  auto r = parse(R"({"State": 2, "Protocol": 0, "Family": 2, "Src": "192.0.2.1:2345",
      "Dst": "192.0.2.2:5777", "Experiment": 2, "Activity": 1,
      "StartTs": "2025-02-06T13:21:30.893064962+01:00", "EndTs": "0001-01-01T00:00:00Z",
      "CurrentTs": "0001-01-01T00:00:00Z", "Application": "xrootd"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->shape, RequestShape::kFlowdGo);
  const auto& e = r->event;
  EXPECT_EQ(e.state, FlowState::kStart);
  EXPECT_EQ(e.protocol, Protocol::kTcp);
  EXPECT_EQ(e.src, *Endpoint::parse("192.0.2.1:2345"));
  EXPECT_EQ(e.dst, *Endpoint::parse("192.0.2.2:5777"));
  EXPECT_EQ(e.experiment, 2u);
  EXPECT_EQ(e.activity, 1u);
  EXPECT_EQ(e.start_time, *parse_rfc3339("2025-02-06T12:21:30.893064Z"));
  EXPECT_EQ(e.end_time, 0);  // Go's zero time: not known
  EXPECT_EQ(e.current_time, 0);
  EXPECT_EQ(r->application, "xrootd");
}

TEST(FlowRequest, FlowdGoTestDataEndWithIpPortObjectsAndIdsOutOfRange) {
  Parse parse;
  // flowd-go's plugins/api/testdata/end.json: {"IP", "Port"} objects, ids 65535.
  const std::string end = R"({"State": 3, "Protocol": 0, "Family": 2,
      "Src": {"IP": "127.0.0.1", "Port": 2345}, "Dst": {"IP": "127.0.0.1", "Port": 5777},
      "Experiment": 65535, "Activity": 65535, "StartTs": "0001-01-01T00:00:00Z",
      "EndTs": "2025-02-06T13:21:30.893064962+01:00", "CurrentTs": "0001-01-01T00:00:00Z"})";
  auto r = parse(end);
  ASSERT_FALSE(r);  // 65535 is no scitag experiment
  EXPECT_EQ(r.error().reason, RequestReject::kBadField);
  EXPECT_NE(r.error().message.find("Experiment"), std::string::npos) << r.error().message;
  std::string fixed = end;
  fixed.replace(fixed.find("65535"), 5, "2");
  fixed.replace(fixed.find("65535"), 5, "3");
  r = parse(fixed);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->event.state, FlowState::kEnd);
  EXPECT_EQ(r->event.src, *Endpoint::parse("127.0.0.1:2345"));
  EXPECT_EQ(r->event.end_time, *parse_rfc3339("2025-02-06T12:21:30.893064Z"));
  EXPECT_EQ(r->event.start_time, 0);
  EXPECT_EQ(r->event.activity, 3u);
}

TEST(FlowRequest, FlowdGoIpv6NamesStringsAndAnyCase) {
  Parse parse;
  auto r = parse(R"({"state": "ongoing", "PROTOCOL": 1, "src": "[2001:db8::1]:40000",
      "dst": "[2001:db8::2]:443", "experiment": "atlas", "activity": "perfSONAR",
      "Info": {"whatever": 1}})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->event.state, FlowState::kOngoing);
  EXPECT_EQ(r->event.protocol, Protocol::kUdp);
  EXPECT_EQ(r->event.src, *Endpoint::parse("[2001:db8::1]:40000"));
  EXPECT_EQ(r->event.experiment, 2u);
  EXPECT_EQ(r->event.activity, 2u);
  // Neither id: the rules decide.
  r = parse(R"({"State": 4, "Src": "[2001:db8::1]:1", "Dst": "[2001:db8::2]:2"})");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->event.experiment, 0u);
  EXPECT_EQ(r->event.activity, 0u);
}

TEST(FlowRequest, RefusalsByReason) {
  Parse parse;
  const std::pair<const char*, RequestReject> cases[] = {
      {"", RequestReject::kBadJson},
      {" \r\n", RequestReject::kBadJson},
      {"{\"State\": 2,", RequestReject::kBadJson},
      {"[1, 2]", RequestReject::kBadJson},
      {R"({"State": 0, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})", RequestReject::kUnknownState},
      {R"({"State": 7, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})", RequestReject::kUnknownState},
      {R"({"State": "begin", "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})",
       RequestReject::kUnknownState},
      {R"({"Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})", RequestReject::kMissingField},
      {R"({"State": 2, "Dst": "10.0.0.2:2"})", RequestReject::kMissingField},
      {R"({"State": 2, "Src": "10.0.0.1", "Dst": "10.0.0.2:2"})", RequestReject::kBadField},
      {R"({"State": 2, "Src": "10.0.0.1:0", "Dst": "10.0.0.2:2"})", RequestReject::kBadField},
      {R"({"State": 2, "Src": "10.0.0.1:1", "Dst": "[::1]:2"})", RequestReject::kBadField},
      {R"({"State": 2, "Family": 10, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})",
       RequestReject::kBadField},
      {R"({"State": 2, "Protocol": 6, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2"})",
       RequestReject::kBadField},
      {R"({"State": 2, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2", "Experiment": 2})",
       RequestReject::kBadField},
      {R"({"State": 2, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2", "Experiment": "nope",
           "Activity": 1})",
       RequestReject::kBadField},
      {R"({"State": 2, "Src": "10.0.0.1:1", "Dst": "10.0.0.2:2", "StartTs": "yesterday"})",
       RequestReject::kBadField},
  };
  for (const auto& [body, reason] : cases) {
    auto r = parse(body);
    ASSERT_FALSE(r) << body;
    EXPECT_EQ(r.error().reason, reason) << body << ": " << r.error().message;
    EXPECT_FALSE(r.error().message.empty()) << body;
  }
}

TEST(FlowRequest, FireflyDocumentWithAndWithoutHeader) {
  Parse parse;
  const std::string doc =
      R"({"version":1,"flow-lifecycle":{"state":"end","start-time":"2025-03-25T10:00:00Z",)"
      R"("end-time":"2025-03-25T10:05:00Z"},"flow-id":{"afi":"ipv4","src-ip":"192.0.2.1",)"
      R"("dst-ip":"192.0.2.2","protocol":"tcp","src-port":2345,"dst-port":5777},)"
      R"("context":{"experiment-id":2,"activity-id":1,"application":"fts"}})";
  for (const std::string& body :
       {doc, "<134>1 2025-03-25T10:05:00Z host app - firefly-json - " + doc}) {
    auto r = parse(body);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->shape, RequestShape::kFirefly);
    EXPECT_EQ(r->event.state, FlowState::kEnd);
    EXPECT_EQ(r->event.start_time, *parse_rfc3339("2025-03-25T10:00:00Z"));
    EXPECT_EQ(r->event.end_time, *parse_rfc3339("2025-03-25T10:05:00Z"));
    EXPECT_EQ(r->event.dst, *Endpoint::parse("192.0.2.2:5777"));
    EXPECT_EQ(r->application, "fts");
  }
  auto bad = parse(R"({"version":1,"flow-lifecycle":{"state":"paused"},"flow-id":{}})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().reason, RequestReject::kUnknownState) << bad.error().message;
}

TEST(FlowRequest, AnswerInFlowdGoShape) {
  Parse parse;
  auto r = parse(R"({"State": 2, "Src": "[2001:db8::1]:2345", "Dst": "[2001:db8::2]:5777",
      "Experiment": 2, "Activity": 1, "StartTs": "2025-02-06T12:00:00Z", "Application": "a\"b"})");
  ASSERT_TRUE(r) << r.error().message;
  const std::string text = flowd_go_json(r->event, r->application);
  simdjson::dom::parser p;
  simdjson::dom::element doc;
  ASSERT_EQ(p.parse(text).get(doc), simdjson::SUCCESS) << text;
  EXPECT_EQ(int64_t(doc["State"]), 2);
  EXPECT_EQ(int64_t(doc["Protocol"]), 0);
  EXPECT_EQ(int64_t(doc["Family"]), 10);
  EXPECT_EQ(std::string_view(doc["Src"]), "[2001:db8::1]:2345");
  EXPECT_EQ(std::string_view(doc["Dst"]), "[2001:db8::2]:5777");
  EXPECT_EQ(std::string_view(doc["EndTs"]), "0001-01-01T00:00:00Z");
  EXPECT_EQ(std::string_view(doc["Application"]), "a\"b");
  // The answer parses back to the same event.
  auto again = parse(text);
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->event, r->event);
}

}  // namespace
}  // namespace flowmark::daemon::api
