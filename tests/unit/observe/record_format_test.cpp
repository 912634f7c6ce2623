// Record text: addresses exactly as inet_ntop() writes them (the formatter has its own
// code for speed), and the JSON / CSV lines field by field.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "flowmark/observe/record_format.hpp"

namespace flowmark::observe {
namespace {

std::string ntop(const IpAddress& a) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(a.is_v4() ? AF_INET : AF_INET6, a.bytes(), buf, sizeof buf);
  return buf;
}

IpAddress v6_from_words(const std::array<std::uint16_t, 8>& w) {
  in6_addr a{};
  for (int i = 0; i < 8; ++i) {
    a.s6_addr[2 * i] = static_cast<std::uint8_t>(w[i] >> 8);
    a.s6_addr[2 * i + 1] = static_cast<std::uint8_t>(w[i]);
  }
  return IpAddress::v6(a);
}

TEST(RecordFormat, AddressesAsInetNtop) {
  for (const char* text :
       {"::", "::1", "1::", "::ffff:1.2.3.4", "::1.2.3.4", "::0.0.0.2", "fe80::1", "0:0:1::",
        "1:0:0:2::3", "1:0:0:2:0:0:3:0", "2001:db8::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "::ffff:0:1.2.3.4", "0.0.0.0", "255.255.255.255", "10.0.0.1", "192.168.100.7"}) {
    auto a = IpAddress::parse(text);
    ASSERT_TRUE(a) << text;
    EXPECT_EQ(format_address(*a), ntop(*a)) << text;
  }
  std::mt19937 rng(7);
  for (int n = 0; n < 20000; ++n) {
    std::array<std::uint16_t, 8> w{};
    for (auto& x : w) {
      const auto r = rng();
      x = (r & 1)   ? 0
          : (r & 2) ? static_cast<std::uint16_t>(r >> 16)
                    : static_cast<std::uint16_t>((r >> 16) & 0xF);
    }
    if (n % 7 == 0) w[5] = 0xffff;
    const IpAddress a = v6_from_words(w);
    ASSERT_EQ(format_address(a), ntop(a));
    const IpAddress b = IpAddress::v4(static_cast<std::uint32_t>(rng()));
    ASSERT_EQ(format_address(b), ntop(b));
  }
}

TEST(RecordFormat, JsonAndCsvLines) {
  FlowRecord r;
  r.sip = *IpAddress::parse("2001:db8::1");
  r.dip = *IpAddress::parse("2001:db8::2:0:0:1");
  r.sp = 443;
  r.dp = 51000;
  r.has_ports = true;
  r.proto = 6;
  r.ip_version = 6;
  r.vlan = 100;
  r.first = 1'700'000'000'000'000'042;
  r.last = 1'700'000'001'500'000'000;
  r.pkt_fwd = 18446744073709551615u;
  r.pkt_rev = 0;
  r.oct_fwd = 1234567;
  r.oct_rev = 9;
  r.tcp_flags_fwd = 0x1b;
  r.tcp_flags_rev = 0x12;
  r.fragments = 3;
  r.icmp_errors = 4;
  r.continuation = true;
  std::string out;
  append_record_json(out, r);
  EXPECT_EQ(out, R"({"sip":"2001:db8::1","dip":"2001:db8::2:0:0:1","proto":6,"sp":443,"dp":51000,)"
                 R"("first":1700000000.000000042,"last":1700000001.500000000,)"
                 R"("pkt_fwd":18446744073709551615,"pkt_rev":0,"oct_fwd":1234567,"oct_rev":9,)"
                 R"("ip_version":6,"vlan":100,"tcp_flags_fwd":27,"tcp_flags_rev":18,"fragments":3,)"
                 R"("icmp_errors":4,"continuation":true})"
                 "\n");
  out.clear();
  append_csv_header(out);
  append_record_csv(out, r);
  EXPECT_EQ(out,
            "sip,dip,proto,sp,dp,first,last,pkt_fwd,pkt_rev,oct_fwd,oct_rev,ip_version,vlan,"
            "tcp_flags_fwd,tcp_flags_rev,fragments,icmp_errors,continuation\n"
            "2001:db8::1,2001:db8::2:0:0:1,6,443,51000,1700000000.000000042,"
            "1700000001.500000000,18446744073709551615,0,1234567,9,6,100,27,18,3,4,1\n");
}

// Times before the epoch (a capture whose clock was never set) keep their sign, also between
// -1 s and 0 where the whole seconds are 0.
TEST(RecordFormat, TimesBeforeTheEpoch) {
  FlowRecord r;
  r.sip = *IpAddress::parse("192.0.2.1");
  r.dip = *IpAddress::parse("192.0.2.2");
  r.proto = 17;
  r.ip_version = 4;
  auto times = [&](Nanos first, Nanos last) {
    r.first = first;
    r.last = last;
    std::string out;
    append_record_json(out, r);
    const auto at = out.find("\"first\":");
    return out.substr(at, out.find(",\"pkt_fwd\"") - at);
  };
  EXPECT_EQ(times(-500'000'000, -1), R"("first":-0.500000000,"last":-0.000000001)");
  EXPECT_EQ(times(-1'500'000'000, 0), R"("first":-1.500000000,"last":0.000000000)");
  EXPECT_EQ(times(-1'000'000'000, 999'999'999), R"("first":-1.000000000,"last":0.999999999)");
}

TEST(FieldWriter, JsonAndCsvValues) {
  std::string j, c;
  FieldWriter jw(j, FieldWriter::Format::kJson), cw(c, FieldWriter::Format::kCsv);
  for (FieldWriter* w : {&jw, &cw}) {
    w->null("a");
    w->boolean("b", true);
    w->number("c", 18446744073709551615u);
    w->text("d", "x\"y,z\n");
  }
  EXPECT_EQ(j, R"(,"a":null,"b":true,"c":18446744073709551615,"d":"x\"y,z\u000a")");
  EXPECT_EQ(c, ",,true,18446744073709551615,\"x\"\"y,z\n\"");
}

// With a record's column prefixes the text is the same as without them: also where a chain
// writes a name other than its column's, more fields than columns, a name too long for a
// prefix, and with a scratch buffer too small for some fields.
TEST(FieldWriter, PrefixesGiveTheSameText) {
  const std::string long_name(40, 'n');
  const std::vector<std::string> columns = {"a", "bb", "ecn_ect0_data_fwd", long_name, "z"};
  const FieldPrefixes prefixes(columns);
  ASSERT_EQ(prefixes.size(), 5u);
  auto fields = [&](FieldWriter& w) {
    w.null("a");
    w.boolean("bx", false);  // not its column's name
    w.number("ecn_ect0_data_fwd", 18446744073709551615u);
    w.boolean(long_name, true);
    w.text("z", "q\"");
    w.number("extra", 7);  // beyond the columns
    w.null("a");
  };
  std::string plain, with, small;
  {
    FieldWriter w(plain, FieldWriter::Format::kJson);
    fields(w);
  }
  char scratch[4096], tiny[40];
  {
    FieldWriter w(with, FieldWriter::Format::kJson, scratch, &prefixes);
    fields(w);
  }
  {
    FieldWriter w(small, FieldWriter::Format::kJson, tiny, &prefixes);
    fields(w);
  }
  EXPECT_EQ(plain, R"(,"a":null,"bx":false,"ecn_ect0_data_fwd":18446744073709551615,")" +
                       long_name + R"(":true,"z":"q\"","extra":7,"a":null)");
  EXPECT_EQ(with, plain);
  EXPECT_EQ(small, plain);
  std::string csv_plain, csv_with;
  {
    FieldWriter w(csv_plain, FieldWriter::Format::kCsv);
    fields(w);
  }
  {
    FieldWriter w(csv_with, FieldWriter::Format::kCsv, scratch, &prefixes);
    fields(w);
  }
  EXPECT_EQ(csv_with, csv_plain);
  EXPECT_EQ(csv_plain, ",,false,18446744073709551615,true,\"q\"\"\",7,");
}

// Flows without ports (ICMP, other protocols) write sp and dp as null / empty, as
// pathspider writes None; a TCP flow's port 0 stays 0.
TEST(RecordFormat, PortsNullWithoutPorts) {
  FlowRecord r;
  r.sip = *IpAddress::parse("192.0.2.1");
  r.dip = *IpAddress::parse("192.0.2.2");
  r.proto = 1;
  r.ip_version = 4;
  r.pkt_fwd = 2;
  std::string out;
  append_record_json(out, r, {});
  EXPECT_NE(out.find(R"("proto":1,"sp":null,"dp":null,"first":)"), std::string::npos) << out;
  out.clear();
  append_record_csv(out, r, {});
  EXPECT_EQ(out.rfind("192.0.2.1,192.0.2.2,1,,,0.000000000,", 0), 0u) << out;
  r.proto = 6;
  r.has_ports = true;  // sp = dp = 0
  out.clear();
  append_record_json(out, r, {});
  EXPECT_NE(out.find(R"("proto":6,"sp":0,"dp":0,"first":)"), std::string::npos) << out;
  out.clear();
  append_record_csv(out, r, {});
  EXPECT_EQ(out.rfind("192.0.2.1,192.0.2.2,6,0,0,0.000000000,", 0), 0u) << out;
}

}  // namespace
}  // namespace flowmark::observe
