// Frames through an Observer with every built-in chain, and its records formatted as JSON
// and CSV: the chains' reading of packets (the TCP option walk of the mss and tfo chains,
// the Scitags option of IPv6 hop-by-hop and destination-options headers found by the
// decoder, ICMP errors counted on the flow they quote) and the record writers.
//
// Input: one byte of settings (link type, icmp_flows, key_vlan, TCP completion, a small
// table), then frames, each as [length low, length high, time step] + that many bytes (the
// last one cut by the end of the input). Each frame is copied into a buffer of its own exact
// size, so ASan reports any read past it. Checks:
// - on_packets() (batches, the quick path and the chains' on_quick) gives the same records
//   and statistics as on_packet() (the full path and on_ip / on_transport) frame by frame;
// - every JSON record is one line {...}; every CSV record has as many fields as the header.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flowmark/observe/chains.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"

using namespace flowmark::observe;

namespace {

constexpr std::array kLinks = {LinkType::kEthernet, LinkType::kLinuxSll, LinkType::kLinuxSll2,
                               LinkType::kRaw,      LinkType::kIpv4,     LinkType::kIpv6,
                               LinkType::kNull,     LinkType::kLoop};
constexpr Nanos kMs = 1'000'000;

// Registry names with the characters JSON and CSV must escape; some ids unknown (null). Only
// small ids have names, and unknown ones are answered before any string is built: the scitags
// chain asks for all 512 x 64 pairs when it is made, twice per input (that cost, strings
// under ASan, kept this target at ~11 inputs/s).
ChainOptions options() {
  ChainOptions o;
  o.names.experiment = [](std::uint32_t e) -> std::optional<std::string> {
    if (e % 3 == 0 || e > 40) return std::nullopt;
    return "exp \"" + std::to_string(e) + "\",\n\\";
  };
  o.names.activity = [](std::uint32_t e, std::uint32_t a) -> std::optional<std::string> {
    if ((e + a) % 2 == 0 || e > 40 || a > 20) return std::nullopt;
    return "act\x01," + std::to_string(a);
  };
  return o;
}

// Fields of one CSV line (RFC 4180 quoting), or -1 when a quote is left open.
long csv_fields(std::string_view line) {
  long n = 1;
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"')
          ++i;
        else
          quoted = false;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      ++n;
    }
  }
  return quoted ? -1 : n;
}

struct Run {
  std::string json, csv;
  ObserverStats stats;
};

Run observe(const ObserverConfig& cfg, bool tcp_completion, LinkType link,
            const std::vector<std::vector<std::byte>>& frames, const std::vector<Nanos>& times,
            bool batched) {
  Run run;
  std::unique_ptr<Observer> obs;
  obs = std::make_unique<Observer>(cfg, [&](const FlowRecord& r) {
    append_record_json(run.json, r, obs.get());
    append_record_csv(run.csv, r, obs.get());
  });
  if (tcp_completion) obs->add_tcp(tcp_complete_on_fin_or_rst);
  const ChainOptions opts = options();
  for (const std::string_view name : kChainNames)
    if (auto c = make_chain(name, opts)) obs->add_chain(std::move(c));
  append_csv_header(run.csv, obs.get());
  if (batched) {
    // Batches of up to 5 frames: the look-ahead runs across and within them.
    std::vector<FrameRef> refs;
    for (std::size_t i = 0; i < frames.size(); ++i) refs.push_back({times[i], frames[i]});
    for (std::size_t i = 0; i < refs.size(); i += 5)
      obs->on_packets(link, std::span(refs).subspan(i, std::min<std::size_t>(5, refs.size() - i)));
  } else {
    for (std::size_t i = 0; i < frames.size(); ++i) obs->on_packet(times[i], link, frames[i]);
  }
  obs->finish();
  run.stats = obs->stats();
  return run;
}

bool same(const ObserverStats& a, const ObserverStats& b) {
  return a.packets == b.packets && a.non_ip == b.non_ip && a.short_packets == b.short_packets &&
         a.fragments == b.fragments && a.fragments_unmatched == b.fragments_unmatched &&
         a.icmp_errors_matched == b.icmp_errors_matched && a.flows == b.flows &&
         a.ignored == b.ignored && a.evicted == b.evicted && a.emitted == b.emitted &&
         a.decode_errors == b.decode_errors && a.ignored_packets == b.ignored_packets &&
         a.late_packets == b.late_packets;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t settings = data[0];
  const LinkType link = kLinks[settings % kLinks.size()];
  ObserverConfig cfg;
  cfg.idle_timeout_ns = 2'000 * kMs;
  cfg.expiry_delay_ns = 500 * kMs;
  cfg.active_timeout_ns = 6'000 * kMs;
  cfg.fragment_timeout_ns = 1'000 * kMs;
  cfg.icmp_flows = (settings & 0x08) != 0;
  cfg.key_vlan = (settings & 0x10) != 0;
  cfg.max_flows = (settings & 0x40) != 0 ? 3 : 64;
  const bool tcp_completion = (settings & 0x20) == 0;

  std::vector<std::vector<std::byte>> frames;
  std::vector<Nanos> times;
  Nanos t = 1'700'000'000'000 * kMs;
  std::size_t i = 1;
  while (i + 3 <= size && frames.size() < 256) {
    const std::size_t want = data[i] | std::size_t{data[i + 1]} << 8;
    // Steps of 0 to 25.5 s: some frames share a time, some come after the timeouts; one in
    // 64 goes back in time (a late frame).
    const std::uint8_t step = data[i + 2];
    t += step == 0xff ? -3'000 * kMs : Nanos{step} * 100 * kMs;
    i += 3;
    const std::size_t n = std::min(want, size - i);
    const auto* b = reinterpret_cast<const std::byte*>(data + i);
    frames.emplace_back(b, b + n);
    times.push_back(t);
    i += n;
  }

  const Run one = observe(cfg, tcp_completion, link, frames, times, false);
  const Run batched = observe(cfg, tcp_completion, link, frames, times, true);
  if (one.json != batched.json || one.csv != batched.csv || !same(one.stats, batched.stats))
    __builtin_trap();

  // One JSON object per line.
  std::size_t records = 0;
  for (std::size_t at = 0; at < one.json.size();) {
    const std::size_t nl = one.json.find('\n', at);
    if (nl == std::string::npos || one.json[at] != '{' || nl == at || one.json[nl - 1] != '}')
      __builtin_trap();
    ++records;
    at = nl + 1;
  }
  if (records != one.stats.emitted) __builtin_trap();
  // CSV: the header's number of fields on every line (a quoted field may hold a line break).
  std::string_view csv = one.csv;
  const std::size_t header_end = csv.find('\n');
  if (header_end == std::string_view::npos) __builtin_trap();
  const long columns = csv_fields(csv.substr(0, header_end));
  std::size_t lines = 0;
  std::size_t start = header_end + 1;
  for (std::size_t at = start; at < csv.size(); ++at) {
    if (csv[at] != '\n') continue;
    const long n = csv_fields(csv.substr(start, at - start));
    if (n < 0) continue;  // inside a quoted field: the record goes on
    if (n != columns) __builtin_trap();
    ++lines;
    start = at + 1;
  }
  if (start != csv.size() || lines != records) __builtin_trap();
  return 0;
}
