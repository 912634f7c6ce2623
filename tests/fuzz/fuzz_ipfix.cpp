// The IPFIX writer's templates and records read back by libfixbuf's reader (fBufNext into one
// internal template holding every element the writer may send, as ipfix_libfixbuf_test.cpp
// does): a fuzz input is a writer's options and a sequence of records.
//
// Input (read by FuzzedDataProvider: numbers from the end of the input): 16 bits of options
// (bit 0 uniflow, 1 nanoseconds, 2 flow labels, 3 Scitags elements, bits 4-5 template refresh
// every 0..3 messages, bit 6 no packet fields: octets only, as flowmarkd's events), 16 for the
// largest message (512 + the number modulo 65024), then records, each from about 100 bytes (past
// the end: zeros), at most 4096. Seeds: one per combination of the option bits in
// tests/fuzz/corpus/ipfix. Checks, aborting on a difference:
// - every message is at most the largest size, its header's length is its size, its version
//   10, its sequence number the count of data records before it, the observation domain set;
// - libfixbuf reads every message without an error, and exactly the records written (two a
//   flow in uniflow mode when the reverse direction saw packets), each field as written.
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "../unit/testing/ipfix_fixbuf_reader.hpp"
#include "flowmark/observe/ipfix.hpp"

using namespace flowmark;
using namespace flowmark::observe;

