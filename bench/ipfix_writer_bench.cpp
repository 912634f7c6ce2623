// IPFIX export speed: records/s encoded into RFC 7011 messages and written to /dev/null, by
// our writer (flowmark::observe::IpfixWriter) and by libfixbuf (the library issue 17 names,
// fBufAppend with the same biflow template), with a floor: the same records copied into a
// buffer and written, without encoding. Run by hand: build/release/bench/ipfix_writer_bench
#include <benchmark/benchmark.h>
#include <fixbuf/public.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "flowmark/observe/ipfix.hpp"

namespace {

using flowmark::observe::FlowRecord;

constexpr int kRecords = 1'000'000;

std::vector<FlowRecord> make_records() {
  std::vector<FlowRecord> v(1024);
  for (std::size_t i = 0; i < v.size(); ++i) {
    FlowRecord& r = v[i];
    r.sip = flowmark::IpAddress::v4(0x0a000000 + static_cast<std::uint32_t>(i));
    r.dip = flowmark::IpAddress::v4(0xc0a80001);
    r.sp = static_cast<std::uint16_t>(30000 + i);
    r.dp = 443;
    r.proto = 6;
    r.ip_version = 4;
    r.first = 1'700'000'000'000'000'000 + static_cast<std::int64_t>(i) * 1'000'000;
    r.last = r.first + 5'000'000'000;
    r.pkt_fwd = 10 + i;
    r.pkt_rev = 8 + i;
    r.oct_fwd = 1000 * i;
    r.oct_rev = 500 * i;
    r.tcp_flags_fwd = 0x1b;
    r.tcp_flags_rev = 0x12;
    r.has_ports = true;
  }
  return v;
}

void BM_Floor_CopyAndWrite(benchmark::State& state) {
  const auto recs = make_records();
  std::FILE* f = std::fopen("/dev/null", "wb");
  std::vector<std::uint8_t> buf;
  buf.reserve(65536);
  for (auto _ : state) {
    for (int i = 0; i < kRecords; ++i) {
      const FlowRecord& r = recs[static_cast<std::size_t>(i) & 1023];
      if (buf.size() + 80 > 65535) {
        std::fwrite(buf.data(), 1, buf.size(), f);
        buf.clear();
      }
      const auto* p = reinterpret_cast<const std::uint8_t*>(&r.first);
      buf.insert(buf.end(), p, p + 72);  // about one record's worth of bytes
    }
    std::fwrite(buf.data(), 1, buf.size(), f);
    buf.clear();
  }
  std::fclose(f);
  state.SetItemsProcessed(state.iterations() * kRecords);
}

void BM_Flowmark_IpfixWriter(benchmark::State& state) {
  const auto recs = make_records();
  std::FILE* f = std::fopen("/dev/null", "wb");
  for (auto _ : state) {
    flowmark::observe::IpfixWriter w(
        {.observation_domain = 1, .now = {}},
        [f](std::span<const std::uint8_t> m) { std::fwrite(m.data(), 1, m.size(), f); });
    for (int i = 0; i < kRecords; ++i) w.add(recs[static_cast<std::size_t>(i) & 1023]);
    w.flush();
    benchmark::DoNotOptimize(w.records_written());
  }
  std::fclose(f);
  state.SetItemsProcessed(state.iterations() * kRecords);
}

// libfixbuf's transcoder copies from a struct laid out as the internal template says.
struct FixbufRecord {
  std::uint64_t start_ms, end_ms, pkts, octs, rpkts, roctets;
  std::uint32_t sip, dip;
  std::uint16_t sp, dp, vlan, flags, rflags;
  std::uint8_t proto, tos, rtos, end_reason, direction;
  std::uint8_t pad[1];
};

fbInfoElementSpec_t kSpec[] = {{(char*)"flowStartMilliseconds", 8, 0},
                               {(char*)"flowEndMilliseconds", 8, 0},
                               {(char*)"packetDeltaCount", 8, 0},
                               {(char*)"octetDeltaCount", 8, 0},
                               {(char*)"reversePacketDeltaCount", 8, 0},
                               {(char*)"reverseOctetDeltaCount", 8, 0},
                               {(char*)"sourceIPv4Address", 4, 0},
                               {(char*)"destinationIPv4Address", 4, 0},
                               {(char*)"sourceTransportPort", 2, 0},
                               {(char*)"destinationTransportPort", 2, 0},
                               {(char*)"vlanId", 2, 0},
                               {(char*)"tcpControlBits", 2, 0},
                               {(char*)"reverseTcpControlBits", 2, 0},
                               {(char*)"protocolIdentifier", 1, 0},
                               {(char*)"ipClassOfService", 1, 0},
                               {(char*)"reverseIpClassOfService", 1, 0},
                               {(char*)"flowEndReason", 1, 0},
                               {(char*)"biflowDirection", 1, 0},
                               {(char*)"paddingOctets", 1, 0},
                               FB_IESPEC_NULL};

void BM_Libfixbuf_fBufAppend(benchmark::State& state) {
  const auto recs = make_records();
  for (auto _ : state) {
    state.PauseTiming();
    GError* err = nullptr;
    fbInfoModel_t* model = fbInfoModelAlloc();
    fbSession_t* session = fbSessionAlloc(model);
    fbTemplate_t* tmpl = fbTemplateAlloc(model);
    if (!fbTemplateAppendSpecArray(tmpl, kSpec, 0xffffffff, &err)) {
      state.SkipWithError(err->message);
      return;
    }
    fbTemplate_t* ext = fbTemplateAlloc(model);
    fbTemplateAppendSpecArray(ext, kSpec, 0xffffffff, &err);
    fbSessionAddTemplate(session, TRUE, 256, tmpl, &err);
    fbSessionAddTemplate(session, FALSE, 256, ext, &err);
    std::FILE* f = std::fopen("/dev/null", "wb");
    fbExporter_t* exporter = fbExporterAllocFP(f);
    fBuf_t* buf = fBufAllocForExport(session, exporter);
    fbSessionExportTemplates(session, &err);
    fBufSetInternalTemplate(buf, 256, &err);
    fBufSetExportTemplate(buf, 256, &err);
    state.ResumeTiming();
    for (int i = 0; i < kRecords; ++i) {
      const FlowRecord& r = recs[static_cast<std::size_t>(i) & 1023];
      FixbufRecord x{};
      x.start_ms = static_cast<std::uint64_t>(r.first / 1'000'000);
      x.end_ms = static_cast<std::uint64_t>(r.last / 1'000'000);
      x.pkts = r.pkt_fwd;
      x.octs = r.oct_fwd;
      x.rpkts = r.pkt_rev;
      x.roctets = r.oct_rev;
      std::uint32_t a;
      std::memcpy(&a, r.sip.bytes(), 4);
      x.sip = __builtin_bswap32(a);  // host order, as libfixbuf expects
      std::memcpy(&a, r.dip.bytes(), 4);
      x.dip = __builtin_bswap32(a);
      x.sp = r.sp;
      x.dp = r.dp;
      x.vlan = r.vlan;
      x.flags = r.tcp_flags_fwd;
      x.rflags = r.tcp_flags_rev;
      x.proto = r.proto;
      x.tos = r.tos_fwd;
      x.rtos = r.tos_rev;
      x.end_reason = static_cast<std::uint8_t>(r.end_reason);
      x.direction = static_cast<std::uint8_t>(r.direction);
      if (!fBufAppend(buf, reinterpret_cast<std::uint8_t*>(&x), sizeof x, &err)) {
        state.SkipWithError(err->message);
        break;
      }
    }
    fBufEmit(buf, &err);
    state.PauseTiming();
    fBufFree(buf);  // frees the session and the exporter
    std::fclose(f);
    fbInfoModelFree(model);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
}

BENCHMARK(BM_Floor_CopyAndWrite)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Flowmark_IpfixWriter)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Libfixbuf_fBufAppend)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
