#include "flowmark/capture/observe_command.hpp"

#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <memory>

#include <fmt/format.h>

#include "flowmark/capture/capture.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"

namespace flowmark::capture {
namespace {

std::atomic<Capture*> g_source{nullptr};
std::atomic<int> g_signal{0};  // the signal that ended the capture, if any

extern "C" void on_interrupt(int sig) {
  g_signal.store(sig);
  if (auto* s = g_source.load()) s->break_loop();
}

observe::Nanos seconds_to_ns(double s) {
  return static_cast<observe::Nanos>(std::llround(s * 1e9));
}

void print_stats(const observe::ObserverStats& st, const Capture& src, std::size_t active) {
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

}  // namespace

int run_observe(const ObserveOptions& a, std::FILE* out_file) {
  if (a.file.empty() == a.iface.empty()) {
    fmt::print(stderr, "flowmark: error: give either -r FILE or -i IFACE\n");
    return kExitUsage;
  }
  if (a.format != "jsonl" && a.format != "csv") {
    fmt::print(stderr, "flowmark: error: --format {}: expected jsonl or csv\n", a.format);
    return kExitUsage;
  }
  // The idle timeout must be positive (0 would end every flow at once); an active timeout
  // of 0 turns the splitting of long flows off; an expiry delay of 0 emits at completion.
  struct Bound {
    const char* name;
    double value, low;
  };
  for (const Bound b : {Bound{"--idle-timeout", a.idle_timeout, 1e-9},
                        Bound{"--active-timeout", a.active_timeout, 0},
                        Bound{"--expiry-delay", a.expiry_delay, 0}}) {
    if (!(b.value >= b.low) || b.value > 1e7) {
      fmt::print(stderr, "flowmark: error: {} {}: expected {} seconds\n", b.name, b.value,
                 b.low > 0 ? "more than 0 and at most 10000000" : "0..10000000");
      return kExitUsage;
    }
  }
  if (a.max_flows == 0) {
    fmt::print(stderr, "flowmark: error: --max-flows 0: expected at least 1\n");
    return kExitUsage;
  }
  if (a.capture != "afpacket" && a.capture != "pcap") {
    fmt::print(stderr, "flowmark: error: --capture {}: expected afpacket or pcap\n", a.capture);
    return kExitUsage;
  }
  auto src = a.file.empty() ? open_live_capture(
                                  a.iface, a.filter,
                                  a.capture == "pcap" ? LiveBackend::kPcap : LiveBackend::kAfPacket)
                            : open_file_capture(a.file, a.filter);
  if (!src) {
    fmt::print(stderr, "flowmark: error: {}\n", src.error().message());
    if (src.error().code() == Errc::kInvalidArgument) return kExitUsage;
    // A file that cannot be opened is missing input; an interface that cannot be captured
    // on gets the code of the cause (no such interface, refused, not permitted).
    return a.file.empty() ? exit_code_for(src.error()) : kExitNoInput;
  }
  observe::ObserverConfig cfg;
  cfg.idle_timeout_ns = seconds_to_ns(a.idle_timeout);
  cfg.active_timeout_ns = seconds_to_ns(a.active_timeout);
  cfg.expiry_delay_ns = seconds_to_ns(a.expiry_delay);
  cfg.max_flows = a.max_flows;
  cfg.key_vlan = a.key_vlan;
  cfg.icmp_flows = a.icmp_flows;

  const bool csv = a.format == "csv";
  std::string out;
  out.reserve(1 << 20);
  auto flush_out = [&] {
    if (!out.empty()) (void)std::fwrite(out.data(), 1, out.size(), out_file);
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
  struct sigaction sa {};
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
  int rc = kExitOk;
  std::uint64_t batches = 0;
  while (true) {
    auto got = (*src)->next_batch(batch, link);
    if (!got) {
      fmt::print(stderr, "flowmark: error: {}\n", got.error().message());
      rc = kExitDataErr;  // still flush what was decoded
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
  (void)std::fflush(out_file);
  g_source.store(nullptr);
  if (a.stats) print_stats(obs->stats(), **src, active);
  if (g_signal.load() != 0 && rc == kExitOk) rc = exit_code_for_signal(g_signal.load());
  return rc;
}

std::string observe_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitUsage},
      {kExitDataErr, "a corrupt capture (the flows decoded so far are still emitted)"},
      {kExitNoInput, "the capture file cannot be opened"},
      {kExitNoInterface},
      {kExitUnavailable, "a capture on the interface"},
      {kExitSoftware},
      {kExitNoPermission},
      {kExitInterrupted, "the flows so far are emitted"},
      {kExitTerminated, "the flows so far are emitted"},
  });
}

}  // namespace flowmark::capture