namespace {

struct Written {
  FlowRecord r;
  IpfixExtras x;
  bool reverse_side;
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_ipfix: %s\n", what.c_str());
  std::abort();
}

std::size_t be16(const std::uint8_t* p) { return std::size_t{p[0]} << 8 | p[1]; }
std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

FlowRecord make_record(FuzzedDataProvider& in, IpfixExtras& x) {
  FlowRecord r;
  const bool v6 = in.ConsumeBool();
  r.ip_version = v6 ? 6 : 4;
  if (v6) {
    in6_addr a{}, b{};
    for (auto& byte : a.s6_addr) byte = in.ConsumeIntegral<std::uint8_t>();
    for (auto& byte : b.s6_addr) byte = in.ConsumeIntegral<std::uint8_t>();
    r.sip = IpAddress::v6(a);
    r.dip = IpAddress::v6(b);
  } else {
    r.sip = IpAddress::v4(in.ConsumeIntegral<std::uint32_t>());
    r.dip = IpAddress::v4(in.ConsumeIntegral<std::uint32_t>());
  }
  r.sp = in.ConsumeIntegral<std::uint16_t>();
  r.dp = in.ConsumeIntegral<std::uint16_t>();
  r.proto = in.ConsumeIntegral<std::uint8_t>();
  r.vlan = in.ConsumeIntegral<std::uint16_t>();
  r.first = in.ConsumeIntegral<std::int64_t>();
  r.last = in.ConsumeIntegral<std::int64_t>();
  // Counters: small and large values both likely.
  auto counter = [&in] {
    return in.ConsumeBool() ? in.ConsumeIntegral<std::uint64_t>()
                            : in.ConsumeIntegral<std::uint8_t>();
  };
  r.pkt_fwd = counter();
  r.pkt_rev = counter();
  r.oct_fwd = counter();
  r.oct_rev = counter();
  r.tcp_flags_fwd = in.ConsumeIntegral<std::uint8_t>();
  r.tcp_flags_rev = in.ConsumeIntegral<std::uint8_t>();
  r.tos_fwd = in.ConsumeIntegral<std::uint8_t>();
  r.tos_rev = in.ConsumeIntegral<std::uint8_t>();
  r.end_reason = static_cast<EndReason>(in.ConsumeIntegral<std::uint8_t>());
  r.direction = static_cast<BiflowDirection>(in.ConsumeIntegral<std::uint8_t>());
  x.flow_label_fwd = in.ConsumeIntegral<std::uint32_t>();
  x.flow_label_rev = in.ConsumeIntegral<std::uint32_t>();
  x.scitags_experiment = in.ConsumeIntegral<std::uint16_t>();
  x.scitags_activity = in.ConsumeIntegral<std::uint8_t>();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const auto bits = in.ConsumeIntegral<std::uint16_t>();
  const std::size_t max_size = 512 + in.ConsumeIntegral<std::uint16_t>() % (65536 - 512);
  const IpfixOptions options{.observation_domain = 0x01020304,
                             .max_message_size = max_size,
                             .uniflow = (bits & 1) != 0,
                             .flow_label = (bits & 4) != 0,
                             .scitags = (bits & 8) != 0,
                             .nanoseconds = (bits & 2) != 0,
                             .packet_fields = (bits & 64) == 0,
                             .template_refresh_messages = (bits >> 4) & 3u,
                             .now = [] { return 1'700'000'000u; }};

  std::vector<std::uint8_t> file;
  std::uint32_t records_before = 0;  // data records in the messages so far, counted here
  std::map<std::uint16_t, std::size_t> record_length;  // of each template seen
  std::vector<Written> written;
  IpfixWriter w(options, [&](std::span<const std::uint8_t> m) {
    if (m.size() > max_size) fail("message over the largest size");
    if (m.size() < 16 || be16(&m[2]) != m.size()) fail("message length");
    if (be16(&m[0]) != 10) fail("version");
    if (be32(&m[8]) != records_before) fail("sequence number");
    if (be32(&m[12]) != 0x01020304) fail("observation domain");
    for (std::size_t off = 16; off < m.size();) {  // the sets, to count the data records
      if (off + 4 > m.size()) fail("set header cut");
      const std::size_t id = be16(&m[off]), len = be16(&m[off + 2]);
      if (len < 4 || off + len > m.size()) fail("set length");
      if (id == 2) {
        for (std::size_t p = off + 4; p + 4 <= off + len;) {
          const auto tid = static_cast<std::uint16_t>(be16(&m[p]));
          std::size_t fields = be16(&m[p + 2]), total = 0;
          p += 4;
          for (; fields > 0; --fields) {
            if (p + 4 > off + len) fail("template cut");
            const bool enterprise = (m[p] & 0x80) != 0;
            total += be16(&m[p + 2]);
            p += enterprise ? 8 : 4;
          }
          record_length[tid] = total;
        }
      } else {
        const auto t = record_length.find(static_cast<std::uint16_t>(id));
        if (t == record_length.end() || t->second == 0) fail("data set before its template");
        if ((len - 4) % t->second != 0) fail("data set not a whole number of records");
        records_before += static_cast<std::uint32_t>((len - 4) / t->second);
      }
      off += len;
    }
    file.insert(file.end(), m.begin(), m.end());
  });
  for (int i = 0; i < 4096 && in.remaining_bytes() > 0; ++i) {
    Written x{};
    x.r = make_record(in, x.x);
    w.add(x.r, x.x);
    written.push_back(x);
    if (options.uniflow && x.r.pkt_rev != 0) {
      x.reverse_side = true;
      written.push_back(x);
    }
  }
  w.flush();
  if (records_before != written.size() || w.records_written() != written.size())
    fail("records counted");
  if (written.empty()) {
    if (!file.empty()) fail("a message without records");
    return 0;
  }

  std::FILE* f = fmemopen(file.data(), file.size(), "rb");
  if (f == nullptr) fail("fmemopen");
  std::string error;
  const std::vector<testing::IpfixRead> got = testing::read_ipfix_with_libfixbuf(f, error);
  std::fclose(f);
  if (!error.empty()) fail("libfixbuf: " + error);
  if (got.size() != written.size())
    fail("libfixbuf read " + std::to_string(got.size()) + " records of " +
         std::to_string(written.size()));
  for (std::size_t i = 0; i < got.size(); ++i) {
    const Written& x = written[i];
    const std::string diff = testing::ipfix_mismatch(got[i], x.r, x.x, options, x.reverse_side);
    if (!diff.empty()) fail("record " + std::to_string(i) + ": " + diff);
  }
  return 0;
}
