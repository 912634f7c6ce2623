// `flowmark observe`: packets from a capture file or an interface → one record per flow.
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.hpp"
#include "flowmark/capture/capture.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"

namespace flowmark::apps {
namespace {

enum ObserveExit : int {
  kOk = 0,
  kUsage = 2,
  kDataError = 65,    // a corrupt capture (flows decoded so far are still emitted)
  kNoInput = 66,      // the capture cannot be opened
  kUnavailable = 69,  // the interface cannot be captured on
  kInterrupted = 130,
};

struct ObserveArgs {
  std::string file, iface, filter, format = "jsonl", capture = "afpacket";
  double idle = 30, active = 1800, expiry = 5;
  std::size_t max_flows = 1 << 20;
  bool stats = false, key_vlan = false, no_tcp_completion = false;
};

std::atomic<capture::Capture*> g_source{nullptr};
std::atomic<bool> g_interrupted{false};

extern "C" void on_interrupt(int) {
  g_interrupted.store(true);
  if (auto* s = g_source.load()) s->break_loop();
}

observe::Nanos seconds_to_ns(double s) {
  return static_cast<observe::Nanos>(std::llround(s * 1e9));
}

void print_stats(const observe::ObserverStats& st, const capture::Capture& src,
                 std::size_t active) {
  std::string out = fmt::format(
      "flowmark observe: {} packets, drops {}, short {}, non-IP {}, fragments {} ({} "
      "unmatched), flows {}, ignored {}, ignored_packets {}, late_packets {}, evicted {}, "
      "emitted {}, ICMP errors matched {}, still active at the end {}\n",
      st.packets, src.drops() ? std::to_string(*src.drops()) : std::string("unknown"),
      st.short_packets, st.non_ip, st.fragments, st.fragments_unmatched, st.flows, st.ignored,
      st.ignored_packets, st.late_packets, st.evicted, st.emitted, st.icmp_errors_matched, active);
  std::string errors;
  for (std::size_t i = 1; i < st.decode_errors.size(); ++i) {
    if (st.decode_errors[i] == 0) continue;
    errors += fmt::format(" {}={}", observe::to_string(static_cast<observe::DecodeError>(i)),
                          st.decode_errors[i]);
  }
  if (!errors.empty()) out += "flowmark observe: decode errors:" + errors + "\n";
  std::fputs(out.c_str(), stderr);
}

int run_observe(const ObserveArgs& a) {
  if (a.file.empty() == a.iface.empty()) {
    fmt::print(stderr, "flowmark: error: give either -r FILE or -i IFACE\n");
    return kUsage;
  }
  if (a.format != "jsonl" && a.format != "csv") {
    fmt::print(stderr, "flowmark: error: --format {}: expected jsonl or csv\n", a.format);
    return kUsage;
  }
  // The idle timeout must be positive (0 would end every flow at once); an active timeout
  // of 0 turns the splitting of long flows off; an expiry delay of 0 emits at completion.
  struct Bound {
    const char* name;
    double value, low;
  };
  for (const Bound b :
       {Bound{"--idle-timeout", a.idle, 1e-9}, Bound{"--active-timeout", a.active, 0},
        Bound{"--expiry-delay", a.expiry, 0}}) {
    if (!(b.value >= b.low) || b.value > 1e7) {
      fmt::print(stderr, "flowmark: error: {} {}: expected {} seconds\n", b.name, b.value,
                 b.low > 0 ? "more than 0 and at most 10000000" : "0..10000000");
      return kUsage;
    }
  }
  if (a.max_flows == 0) {
    fmt::print(stderr, "flowmark: error: --max-flows 0: expected at least 1\n");
    return kUsage;
  }
  if (a.capture != "afpacket" && a.capture != "pcap") {
    fmt::print(stderr, "flowmark: error: --capture {}: expected afpacket or pcap\n", a.capture);
    return kUsage;
  }
  auto src = a.file.empty()
                 ? capture::open_live_capture(a.iface, a.filter,
                                              a.capture == "pcap" ? capture::LiveBackend::kPcap
                                                                  : capture::LiveBackend::kAfPacket)
                 : capture::open_file_capture(a.file, a.filter);
  if (!src) {
    fmt::print(stderr, "flowmark: error: {}\n", src.error().message());
    if (src.error().code() == Errc::kInvalidArgument) return kUsage;
    return a.file.empty() ? kUnavailable : kNoInput;
  }
  observe::ObserverConfig cfg;
  cfg.idle_timeout_ns = seconds_to_ns(a.idle);
  cfg.active_timeout_ns = seconds_to_ns(a.active);
  cfg.expiry_delay_ns = seconds_to_ns(a.expiry);
  cfg.max_flows = a.max_flows;
  cfg.key_vlan = a.key_vlan;

  const bool csv = a.format == "csv";
  std::string out;
  out.reserve(1 << 20);
  auto flush_out = [&] {
    if (!out.empty()) (void)std::fwrite(out.data(), 1, out.size(), stdout);
    out.clear();
  };
  std::unique_ptr<observe::Observer> obs;
  obs = std::make_unique<observe::Observer>(cfg, [&](const observe::FlowRecord& r) {
    if (csv) {
      observe::append_record_csv(out, r, obs->fields());
    } else {
      observe::append_record_json(out, r, obs->fields());
    }
    if (out.size() > (1 << 20) - 4096) flush_out();
  });
  if (!a.no_tcp_completion) obs->add_tcp(observe::tcp_complete_on_fin_or_rst);
  if (csv) observe::append_csv_header(out, obs->fields());

  g_source.store(src->get());
  struct sigaction sa{};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const bool progress = isatty(STDERR_FILENO) != 0 && (*src)->size().has_value();
  auto last_progress = std::chrono::steady_clock::now();
  // Frames go to the observer in batches: it decodes ahead and loads their flows from memory
  // while it counts earlier ones (see Observer::on_packets).
  std::array<observe::FrameRef, 256> batch;
  observe::LinkType link = observe::LinkType::kEthernet;
  int rc = kOk;
  std::uint64_t batches = 0;
  while (true) {
    auto got = (*src)->next_batch(batch, link);
    if (!got) {
      fmt::print(stderr, "flowmark: error: {}\n", got.error().message());
      rc = kDataError;  // still flush what was decoded
      break;
    }
    if (*got == 0) break;
    obs->on_packets(link, std::span(batch).first(*got));
    if (progress && (++batches & 0xFF) == 0) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_progress > std::chrono::seconds(1)) {
        last_progress = now;
        fmt::print(
            stderr, "\r{:5.1f}%  {} packets  {} active flows ",
            100.0 * static_cast<double>((*src)->offset()) / static_cast<double>(*(*src)->size()),
            obs->stats().packets, obs->active_flows());
      }
    }
  }
  if (progress) fmt::print(stderr, "\r{:60}\r", "");
  const std::size_t active = obs->active_flows();
  obs->finish();
  flush_out();
  (void)std::fflush(stdout);
  g_source.store(nullptr);
  if (a.stats) print_stats(obs->stats(), **src, active);
  if (g_interrupted.load() && rc == kOk) rc = kInterrupted;
  return rc;
}

}  // namespace

