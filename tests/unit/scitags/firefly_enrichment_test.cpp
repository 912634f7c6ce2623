// `ongoing` fireflies with their TCP statistics in flowd-go's enrichment shapes: each
// document parses (simdjson, an independent reader), carries exactly the members flowd-go's
// shape has, with its names, nesting and conversions, and still decodes as a firefly.
#include <gtest/gtest.h>
#include <simdjson.h>

#include <cstring>
#include <set>
#include <string>

#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::scitags {
namespace {

constexpr Micros kStart = 1742896800'123456;  // 2025-03-25T10:00:00.123456Z

FlowEvent ongoing_event() {
  FlowEvent e;
  e.state = FlowState::kOngoing;
  e.protocol = Protocol::kTcp;
  e.src = *Endpoint::parse("[2001:db8::1]:40000");
  e.dst = *Endpoint::parse("[2001:db8::2]:443");
  e.experiment = 2;
  e.activity = 1;
  e.start_time = kStart;
  e.usage = Usage{1000, 2000};
  return e;
}

// Distinct values, so that a member taken from the wrong field shows.
TcpDetail detail() {
  TcpDetail d;
  d.state = 1;
  d.ca_state = 2;
  d.retransmits = 3;
  d.probes = 4;
  d.backoff = 5;
  d.options = 1 | 2 | 4 | 8;  // ts, sack, wscale, ecn
  d.snd_wscale = 7;
  d.rcv_wscale = 9;
  d.delivery_rate_app_limited = 1;
  d.rto = 204000;
  d.ato = 40000;
  d.snd_mss = 1428;
  d.rcv_mss = 536;
  d.unacked = 11;
  d.sacked = 12;
  d.lost = 13;
  d.retrans = 14;
  d.fackets = 15;
  d.last_data_sent = 16;
  d.last_ack_sent = 17;
  d.last_data_recv = 18;
  d.last_ack_recv = 19;
  d.pmtu = 1500;
  d.rcv_ssthresh = 64076;
  d.rtt = 1234;
  d.rttvar = 617;
  d.snd_ssthresh = 2147483647;  // "infinite": 0 in flowd's form
  d.snd_cwnd = 10;
  d.advmss = 1440;
  d.reordering = 3;
  d.rcv_rtt = 5000;
  d.rcv_space = 14400;
  d.total_retrans = 21;
  d.pacing_rate = 22'000'000'000ULL;
  d.max_pacing_rate = 18446744073709551615ULL;
  d.bytes_acked = 2000;
  d.bytes_received = 1000;
  d.segs_out = 23;
  d.segs_in = 24;
  d.notsent_bytes = 25;
  d.min_rtt = 26;
  d.data_segs_in = 27;
  d.data_segs_out = 28;
  d.delivery_rate = 29;
  d.busy_time = 30;
  d.rwnd_limited = 31;
  d.sndbuf_limited = 32;
  d.bytes_sent = 33;
  std::memcpy(d.congestion.data(), "cubic", 5);
  return d;
}

struct Doc {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string text;
  explicit Doc(std::string_view wire) : text(wire) {
    const auto brace = text.find('{');
    EXPECT_NE(brace, std::string::npos);
    EXPECT_EQ(parser.parse(text.data() + brace, text.size() - brace).get(root), simdjson::SUCCESS)
        << text;
  }
};

std::set<std::string> keys(simdjson::dom::object o) {
  std::set<std::string> out;
  for (auto field : o) out.emplace(field.key);
  return out;
}

std::uint64_t u(simdjson::dom::element e) { return std::uint64_t(e.get_uint64()); }

TEST(FireflyEnrichment, ShapeNames) {
  for (auto s : {EnrichmentShape::kFlowmark, EnrichmentShape::kLean, EnrichmentShape::kCompatible})
    EXPECT_EQ(parse_enrichment_shape(to_string(s)), s);
  EXPECT_FALSE(parse_enrichment_shape("full"));
  EXPECT_FALSE(parse_enrichment_shape("Lean"));
}

TEST(FireflyEnrichment, Lean) {
  FireflyEncoder enc({.hostname = "dtn1.example.org"});
  auto wire = enc.encode(ongoing_event(), kStart + 1'000'000, detail(), EnrichmentShape::kLean);
  ASSERT_TRUE(wire) << wire.error().message();
  Doc doc(*wire);
  auto root = doc.root.get_object().value();
  EXPECT_EQ(std::string_view(root["flow-lifecycle"]["state"]), "ongoing");
  EXPECT_EQ(std::string_view(root["flow-lifecycle"]["current-time"]),
            "2025-03-25T10:00:01.123456+00:00");
  auto netlink = root["netlink"].get_object().value();
  EXPECT_EQ(keys(netlink), (std::set<std::string>{"cong", "tcpInfo"})) << doc.text;
  EXPECT_EQ(keys(netlink["cong"].get_object().value()), (std::set<std::string>{"algorithm"}));
  EXPECT_EQ(std::string_view(netlink["cong"]["algorithm"]), "cubic");
  auto tcp = netlink["tcpInfo"].get_object().value();
  EXPECT_EQ(keys(tcp),
            (std::set<std::string>{"Retransmits", "advMss", "bytesSent", "deliveryRate", "minRtt",
                                   "pMtu", "rtt", "rttVar", "sndCwnd", "sndMss", "sndSsThresh"}))
      << doc.text;
  EXPECT_EQ(u(tcp["Retransmits"]), 3u);
  EXPECT_EQ(u(tcp["advMss"]), 1440u);
  EXPECT_EQ(u(tcp["bytesSent"]), 33u);
  EXPECT_EQ(u(tcp["deliveryRate"]), 29u);
  EXPECT_EQ(u(tcp["minRtt"]), 26u);
  EXPECT_EQ(u(tcp["pMtu"]), 1500u);
  EXPECT_EQ(u(tcp["rtt"]), 1234u);  // µs, as the kernel gives it
  EXPECT_EQ(u(tcp["rttVar"]), 617u);
  EXPECT_EQ(u(tcp["sndCwnd"]), 10u);
  EXPECT_EQ(u(tcp["sndMss"]), 1428u);
  EXPECT_EQ(u(tcp["sndSsThresh"]), 2147483647u);
  // Go writes a map's keys sorted: so do we.
  EXPECT_LT(doc.text.find("\"cong\""), doc.text.find("\"tcpInfo\""));
  EXPECT_LT(doc.text.find("\"Retransmits\""), doc.text.find("\"advMss\""));
  EXPECT_LT(doc.text.find("\"sndMss\""), doc.text.find("\"sndSsThresh\""));

  // No algorithm known: no "cong" (flowd-go's omitempty).
  auto d = detail();
  d.congestion = {};
  wire = enc.encode(ongoing_event(), kStart, d, EnrichmentShape::kLean);
  ASSERT_TRUE(wire);
  Doc bare(*wire);
  EXPECT_EQ(keys(bare.root["netlink"].get_object().value()), (std::set<std::string>{"tcpInfo"}));
}

TEST(FireflyEnrichment, Compatible) {
  FireflyEncoder enc({.hostname = "dtn1.example.org", .syslog_header = false});
  auto wire =
      enc.encode(ongoing_event(), kStart + 1'000'000, detail(), EnrichmentShape::kCompatible);
  ASSERT_TRUE(wire) << wire.error().message();
  Doc doc(*wire);
  EXPECT_EQ(doc.text.front(), '{');  // no header asked
  auto nl = doc.root["netlink"].get_object().value();
  const std::set<std::string> expected = {"state",
                                          "pmtu",
                                          "retrans",
                                          "ato",
                                          "rto",
                                          "snd_wscale",
                                          "rcv_wscale",
                                          "snd_mss",
                                          "snd_cwnd",
                                          "snd_ssthresh",
                                          "rtt",
                                          "rttvar",
                                          "rcv_rtt",
                                          "rcv_space",
                                          "opts",
                                          "last_data_sent",
                                          "rcv_ssthresh",
                                          "segs_in",
                                          "segs_out",
                                          "data_segs_in",
                                          "data_segs_out",
                                          "lost",
                                          "notsent_bytes",
                                          "rcv_mss",
                                          "pacing_rate",
                                          "retransmits",
                                          "min_rtt",
                                          "rwnd_limited",
                                          "max_pacing_rate",
                                          "probes",
                                          "reordering",
                                          "last_data_recv",
                                          "bytes_received",
                                          "fackets",
                                          "last_ack_recv",
                                          "last_ack_sent",
                                          "unacked",
                                          "sacked",
                                          "bytes_acked",
                                          "delivery_rate_app_limited",
                                          "delivery_rate",
                                          "sndbuf_limited",
                                          "ca_state",
                                          "busy_time",
                                          "total_retrans",
                                          "advmss",
                                          "backoff"};
  EXPECT_EQ(expected.size(), 47u);
  EXPECT_EQ(keys(nl), expected) << doc.text;
  EXPECT_EQ(std::string_view(nl["state"]), "established");
  EXPECT_EQ(u(nl["ato"]), 40u);  // ms
  EXPECT_EQ(u(nl["rto"]), 204u);
  EXPECT_EQ(u(nl["rtt"]), 1u);
  EXPECT_EQ(u(nl["rttvar"]), 0u);
  EXPECT_EQ(u(nl["rcv_rtt"]), 5u);
  EXPECT_EQ(u(nl["snd_ssthresh"]), 0u);  // "infinite"
  EXPECT_EQ(u(nl["snd_wscale"]), 7u);
  EXPECT_EQ(u(nl["rcv_wscale"]), 9u);
  EXPECT_EQ(u(nl["retrans"]), 14u);
  EXPECT_EQ(u(nl["retransmits"]), 3u);
  EXPECT_EQ(u(nl["total_retrans"]), 21u);
  EXPECT_EQ(u(nl["pacing_rate"]), 22'000'000'000ULL);
  EXPECT_EQ(u(nl["max_pacing_rate"]), 18446744073709551615ULL);
  EXPECT_EQ(u(nl["bytes_received"]), 1000u);
  EXPECT_EQ(u(nl["backoff"]), 5u);
  std::vector<std::string> opts;
  const simdjson::dom::array listed = nl["opts"].get_array().value();  // not a temporary
  for (auto o : listed) opts.emplace_back(std::string_view(o));
  EXPECT_EQ(opts, (std::vector<std::string>{"ts", "sack", "ecn"}));  // wscale is not named
  // flowd-go's member order: state first, backoff last.
  EXPECT_LT(doc.text.find("\"state\""), doc.text.find("\"pmtu\""));
  EXPECT_LT(doc.text.find("\"advmss\""), doc.text.find("\"backoff\""));

  auto d = detail();
  d.rto = 3000000;  // the initial rto: 0 in flowd's form
  d.state = 6;
  d.options = 0;
  wire = enc.encode(ongoing_event(), kStart, d, EnrichmentShape::kCompatible);
  ASSERT_TRUE(wire);
  Doc other(*wire);
  EXPECT_EQ(u(other.root["netlink"]["rto"]), 0u);
  EXPECT_EQ(std::string_view(other.root["netlink"]["state"]), "time-wait");
  EXPECT_EQ(other.root["netlink"]["opts"].get_array().value().size(), 0u);
}

// The shapes leave the rest of the firefly alone: it decodes to the same event, the
// "netlink" object kept as an extra member.
TEST(FireflyEnrichment, StillAFirefly) {
  for (auto shape :
       {EnrichmentShape::kFlowmark, EnrichmentShape::kLean, EnrichmentShape::kCompatible}) {
    FireflyEncoder enc({.hostname = "dtn1.example.org"});
    auto e = ongoing_event();
    e.current_time = kStart + 5'000'000;
    auto wire = enc.encode(e, kStart + 5'000'000, detail(), shape);
    ASSERT_TRUE(wire) << to_string(shape);
    FireflyDecoder dec;
    auto f = dec.decode(*wire);
    ASSERT_TRUE(f) << to_string(shape) << ": " << f.error().detail << "\n" << *wire;
    EXPECT_EQ((*f)->event.state, FlowState::kOngoing);
    EXPECT_EQ((*f)->event.src, e.src);
    EXPECT_EQ((*f)->event.start_time, kStart);
    EXPECT_EQ((*f)->event.usage, e.usage);
  }
}

}  // namespace
}  // namespace flowmark::scitags
