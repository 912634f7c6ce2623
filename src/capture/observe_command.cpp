#include "flowmark/capture/observe_command.hpp"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

#include <fmt/format.h>

#include "fanout_check.hpp"
#include "flowmark/capture/capture.hpp"
#include "flowmark/core/exit_code.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/net/ipfix_export.hpp"
#include "flowmark/observe/chains.hpp"
#include "flowmark/observe/ipfix.hpp"
#include "flowmark/observe/observer.hpp"
#include "flowmark/observe/record_format.hpp"
#include "observe_workers.hpp"

namespace flowmark::capture {
namespace {

constexpr std::size_t kMaxWorkers = 64;

// The captures a signal stops (a live interface observed by several workers: one socket each).
std::array<std::atomic<Capture*>, kMaxWorkers> g_sources{};
std::atomic<int> g_signal{0};  // the signal that ended the capture, if any

extern "C" void on_interrupt(int sig) {
  g_signal.store(sig);
  for (auto& s : g_sources) {
    if (auto* c = s.load()) c->break_loop();
  }
}

void clear_signal_sources() {
  for (auto& s : g_sources) s.store(nullptr);
}

// The CPUs this process may run on (its affinity mask): the default number of workers.
std::size_t available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return static_cast<std::size_t>(CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

observe::Nanos seconds_to_ns(double s) {
  return static_cast<observe::Nanos>(std::llround(s * 1e9));
}

// bytes_per_flow: Observer::bytes_per_flow(), the memory a flow costs with the chains asked for.
// who: "" for the whole run, " worker N" for one of --workers.
// drops: the kernel's (live captures), nullopt for files ("unknown").
void print_stats(const observe::ObserverStats& st, std::optional<std::uint64_t> drops,
                 std::size_t active, std::size_t bytes_per_flow, std::string_view who = "") {
  std::string out = fmt::format(
      "flowmark observe{}: {} packets, drops {}, short {}, non-IP {}, fragments {} ({} "
      "unmatched), flows {}, ignored {}, ignored_packets {}, late_packets {}, evicted {}, "
      "emitted {}, ICMP errors matched {}, still active at the end {}, bytes per flow {}\n",
      who, st.packets, drops ? std::to_string(*drops) : std::string("unknown"), st.short_packets,
      st.non_ip, st.fragments, st.fragments_unmatched, st.flows, st.ignored, st.ignored_packets,
      st.late_packets, st.evicted, st.emitted, st.icmp_errors_matched, active, bytes_per_flow);
  std::string errors;
  for (std::size_t i = 1; i < st.decode_errors.size(); ++i) {
    if (st.decode_errors[i] == 0) continue;
    errors += fmt::format(" {}={}", observe::to_string(static_cast<observe::DecodeError>(i)),
                          st.decode_errors[i]);
  }
  if (!errors.empty()) out += fmt::format("flowmark observe{}: decode errors:{}\n", who, errors);
  std::fputs(out.c_str(), stderr);
}

// A live AF_PACKET socket's counters (tpacket_stats_v3): "flowmark observe{who}: kernel: …".
void print_kernel_stats(const KernelStats& k, std::string_view who = "") {
  fmt::print(stderr, "flowmark observe{}: kernel: packets {}, drops {}, queue freezes {}\n", who,
             k.packets, k.drops, k.freeze_q);
}

// --summary scitags: flows, packets and octets per (experiment, activity), then unmarked IPv6
// and IPv4.
class ScitagsSummary {
 public:
  explicit ScitagsSummary(observe::ScitagsNames names) : names_(std::move(names)) {}

  void add(const observe::FlowRecord& r, const observe::ScitagsTag& t) {
    Row& row = t.source != observe::ScitagsTag::Source::kNone
                   ? marked_[{t.experiment, t.activity}]
                   : (r.ip_version == 6 ? unmarked6_ : ipv4_);
    ++row.flows;
    row.pkt_fwd += r.pkt_fwd;
    row.pkt_rev += r.pkt_rev;
    row.oct_fwd += r.oct_fwd;
    row.oct_rev += r.oct_rev;
    if (row.flows == 1 || r.first < row.first) row.first = r.first;
    if (row.flows == 1 || r.last > row.last) row.last = r.last;
  }

  std::string render(bool json) const {
    std::vector<Line> lines;
    for (const auto& [key, row] : marked_) {
      Line l{key.first, key.second, std::nullopt, std::nullopt, 6, row};
      if (names_.experiment) l.experiment_name = names_.experiment(key.first);
      if (names_.activity) l.activity_name = names_.activity(key.first, key.second);
      lines.push_back(std::move(l));
    }
    lines.push_back({std::nullopt, std::nullopt, std::nullopt, std::nullopt, 6, unmarked6_});
    lines.push_back({std::nullopt, std::nullopt, std::nullopt, std::nullopt, 4, ipv4_});
    return json ? render_json(lines) : render_text(lines);
  }

 private:
  struct Row {
    std::uint64_t flows = 0, pkt_fwd = 0, pkt_rev = 0, oct_fwd = 0, oct_rev = 0;
    observe::Nanos first = 0, last = 0;
  };
  struct Line {
    std::optional<std::uint32_t> experiment, activity;
    std::optional<std::string> experiment_name, activity_name;
    int ip_version;
    Row row;
  };
  static std::string seconds(observe::Nanos t) {
    const observe::Nanos ns = t % 1'000'000'000;
    return fmt::format("{}{}.{:09}", t < 0 && t > -1'000'000'000 ? "-" : "", t / 1'000'000'000,
                       ns < 0 ? -ns : ns);
  }
  static std::string json_string(const std::optional<std::string>& s) {
    if (!s) return "null";
    std::string quoted;
    append_json_string(quoted, *s);
    return quoted;
  }
  template <class T>
  static std::string or_null(const std::optional<T>& v) {
    return v ? fmt::format("{}", *v) : std::string("null");
  }
  static std::string render_json(const std::vector<Line>& lines) {
    std::string out = "[";
    for (std::size_t i = 0; i < lines.size(); ++i) {
      const Line& l = lines[i];
      const Row& r = l.row;
      out += fmt::format(
          "{}\n{{\"experiment\":{},\"activity\":{},\"experiment_name\":{},"
          "\"activity_name\":{},\"ip_version\":{},\"flows\":{},\"pkt_fwd\":{},"
          "\"pkt_rev\":{},\"oct_fwd\":{},\"oct_rev\":{},\"first\":{},\"last\":{}}}",
          i == 0 ? "" : ",", or_null(l.experiment), or_null(l.activity),
          json_string(l.experiment_name), json_string(l.activity_name), l.ip_version, r.flows,
          r.pkt_fwd, r.pkt_rev, r.oct_fwd, r.oct_rev, r.flows ? seconds(r.first) : "null",
          r.flows ? seconds(r.last) : "null");
    }
    out += "\n]\n";
    return out;
  }
  static std::string render_text(const std::vector<Line>& lines) {
    auto text = [](const auto& v) -> std::string {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::optional<std::string>>)
        return v ? *v : "-";
      else
        return v ? fmt::format("{}", *v) : "-";
    };
    std::string out = fmt::format(
        "{:>10} {:>8} {:<14} {:<14} {:>2} {:>9} {:>12} {:>12} {:>15} "
        "{:>15} {:>20} {:>20}\n",
        "experiment", "activity", "experiment_name", "activity_name", "ip", "flows", "pkt_fwd",
        "pkt_rev", "oct_fwd", "oct_rev", "first", "last");
    for (const Line& l : lines) {
      const Row& r = l.row;
      out += fmt::format(
          "{:>10} {:>8} {:<14} {:<14} {:>2} {:>9} {:>12} {:>12} {:>15} {:>15} {:>20} {:>20}\n",
          text(l.experiment), text(l.activity), text(l.experiment_name), text(l.activity_name),
          l.ip_version, r.flows, r.pkt_fwd, r.pkt_rev, r.oct_fwd, r.oct_rev,
          r.flows ? seconds(r.first) : "-", r.flows ? seconds(r.last) : "-");
    }
    return out;
  }

  observe::ScitagsNames names_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, Row> marked_;
  Row unmarked6_, ipv4_;
};

observe::ObserverStats& operator+=(observe::ObserverStats& a, const observe::ObserverStats& b) {
  a.packets += b.packets;
  a.non_ip += b.non_ip;
  a.short_packets += b.short_packets;
  a.fragments += b.fragments;
  a.fragments_unmatched += b.fragments_unmatched;
  a.icmp_errors_matched += b.icmp_errors_matched;
  a.flows += b.flows;
  a.ignored += b.ignored;
  a.evicted += b.evicted;
  a.emitted += b.emitted;
  for (std::size_t i = 0; i < a.decode_errors.size(); ++i) a.decode_errors[i] += b.decode_errors[i];
  a.ignored_packets += b.ignored_packets;
  a.late_packets += b.late_packets;
  return a;
}

void install_signal_handlers(std::span<Capture* const> srcs) {
  for (std::size_t i = 0; i < srcs.size() && i < g_sources.size(); ++i) g_sources[i].store(srcs[i]);
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// --ipfix: the writer and where its messages go (net::IpfixExporter: a file, standard output,
// a UDP or a TCP collector).
class IpfixOutput {
 public:
  // Opens the file or the socket; a message and an exit code when it cannot.
  std::optional<int> open(const ObserveOptions& a, const ObserveSetup& setup, std::FILE* out_file) {
    target_ = a.ipfix;
    // The scitags chain's labels and marking go in the IPv6 templates when it runs.
    const bool scitags =
        std::find(setup.chains.begin(), setup.chains.end(), "scitags") != setup.chains.end();
    stats_ = a.stats;
    timeout_ = std::chrono::milliseconds(std::llround(a.ipfix_timeout * 1000));
    auto exporter = net::IpfixExporter::open(
        a.ipfix, {.buffer_bytes = a.ipfix_buffer,
                  // A capture read faster than a connected collector takes the records waits
                  // for it rather than dropping them.
                  .wait_for_room = true,
                  .standard_output = out_file,
                  .log = [](std::string_view m) {
                    fmt::print(stderr, "flowmark observe: --ipfix {}\n", m);
                  }});
    if (!exporter) {
      fmt::print(stderr, "flowmark: error: --ipfix {}: {}\n", a.ipfix, exporter.error().message());
      return exporter.error().code() == Errc::kInvalidArgument ? kExitUsage : kExitIoErr;
    }
    exporter_ = std::move(*exporter);
    const bool udp = exporter_->kind() == net::IpfixExporter::Kind::kUdp;
    writer_.emplace(
        observe::IpfixOptions{.observation_domain = a.observation_domain,
                              // UDP: a message in one datagram under a 1500-byte MTU (IPv6
                              // and UDP headers taken off); a file or TCP: the largest message.
                              .max_message_size = a.ipfix_max_message != 0 ? a.ipfix_max_message
                                                  : udp                    ? 1400
                                                                           : 65535,
                              .uniflow = a.ipfix_uniflow,
                              .flow_label = scitags,
                              .scitags = scitags,
                              .nanoseconds = a.ipfix_times == "ns",
                              .template_refresh_messages = udp ? 100u : 0u,
                              .template_refresh_seconds = udp ? 60u : 0u,
                              .now = {}},
        [this](std::span<const std::uint8_t> m) {
          exporter_->send(m, writer_->records_in_message());
        });
    // Sent first on every TCP connection: a collector reached late, or again, learns them.
    exporter_->set_templates(writer_->templates_message());
    return std::nullopt;
  }

  // A record of `obs` (from its sink), with the scitags chain's labels and marking when it
  // runs.
  void add(const observe::FlowRecord& r, const observe::Observer& obs, std::size_t scitags) {
    observe::IpfixExtras x;
    if (scitags < obs.chains().size()) {
      const std::byte* st = obs.chain_state(r, scitags);
      const auto labels = observe::scitags_flow_labels(st);
      x.flow_label_fwd = labels.fwd;
      x.flow_label_rev = labels.rev;
      if (st != nullptr) {
        const observe::ScitagsTag tag = observe::scitags_tag(st);
        x.scitags_experiment = tag.experiment;
        x.scitags_activity = tag.activity;
      }
    }
    writer_->add(r, x);
  }

  // The message being built goes out now (a live capture: at least once a second, so that a
  // collector sees records as flows end, not when a message is full).
  void flush() { writer_->flush(); }

  // The last message out (TCP: up to --ipfix-timeout for the collector to take the buffer),
  // the file closed. A failed write makes rc kExitIoErr; records a TCP collector did not get,
  // kExitNothing.
  void finish(int& rc) {
    writer_->flush();
    const auto end = exporter_->finish(timeout_);
    const net::IpfixExportStats& s = end.stats;
    const auto kind = exporter_->kind();
    if (kind == net::IpfixExporter::Kind::kUdp && s.messages_dropped != 0)
      fmt::print(stderr, "flowmark observe: --ipfix {}: {} of {} messages not sent\n", target_,
                 s.messages_dropped, writer_->messages_written());
    if (kind == net::IpfixExporter::Kind::kTcp) {
      const std::uint64_t lost = s.records_dropped + end.not_delivered;
      if (lost != 0) {
        fmt::print(stderr,
                   "flowmark observe: --ipfix {}: {} records not delivered ({} dropped with the "
                   "buffer full, {} still buffered after {:g} s)\n",
                   target_, lost, s.records_dropped, end.not_delivered,
                   static_cast<double>(timeout_.count()) / 1000);
        if (rc == kExitOk) rc = kExitNothing;
      }
    }
    if (stats_)
      fmt::print(stderr,
                 "flowmark observe: --ipfix {}: messages {}, records {}, bytes {}, connections {}, "
                 "reconnects {}, records dropped {}, not delivered {}\n",
                 target_, s.messages, s.records, s.bytes, s.connections, s.reconnects,
                 s.records_dropped, end.not_delivered);
    if (end.error) {
      fmt::print(stderr, "flowmark: error: --ipfix {}: {}\n", target_, end.error->message());
      if (rc == kExitOk || rc == kExitNothing) rc = kExitIoErr;
    }
  }

 private:
  std::string target_;
  bool stats_ = false;
  std::chrono::milliseconds timeout_{5000};
  std::unique_ptr<net::IpfixExporter> exporter_;
  std::optional<observe::IpfixWriter> writer_;
};

double thread_cpu_seconds() noexcept {
  timespec ts{};
  (void)clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A live interface with one AF_PACKET socket per worker (a fanout group): each worker thread
// reads its socket and observes what it gets, with no thread in between. A worker's packet
// clock moves with its own frames; when its socket has had none for a while (~100 ms) it
// is moved to the latest time any worker has seen, less kIdleLag (a frame stamped before that
// may still be in a block the kernel has not handed over), so that its timers fire in a
// quiet share of the traffic too, and its records so far are written (as they are at least
// once a second while it is busy).
// done(i) runs in worker i's thread after its observer finished (or flushes, with final
// false, when it is idle). Returns the first capture error, if any (the other workers are then
// stopped too).
// Every TCP SYN and SYN-ACK also goes to `check` (fanout_check.hpp).
Result<void> observe_sockets(std::span<Capture* const> caps,
                             std::span<observe::Observer* const> workers,
                             const std::function<void(std::size_t, bool)>& done,
                             WorkerFeedStats& stats, FanoutCheck& check) {
  constexpr observe::Nanos kIdleLag = 1'000'000'000;
  constexpr auto kFlushEvery = std::chrono::seconds(1);
  const std::size_t n = workers.size();
  stats.late_packets.assign(n, 0);
  stats.frames.assign(n, 0);
  stats.active.assign(n, 0);
  stats.cpu_seconds.assign(n, 0);
  std::atomic<observe::Nanos> latest{std::numeric_limits<observe::Nanos>::min() / 2};
  std::mutex error_mu;
  Result<void> result;
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (std::size_t w = 0; w < n; ++w) {
    threads.emplace_back([&, w] {
      Capture& cap = *caps[w];
      observe::Observer& obs = *workers[w];
      cap.set_return_when_idle(true);
      std::array<observe::FrameRef, 256> batch;
      observe::LinkType link = observe::LinkType::kEthernet;
      observe::Nanos told = std::numeric_limits<observe::Nanos>::min() / 2;
      auto flushed = std::chrono::steady_clock::now();
      for (;;) {
        auto got = cap.next_batch(batch, link);
        if (!got) {
          {
            std::lock_guard lock(error_mu);
            if (result) result = std::unexpected(std::move(got).error());
          }
          for (Capture* c : caps) c->break_loop();
          break;
        }
        if (*got == 0) {
          if (!cap.idle()) break;  // stopped
          const observe::Nanos to = latest.load(std::memory_order_relaxed) - kIdleLag;
          if (to > told) {
            obs.advance_clock(to);
            told = to;
          }
          done(w, false);
          flushed = std::chrono::steady_clock::now();
          continue;
        }
        obs.on_packets(link, std::span(batch).first(*got));
        for (std::size_t i = 0; i < *got; ++i) check.see(w, link, batch[i].frame);
        if (const auto now = std::chrono::steady_clock::now(); now - flushed > kFlushEvery) {
          done(w, false);
          flushed = now;
        }
        stats.frames[w] += *got;
        observe::Nanos t = batch[*got - 1].ts_ns;
        observe::Nanos seen = latest.load(std::memory_order_relaxed);
        while (t > seen && !latest.compare_exchange_weak(seen, t, std::memory_order_relaxed)) {
        }
      }
      stats.active[w] = obs.active_flows();
      obs.finish();
      done(w, true);
      stats.cpu_seconds[w] = thread_cpu_seconds();
    });
  }
  for (auto& t : threads) t.join();
  return result;
}

// --workers N (N > 1): one Observer a thread, fed by the reader of a capture file
// (observe_workers.hpp) or by a socket of its own (a live interface, observe_sockets); each
// formats its records into a buffer of its own, written whole under one lock (lines never
// interleave).
int run_workers(const ObserveOptions& a, ObserveSetup& setup, const std::string& format,
                bool summary, std::FILE* out_file, IpfixOutput* ipfix_out, bool text_records) {
  auto& src = setup.capture;
  const bool csv = format == "csv";
  const std::size_t n = setup.workers;
  // A live interface: one socket a worker (one worker too: this loop moves an idle socket's
  // clock and writes the records at least once a second).
  const bool live_sockets = !setup.sockets.empty() || !a.iface.empty();
  std::vector<Capture*> caps{src.get()};
  for (auto& c : setup.sockets) caps.push_back(c.get());
  std::mutex out_mu;
  ScitagsSummary table(setup.chain_options.names);
  struct Worker {
    std::unique_ptr<observe::Observer> obs;
    std::string out;
    std::size_t scitags_index = 0;
    std::size_t active = 0;
  };
  std::vector<Worker> ws(n);
  auto flush = [&](Worker& w) {
    if (w.out.empty()) return;
    std::lock_guard lock(out_mu);
    (void)std::fwrite(w.out.data(), 1, w.out.size(), out_file);
    if (live_sockets) (void)std::fflush(out_file);
    w.out.clear();
  };
  std::string header;
  for (std::size_t i = 0; i < n; ++i) {
    Worker& w = ws[i];
    w.out.reserve(1 << 20);
    w.obs = std::make_unique<observe::Observer>(setup.config, [&, i](const observe::FlowRecord& r) {
      Worker& me = ws[i];
      if (summary) {
        const auto tag = observe::scitags_tag(me.obs->chain_state(r, me.scitags_index));
        std::lock_guard lock(out_mu);
        table.add(r, tag);
        return;
      }
      if (ipfix_out) {
        std::lock_guard lock(out_mu);
        ipfix_out->add(r, *me.obs, me.scitags_index);
      }
      if (!text_records) return;
      if (csv) {
        observe::append_record_csv(me.out, r, me.obs.get());
      } else {
        observe::append_record_json(me.out, r, me.obs.get());
      }
      if (me.out.size() > (1 << 20) - 4096) flush(me);
    });
    w.scitags_index = setup.add_to(*w.obs);
  }
  if (csv && text_records) {
    observe::append_csv_header(header, ws[0].obs.get());
    (void)std::fwrite(header.data(), 1, header.size(), out_file);
    if (live_sockets) (void)std::fflush(out_file);
  }
  install_signal_handlers(caps);
  const bool progress = isatty(STDERR_FILENO) != 0 && src->size().has_value();
  auto last_progress = std::chrono::steady_clock::now();
  std::vector<observe::Observer*> observers;
  for (auto& w : ws) observers.push_back(w.obs.get());
  WorkerFeedStats feed;
  FanoutCheck fanout_check;
  auto on_progress = [&](std::uint64_t frames, std::uint64_t offset) {
    if (!progress) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_progress < std::chrono::seconds(1)) return;
    last_progress = now;
    fmt::print(stderr, "\r{:5.1f}%  {} packets ",
               100.0 * static_cast<double>(offset) / static_cast<double>(*src->size()), frames);
  };
  auto result = live_sockets
                    ? observe_sockets(
                          caps, observers,
                          [&](std::size_t i, bool) {
                            flush(ws[i]);
                            if (ipfix_out) {
                              std::lock_guard lock(out_mu);
                              ipfix_out->flush();
                            }
                          },
                          feed, fanout_check)
                    : observe_with_workers(
                          *src, observers, [&](std::size_t i) { flush(ws[i]); }, on_progress, feed);
  if (progress) fmt::print(stderr, "\r{:60}\r", "");
  int rc = kExitOk;
  if (!result) {
    fmt::print(stderr, "flowmark: error: {}\n", result.error().message());
    rc = kExitDataErr;
  }
  if (summary) {
    const std::string text = table.render(format == "json");
    (void)std::fwrite(text.data(), 1, text.size(), out_file);
  }
  if (ipfix_out) ipfix_out->finish(rc);
  (void)std::fflush(out_file);
  clear_signal_sources();
  if (fanout_check.splits() != 0) {
    fmt::print(stderr,
               "flowmark observe: warning: -i {}: {} of {} TCP handshakes had their SYN and "
               "SYN-ACK on different sockets: the kernel's fanout split those flows (a record "
               "for each direction); use --workers 1 on this kernel\n",
               a.iface, fanout_check.splits(), fanout_check.handshakes());
  }
  if (a.stats) {
    // The summed line first, then one a worker (with its socket's counters when live).
    observe::ObserverStats sum;
    std::size_t active = 0;
    std::vector<observe::ObserverStats> each(n);
    std::vector<std::optional<std::uint64_t>> drops(n);
    std::vector<std::optional<KernelStats>> kernel(n);
    std::optional<std::uint64_t> all_drops;
    KernelStats all_kernel;
    for (std::size_t i = 0; i < n; ++i) {
      each[i] = ws[i].obs->stats();
      each[i].late_packets += feed.late_packets[i];
      sum += each[i];
      active += feed.active[i];
      if (live_sockets) {
        drops[i] = caps[i]->drops();
        kernel[i] = caps[i]->kernel_stats();
        if (drops[i]) all_drops = all_drops.value_or(0) + *drops[i];
        if (kernel[i]) {
          all_kernel.packets += kernel[i]->packets;
          all_kernel.drops += kernel[i]->drops;
          all_kernel.freeze_q += kernel[i]->freeze_q;
        }
      }
    }
    print_stats(sum, live_sockets ? all_drops : src->drops(), active, ws[0].obs->bytes_per_flow());
    if (std::any_of(kernel.begin(), kernel.end(), [](const auto& k) { return k.has_value(); }))
      print_kernel_stats(all_kernel);
    // One worker (a live capture with --workers 1): the lines above are its own.
    if (n == 1) {
      if (g_signal.load() != 0 && rc == kExitOk) rc = exit_code_for_signal(g_signal.load());
      return rc;
    }
    if (live_sockets) {
      fmt::print(stderr,
                 "flowmark observe: fanout check: {} TCP handshakes seen on the sockets, {} "
                 "split between two\n",
                 fanout_check.handshakes(), fanout_check.splits());
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::string who = fmt::format(" worker {}", i);
      print_stats(each[i], live_sockets ? drops[i] : src->drops(), feed.active[i],
                  ws[i].obs->bytes_per_flow(), who);
      if (kernel[i]) print_kernel_stats(*kernel[i], who);
    }
    std::string cpu;
    for (double c : feed.cpu_seconds) cpu += fmt::format(" {:.3f}", c);
    if (live_sockets)
      fmt::print(stderr, "flowmark observe threads: CPU seconds: workers{}\n", cpu);
    else if (feed.shared_reading)
      fmt::print(stderr,
                 "flowmark observe threads: CPU seconds: workers{} (the workers read the file: "
                 "{} chunks, {} read again)\n",
                 cpu, feed.chunks, feed.chunks_read_again);
    else
      fmt::print(stderr, "flowmark observe threads: CPU seconds: reader {:.3f}, workers{}\n",
                 feed.reader_cpu_seconds, cpu);
  }
  if (g_signal.load() != 0 && rc == kExitOk) rc = exit_code_for_signal(g_signal.load());
  return rc;
}

// A capture file. A regular file is read with read(2): one worker into one buffer, several
// (a pcap file without a filter) each into buffers of their own (observe_workers.cpp).
// Mapping the file costs page-table work for every 4 KiB page on the first touch (about 1 µs
// a page on a host with shadow page tables, more than the copy). Several workers fed by a
// reader thread (pcapng, a filter) take frames by pointer from the mapped file instead.
// `workers` 0 (not given) is decided here: the cores for a file the workers can share (pcap,
// no filter; two were 1.08x one at 10,000 flows, 1.19x at 1,000,000 on 2 cores, quiet), else one
// (a reader thread feeding workers gains less than it costs).
Result<std::unique_ptr<Capture>> open_input_file(const std::string& file, std::string_view filter,
                                                 std::size_t& workers) {
  struct stat st {};
  if (file != "-" && ::stat(file.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
    FM_TRY(auto cap, open_read_file(file, filter));
    const bool shared = cap->file_to_share().parser != nullptr;
    if (workers == 0) workers = shared ? std::min(available_cores(), kMaxWorkers) : 1;
    if (workers == 1 || shared) return cap;
  }
  if (workers == 0) workers = 1;
  return open_file_capture(file, filter);
}

}  // namespace

std::expected<ObserveSetup, ObserveSetupError> prepare_observe(const ObserveOptions& a,
                                                               bool with_scitags) {
  auto usage = [](std::string message) {
    return std::unexpected(
        ObserveSetupError{Error(Errc::kInvalidArgument, std::move(message)), kExitUsage});
  };
  if (a.file.empty() == a.iface.empty()) return usage("give either -r FILE or -i IFACE");
  ObserveSetup setup;
  auto chain_names = observe::parse_chain_list(a.chains);
  if (!chain_names) return usage(chain_names.error().message());
  setup.chains = std::move(*chain_names);
  // The summary needs the scitags chain; it writes no records, so adding it changes nothing
  // else.
  const bool has_scitags =
      std::find(setup.chains.begin(), setup.chains.end(), "scitags") != setup.chains.end();
  if (with_scitags && !has_scitags) setup.chains.emplace_back("scitags");
  if ((with_scitags || has_scitags) && a.scitags_names) {
    auto names = a.scitags_names();
    if (!names) {
      const int code = names.error().code() == Errc::kInvalidArgument ? kExitUsage : kExitNoInput;
      return std::unexpected(ObserveSetupError{std::move(names).error(), code});
    }
    setup.chain_options.names = std::move(*names);
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
    if (!(b.value >= b.low) || b.value > 1e7)
      return usage(fmt::format("{} {}: expected {} seconds", b.name, b.value,
                               b.low > 0 ? "more than 0 and at most 10000000" : "0..10000000"));
  }
  if (a.max_flows == 0) return usage("--max-flows 0: expected at least 1");
  if (a.workers > kMaxWorkers)
    return usage(fmt::format("--workers {}: expected 0 (the cores available) or 1..{}", a.workers,
                             kMaxWorkers));
  if (a.capture != "afpacket" && a.capture != "pcap")
    return usage(fmt::format("--capture {}: expected afpacket or pcap", a.capture));
  const bool live_pcap = !a.iface.empty() && a.capture == "pcap";
  if (a.workers > 1 && a.icmp_flows)
    return usage(
        fmt::format("--workers {} with --icmp-flows: not supported yet (an ICMP error "
                    "would count in two workers' flows); use --workers 1",
                    a.workers));
  if (a.workers > 1 && live_pcap)
    return usage(
        fmt::format("--workers {} with --capture pcap: one worker only (libpcap has no "
                    "fanout); use --capture afpacket for several, or --workers 1",
                    a.workers));
  // 0: a live interface gets a worker per core available (where several are allowed); a file
  // is decided when it is opened (open_input_file).
  setup.workers = a.workers != 0                 ? a.workers
                  : a.icmp_flows || live_pcap    ? 1
                  : a.iface.empty()              ? 0
                                                 : std::min(available_cores(), kMaxWorkers);
  if (!a.iface.empty() && a.capture == "afpacket" && setup.workers > 1) {
    auto socks = open_afpacket_fanout(a.iface, a.filter, setup.workers);
    if (socks) {
      setup.capture = std::move(socks->front());
      for (std::size_t i = 1; i < socks->size(); ++i)
        setup.sockets.push_back(std::move((*socks)[i]));
    } else if (socks.error().code() == Errc::kUnsupported) {
      // The kernel cannot spread the frames by flow: one socket sees them all.
      setup.notice =
          fmt::format("{}; observing with one worker and one socket", socks.error().message());
      setup.workers = 1;
    } else {
      const int code = socks.error().code() == Errc::kInvalidArgument
                           ? kExitUsage
                           : exit_code_for(socks.error());
      return std::unexpected(ObserveSetupError{std::move(socks).error(), code});
    }
  }
  auto src = setup.capture    ? Result<std::unique_ptr<Capture>>(std::move(setup.capture))
             : a.file.empty() ? open_live_capture(a.iface, a.filter,
                                                  a.capture == "pcap" ? LiveBackend::kPcap
                                                                      : LiveBackend::kAfPacket)
                              : open_input_file(a.file, a.filter, setup.workers);
  if (!src) {
    // A file that cannot be opened is missing input; an interface that cannot be captured
    // on gets the code of the cause (no such interface, refused, not permitted).
    const int code = src.error().code() == Errc::kInvalidArgument ? kExitUsage
                     : a.file.empty()                             ? exit_code_for(src.error())
                                                                  : kExitNoInput;
    return std::unexpected(ObserveSetupError{std::move(src).error(), code});
  }
  setup.capture = std::move(*src);
  setup.config.idle_timeout_ns = seconds_to_ns(a.idle_timeout);
  setup.config.active_timeout_ns = seconds_to_ns(a.active_timeout);
  setup.config.expiry_delay_ns = seconds_to_ns(a.expiry_delay);
  setup.config.max_flows = a.max_flows;
  setup.config.key_vlan = a.key_vlan;
  setup.config.icmp_flows = a.icmp_flows;
  setup.tcp_completion = !a.no_tcp_completion;
  return setup;
}

std::size_t ObserveSetup::add_to(observe::Observer& obs) const {
  std::size_t scitags_index = obs.chains().size();
  if (tcp_completion) obs.add_tcp(observe::tcp_complete_on_fin_or_rst);
  for (const auto& name : chains) {
    if (auto c = observe::make_chain(name, chain_options)) {
      if (name == "scitags") scitags_index = obs.chains().size();
      obs.add_chain(std::move(c));
    }
  }
  return scitags_index;
}

int run_observe(const ObserveOptions& a, std::FILE* out_file) {
  if (a.file.empty() == a.iface.empty()) {
    fmt::print(stderr, "flowmark: error: give either -r FILE or -i IFACE\n");
    return kExitUsage;
  }
  if (!a.summary.empty() && a.summary != "scitags") {
    fmt::print(stderr, "flowmark: error: --summary {}: expected scitags\n", a.summary);
    return kExitUsage;
  }
  const bool summary = !a.summary.empty();
  const bool ipfix = !a.ipfix.empty();
  if (ipfix && summary) {
    fmt::print(stderr, "flowmark: error: --ipfix and --summary cannot be used together\n");
    return kExitUsage;
  }
  if (ipfix && a.ipfix == "-" && !a.format.empty()) {
    fmt::print(stderr,
               "flowmark: error: --ipfix - writes IPFIX to standard output: give a file to "
               "--ipfix to have --format {} records on standard output too\n",
               a.format);
    return kExitUsage;
  }
  if (ipfix && a.ipfix_max_message != 0 &&
      (a.ipfix_max_message < 512 || a.ipfix_max_message > 65535)) {
    fmt::print(stderr, "flowmark: error: --ipfix-max-message {}: expected 512..65535 bytes\n",
               a.ipfix_max_message);
    return kExitUsage;
  }
  if (ipfix && a.ipfix_times != "ms" && a.ipfix_times != "ns") {
    fmt::print(stderr, "flowmark: error: --ipfix-times {}: expected ms or ns\n", a.ipfix_times);
    return kExitUsage;
  }
  if (ipfix && (!(a.ipfix_timeout >= 0) || a.ipfix_timeout > 86400)) {
    fmt::print(stderr, "flowmark: error: --ipfix-timeout {}: expected 0..86400 seconds\n",
               a.ipfix_timeout);
    return kExitUsage;
  }
  // With --ipfix, text records are written only when a format is asked for explicitly.
  const bool text_records = !summary && !(ipfix && a.format.empty());
  const std::string format = a.format.empty() ? (summary ? "text" : "jsonl") : a.format;
  if (!summary && format != "jsonl" && format != "csv") {
    fmt::print(stderr, "flowmark: error: --format {}: expected jsonl or csv\n", format);
    return kExitUsage;
  }
  if (summary && format != "text" && format != "json") {
    fmt::print(stderr, "flowmark: error: --format {}: expected text or json with --summary\n",
               format);
    return kExitUsage;
  }
  auto setup = prepare_observe(a, summary);
  if (!setup) {
    fmt::print(stderr, "flowmark: error: {}\n", setup.error().error.message());
    return setup.error().exit_code;
  }
  auto& src = setup->capture;
  // ipClassOfService: the first packet's TOS each way, in the record.
  if (ipfix) setup->config.record_tos = true;
  const observe::ObserverConfig& cfg = setup->config;
  // The IPFIX file or socket is opened before the capture runs, so that a bad path fails at
  // once.
  std::optional<IpfixOutput> ipfix_out;
  if (ipfix) {
    if (auto code = ipfix_out.emplace().open(a, *setup, out_file)) return *code;
  }
  IpfixOutput* ipfix_ptr = ipfix_out ? &*ipfix_out : nullptr;
  if (!setup->notice.empty()) fmt::print(stderr, "flowmark observe: {}\n", setup->notice);
  if (setup->workers > 1 || !a.iface.empty())
    return run_workers(a, *setup, format, summary, out_file, ipfix_ptr, text_records);

  const bool csv = format == "csv";
  std::string out;
  out.reserve(1 << 20);
  auto flush_out = [&] {
    if (!out.empty()) (void)std::fwrite(out.data(), 1, out.size(), out_file);
    out.clear();
  };
  std::unique_ptr<observe::Observer> obs;
  ScitagsSummary table(setup->chain_options.names);
  std::size_t scitags_index = 0;
  obs = std::make_unique<observe::Observer>(cfg, [&](const observe::FlowRecord& r) {
    if (summary) {
      table.add(r, observe::scitags_tag(obs->chain_state(r, scitags_index)));
      return;
    }
    if (ipfix_ptr) ipfix_ptr->add(r, *obs, scitags_index);
    if (!text_records) return;
    if (csv) {
      observe::append_record_csv(out, r, obs.get());
    } else {
      observe::append_record_json(out, r, obs.get());
    }
    if (out.size() > (1 << 20) - 4096) flush_out();
  });
  scitags_index = setup->add_to(*obs);
  if (csv && text_records) observe::append_csv_header(out, obs.get());

  Capture* const only[] = {src.get()};
  install_signal_handlers(only);

  const bool progress = isatty(STDERR_FILENO) != 0 && src->size().has_value();
  auto last_progress = std::chrono::steady_clock::now();
  // Frames go to the observer in batches: it decodes ahead and loads their flows from memory
  // while it counts earlier ones (see Observer::on_packets).
  std::array<observe::FrameRef, 256> batch;
  observe::LinkType link = observe::LinkType::kEthernet;
  int rc = kExitOk;
  std::uint64_t batches = 0;
  while (true) {
    auto got = src->next_batch(batch, link);
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
        fmt::print(stderr, "\r{:5.1f}%  {} packets  {} active flows ",
                   100.0 * static_cast<double>(src->offset()) / static_cast<double>(*src->size()),
                   obs->stats().packets, obs->active_flows());
      }
    }
  }
  if (progress) fmt::print(stderr, "\r{:60}\r", "");
  const std::size_t active = obs->active_flows();
  obs->finish();
  if (summary) out += table.render(format == "json");
  flush_out();
  if (ipfix_ptr) ipfix_ptr->finish(rc);
  (void)std::fflush(out_file);
  clear_signal_sources();
  if (a.stats) {
    print_stats(obs->stats(), src->drops(), active, obs->bytes_per_flow());
    if (auto k = src->kernel_stats()) print_kernel_stats(*k);
  }
  if (g_signal.load() != 0 && rc == kExitOk) rc = exit_code_for_signal(g_signal.load());
  return rc;
}

std::string observe_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitNothing, "--ipfix tcp://: records not delivered to the collector"},
      {kExitUsage},
      {kExitDataErr, "a corrupt capture (the flows decoded so far are still emitted)"},
      {kExitNoInput, "the capture file cannot be opened"},
      {kExitNoInterface},
      {kExitUnavailable, "a capture on the interface"},
      {kExitSoftware},
      {kExitIoErr, "the --ipfix file cannot be opened or written"},
      {kExitNoPermission},
      {kExitInterrupted, "the flows so far are emitted"},
      {kExitTerminated, "the flows so far are emitted"},
  });
}

}  // namespace flowmark::capture