Command add_observe_command(CLI::App& parent) {
  auto a = std::make_shared<ObserveArgs>();
  auto* sub = parent.add_subcommand(
      "observe", "group packets from a capture file or interface into bidirectional flows");
  sub->add_option("-r,--read", a->file, "pcap or pcapng file ('-': standard input)");
  sub->add_option("-i,--interface", a->iface, "live interface");
  sub->add_option("--filter", a->filter, "BPF filter expression");
  sub->add_option("--capture", a->capture,
                  "live capture back end: afpacket (default: TPACKET_V3 ring) or pcap (libpcap)");
  sub->add_option("--format", a->format, "jsonl (default) or csv");
  sub->add_option("--idle-timeout", a->idle, "seconds without a packet before a flow ends (30)");
  sub->add_option("--active-timeout", a->active,
                  "seconds after which long flows are emitted in parts (1800; 0: never)");
  sub->add_option("--expiry-delay", a->expiry,
                  "seconds between a flow's completion and its record (5)");
  sub->add_option("--max-flows", a->max_flows, "bound on concurrent flows (1048576)");
  sub->add_flag("--vlan", a->key_vlan, "the outer VLAN id is part of the flow key");
  sub->add_flag("--no-tcp-completion", a->no_tcp_completion,
                "do not complete TCP flows on FIN/RST (idle timeout only)");
  sub->add_flag("--stats", a->stats, "statistics on standard error at the end");
  sub->footer(
      "One record per flow on standard output (JSON lines: sip dip proto sp dp first last "
      "pkt_fwd pkt_rev oct_fwd oct_rev ...). Times are the capture's (packet clock).\n"
      "Exit codes: 0 success, 2 usage error, 65 corrupt capture (flows so far are still "
      "emitted), 66 input cannot be opened, 69 interface cannot be captured on, 130 "
      "interrupted (flows so far are emitted).");
  return {sub, [a] { return run_observe(*a); }};
}

}  // namespace flowmark::apps
