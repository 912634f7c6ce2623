#include "flowmark/scitags/firefly_commands.hpp"
#include "flowmark/core/time.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "firefly_json.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/core/option_value.hpp"
#include "flowmark/net/resolve.hpp"
#include "flowmark/scitags/firefly_sender.hpp"
#include "flowmark/scitags/pipe_line.hpp"
#include "flowmark/scitags/registry.hpp"
#include "flowmark/scitags/registry_command.hpp"

namespace flowmark::scitags {
namespace {

int report(const Error& e) {
  spdlog::error("{}", e.message());
  return exit_code_for(e);
}

void write_all(std::FILE* out, std::string& s) {
  if (s.empty()) return;
  // A closed stdout ends the process by SIGPIPE, like any filter; nothing to recover here.
  (void)std::fwrite(s.data(), 1, s.size(), out);
  (void)std::fflush(out);
  s.clear();
}

// Lines of a stream, without their newline, with no limit on their length.
class LineReader {
 public:
  explicit LineReader(std::FILE* in) : in_(in) {}
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  ~LineReader() { std::free(line_); }
  bool next(std::string_view& line) {
    const ssize_t n = getline(&line_, &cap_, in_);
    if (n < 0) return false;
    line = {line_, static_cast<std::size_t>(n)};
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    ++number_;
    return true;
  }
  std::size_t number() const noexcept { return number_; }

 private:
  std::FILE* in_;
  char* line_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t number_ = 0;
};

void append_time(std::string& out, Micros t) {
  if (t <= 0) {
    out.push_back('-');
    return;
  }
  char buf[kRfc3339MicrosSize];
  format_rfc3339_micros(buf, t);
  out.append(buf, kRfc3339MicrosSize);
}

// ---- send -------------------------------------------------------------------------------

class SendRun {
 public:
  SendRun(const FireflySendOptions& o, const Registry& registry)
      : o_(o),
        registry_(registry),
        tx_({.ttl = o.ttl, .iface = o.iface, .sndbuf = 0, .gso = o.gso}),
        encoder_({.hostname = o.hostname}) {}

  // Checks the fixed destinations (--to, --collector) before anything is sent.
  Result<void> prepare() {
    if (o_.collectors_only && o_.collectors.empty())
      return fail(Errc::kInvalidArgument, "--collectors-only needs at least one --collector");
    if (o_.to && !o_.collectors_only) {
      FM_TRY(auto to, tx_.prepare(*o_.to));
      fixed_.push_back(to);
    }
    for (const Endpoint& c : o_.collectors) {
      FM_TRY(auto to, tx_.prepare(c));
      fixed_.push_back(to);
    }
    return {};
  }

  // Stamps the times, encodes, and sends to every destination. Tries them all; returns the
  // first failure.
  Result<void> send(FlowEvent e, std::uint64_t repeat = 1) {
    const Micros now = now_micros();
    e.start_time = o_.start_time.value_or(now);
    if (e.state == FlowState::kEnd) e.end_time = std::max(now, e.start_time);
    FM_TRY(std::string_view wire, encoder_.encode(e, now));
    std::vector<Endpoint> dests;
    if (!o_.to && !o_.collectors_only) {
      FM_TRY(auto to, tx_.prepare({e.dst.address, kFireflyPort}));
      dests.push_back(to);
    }
    dests.insert(dests.end(), fixed_.begin(), fixed_.end());
    std::optional<Error> first;
    for (const Endpoint& to : dests) {
      Result<void> r;
      if (repeat == 1) {
        r = tx_.send(to, wire);
      } else {
        auto n = tx_.send_repeated(to, wire, repeat, o_.rate);
        if (n) spdlog::debug("sent {} of {} fireflies to {}", *n, repeat, to.to_string());
        if (!n) r = std::unexpected(std::move(n.error()));
      }
      if (!r && !first) first = std::move(r.error());
    }
    if (first) return std::unexpected(std::move(*first));
    return {};
  }

  int one_flow() {
    std::vector<std::string_view> tokens(o_.flow.begin(), o_.flow.end());
    auto e = parse_pipe_tokens(tokens, registry_);
    if (!e) {
      spdlog::error("{}", e.error().message);
      return kExitUsage;
    }
    if (auto r = send(*e, o_.repeat); !r) return report(r.error());
    if (tx_.refused() > 0) {
      spdlog::warn(
          "{} firefly datagram(s) refused by the local kernel (a full queue or a "
          "firewall rule)",
          tx_.refused());
      return kExitNothing;
    }
    return kExitOk;
  }

  int lines(std::FILE* in) {
    LineReader reader(in);
    std::string_view line;
    std::uint64_t sent = 0, rejected = 0, failed = 0;
    while (reader.next(line)) {
      if (is_blank_line(line)) continue;
      auto e = parse_pipe_line(line, registry_);
      if (!e) {
        spdlog::error("line {}: {}", reader.number(), e.error().message);
        ++rejected;
        continue;
      }
      if (auto r = send(*e); !r) {
        spdlog::error("line {}: {}", reader.number(), r.error().message());
        ++failed;
        continue;
      }
      ++sent;
    }
    if (std::ferror(in)) {
      spdlog::error("reading standard input: {}", std::strerror(errno));
      return kExitSoftware;
    }
    if (rejected + failed == 0) return kExitOk;
    spdlog::warn("{} firefly(s) sent; {} line(s) rejected, {} not sent", sent, rejected, failed);
    return kExitNothing;
  }

 private:
  const FireflySendOptions& o_;
  const Registry& registry_;
  FireflySender tx_;
  FireflyEncoder encoder_;
  std::vector<Endpoint> fixed_;
};

// ---- listen -----------------------------------------------------------------------------

class ListenSink : public FireflySink {
 public:
  ListenSink(const FireflyListenOptions& o, std::FILE* out, FireflyListener& listener,
             EventLoop& loop)
      : o_(o), file_(out), listener_(listener), loop_(loop) {
    out_.reserve(1 << 16);
  }

  void on_firefly(const Endpoint& sender, const Firefly& f) override {
    if (o_.format == FireflyFormat::kJson) {
      out_ += R"({"sender":")";
      detail::append_ip_text(out_, sender.address);
      fmt::format_to(std::back_inserter(out_), R"(","sport":{},"firefly":)", sender.port);
      append_firefly_json(out_, f);
      out_ += "}\n";
    } else {
      append_firefly_text(out_, sender, f);
      out_.push_back('\n');
    }
    counted();
  }

  void on_reject(const Endpoint& sender, const Rejection& r) override {
    log_.log(sender, r);
    counted();
  }

  // Output is written once per wake-up (on_idle), or sooner when 64 KiB have gathered.
  // The idle timeout is not re-armed here (a syscall per batch): the timer checks the time
  // of the last batch when it fires.
  void on_batch_end() override {
    if (o_.timeout) last_activity_ns_ = monotonic_ns();
    if (out_.size() >= (1 << 16)) write_all(file_, out_);
  }

  void on_idle() override { write_all(file_, out_); }

  void on_error(const Error& e) override {
    if (!failure_) failure_ = e;
    loop_.stop();
  }

  void finish() {
    write_all(file_, out_);
    log_.flush();
  }

  std::int64_t last_activity_ns_ = monotonic_ns();
  std::optional<Error> failure_;

 private:
  void counted() {
    if (o_.count && listener_.counts().received >= *o_.count) {
      listener_.stop_after_current();
      loop_.stop();
    }
  }

  const FireflyListenOptions& o_;
  std::FILE* file_;
  FireflyListener& listener_;
  EventLoop& loop_;
  RejectLog log_;
  std::string out_;
};

// ---- decode -----------------------------------------------------------------------------

// Decodes every line of `in`; returns false if any was invalid.
bool decode_stream(std::FILE* in, std::string_view name, FireflyDecoder& dec, std::FILE* out) {
  LineReader reader(in);
  std::string_view line;
  std::string text;
  bool all_valid = true;
  while (reader.next(line)) {
    if (is_blank_line(line)) continue;
    auto f = dec.decode(line);
    if (f) {
      append_firefly_json(text, **f);
      text.push_back('\n');
      if (text.size() >= (1 << 16)) write_all(out, text);
      continue;
    }
    all_valid = false;
    write_all(out, text);  // keep stdout and stderr in order for a terminal
    std::string detail = f.error().detail;
    for (char& c : detail)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    fmt::print(stderr, "{}:{}: {}: {}\n", name, reader.number(), to_string(f.error().reason),
               detail);
  }
  write_all(out, text);
  if (std::ferror(in)) {
    spdlog::error("reading {}: {}", name, std::strerror(errno));
    return false;
  }
  return all_valid;
}

}  // namespace

void append_firefly_text(std::string& out, const Endpoint& sender, const Firefly& f) {
  const FlowEvent& e = f.event;
  const Registry& reg = Registry::builtin();
  fmt::format_to(std::back_inserter(out), "{} {} {} {} -> {} exp {}", sender.to_string(),
                 to_string(e.state), to_string(e.protocol), e.src.to_string(), e.dst.to_string(),
                 e.experiment);
  if (auto name = reg.experiment_name(e.experiment))
    fmt::format_to(std::back_inserter(out), "/{}", *name);
  fmt::format_to(std::back_inserter(out), " act {}", e.activity);
  if (auto name = reg.activity_name(e.experiment, e.activity))
    fmt::format_to(std::back_inserter(out), "/{}", *name);
  out += " start ";
  append_time(out, e.start_time);
  if (e.state == FlowState::kEnd) {
    out += " end ";
    append_time(out, e.end_time);
  }
  if (e.usage)
    fmt::format_to(std::back_inserter(out), " usage rx {} tx {}", e.usage->received, e.usage->sent);
  if (!f.application.empty()) {
    out += " app ";
    append_json_string(out, f.application);
  }
}

Result<FireflySendOptions> resolve_firefly_send(const FireflySendArgs& a) {
  FireflySendOptions o;
  o.flow = a.flow;
  if (a.to) {
    FM_TRY(auto to, net::resolve_endpoint(*a.to, kFireflyPort));
    o.to = to;
  }
  for (const auto& c : a.collectors) {
    FM_TRY(auto to, net::resolve_endpoint(c, kFireflyPort));
    o.collectors.push_back(to);
  }
  o.collectors_only = a.collectors_only;
  if (a.ttl) {
    FM_TRY(o.ttl, parse_ttl(OptionValue::flag("--ttl", *a.ttl)));
  }
  if (a.iface) {
    FM_TRY(o.iface, parse_iface(OptionValue::flag("--iface", *a.iface)));
  }
  o.hostname = a.hostname;
  o.registry = a.registry;
  if (a.start_time) {
    auto t = parse_rfc3339(*a.start_time);
    if (!t)
      return fail(Errc::kInvalidArgument,
                  fmt::format("--start-time '{}': {}", *a.start_time, t.error().message()));
    o.start_time = *t;
  }
  o.repeat = a.repeat;
  o.rate = a.rate;
  o.gso = a.gso;
  return o;
}

Result<FireflyListenOptions> resolve_firefly_listen(const FireflyListenArgs& a) {
  FireflyListenOptions o;
  auto& l = o.listener;
  if (a.bind) {
    auto bind = IpAddress::parse(*a.bind);
    if (!bind) return std::unexpected(std::move(bind.error()).with_context("--bind"));
    l.bind = *bind;
  }
  l.port = static_cast<std::uint16_t>(a.port);
  if (a.group) {
    FM_TRY(l.group, parse_group(OptionValue::flag("--group", *a.group)));
  }
  for (const auto& s : a.sources) {
    FM_TRY(auto src, parse_source(OptionValue::flag("--source", s)));
    l.sources.push_back(src);
  }
  if (a.iface) {
    if (!a.group)
      return fail(Errc::kInvalidArgument, "--iface names the interface of a --group join");
    FM_TRY(l.iface, parse_iface(OptionValue::flag("--iface", *a.iface)));
  }
  l.rcvbuf = kDefaultReceiveBuffer;
  if (a.rcvbuf) {
    FM_TRY(l.rcvbuf, parse_rcvbuf(OptionValue::flag("--rcvbuf", *a.rcvbuf)));
  }
  l.decoder.lenient_start_time = a.lenient;
  if (a.format != "json" && a.format != "text")
    return fail(Errc::kInvalidArgument,
                fmt::format("--format {}: expected json or text", a.format));
  o.format = a.format == "text" ? FireflyFormat::kText : FireflyFormat::kJson;
  o.stats = a.stats;
  if (a.count) {
    FM_TRY(o.count, parse_count(OptionValue::flag("--count", *a.count)));
  }
  if (a.timeout) {
    FM_TRY(o.timeout, parse_seconds(OptionValue::flag("--timeout", *a.timeout)));
  }
  return o;
}

int run_firefly_send(const FireflySendOptions& o, std::FILE* in) {
  if (!o.flow.empty() && o.flow.size() != kPipeLineTokens) {
    spdlog::error(
        "expected 8 arguments (STATE PROTO SRC SPORT DST DPORT EXP ACT), got {}; "
        "give none to read pipe lines from standard input",
        o.flow.size());
    return kExitUsage;
  }
  if (o.flow.empty() && o.repeat != 1) {
    spdlog::error("--repeat needs a flow on the command line");
    return kExitUsage;
  }
  auto registry = Registry::load(o.registry);
  if (!registry) {
    spdlog::error("{}", registry.error().message());
    return registry_load_exit_code(registry.error());
  }
  SendRun run(o, *registry);
  if (auto r = run.prepare(); !r) return report(r.error());
  return o.flow.empty() ? run.lines(in) : run.one_flow();
}

int run_firefly_listen(const FireflyListenOptions& o, std::FILE* out) {
  auto listener = FireflyListener::open(o.listener);
  if (!listener) return report(listener.error());
  auto loop = EventLoop::create();
  if (!loop) return report(loop.error());
  int signalled = 0;
  for (int sig : {SIGINT, SIGTERM}) {
    auto r = loop->on_signal(sig, [&](int s) {
      signalled = s;
      loop->stop();
    });
    if (!r) return report(r.error());
  }
  ListenSink sink(o, out, *listener, *loop);
  bool timed_out = false;
  std::optional<EventLoop::TimerId> timer;
  if (o.timeout) {
    // Periodic, so that it survives firing (a one-shot timer is gone once it fired): each
    // time it fires early (datagrams came meanwhile), it is moved to the new deadline.
    sink.last_activity_ns_ = monotonic_ns();
    auto t = loop->add_timer(*o.timeout, *o.timeout, [&] {
      const std::chrono::nanoseconds idle(monotonic_ns() - sink.last_activity_ns_);
      if (idle >= *o.timeout) {
        timed_out = true;
        loop->stop();
      } else if (auto r = loop->rearm_timer(*timer, *o.timeout - idle, *o.timeout); !r) {
        sink.on_error(r.error());
      }
    });
    if (!t) return report(t.error());
    timer = *t;
  }
  if (auto r = listener->add_to(*loop, sink); !r) return report(r.error());
  if (spdlog::should_log(spdlog::level::debug)) {
    std::string where;
    for (const Endpoint& e : listener->local_endpoints())
      where += (where.empty() ? "" : ", ") + e.to_string();
    spdlog::debug("listening for fireflies on {}", where);
  }
  auto ran = loop->run();
  sink.finish();
  const ListenerCounts& c = listener->counts();
  if (o.stats) {
    std::string line;
    c.append_json(line);
    line.push_back('\n');
    write_all(out, line);
  }
  if (!ran) return report(ran.error());
  if (sink.failure_) return report(*sink.failure_);
  if (signalled != 0) return exit_code_for_signal(signalled);
  if (timed_out && c.received == 0) {
    spdlog::warn("no datagram received within {:.3g} s",
                 std::chrono::duration<double>(*o.timeout).count());
    return kExitNothing;
  }
  return kExitOk;
}

int run_firefly_decode(std::span<const std::string> files, const DecoderOptions& options,
                       std::FILE* in, std::FILE* out) {
  FireflyDecoder dec(options);
  bool all_valid = true;
  bool unreadable = false;
  if (files.empty()) return decode_stream(in, "<stdin>", dec, out) ? kExitOk : kExitNothing;
  for (const std::string& name : files) {
    if (name == "-") {
      all_valid = decode_stream(in, "<stdin>", dec, out) && all_valid;
      continue;
    }
    std::FILE* f = std::fopen(name.c_str(), "re");
    if (f == nullptr) {
      spdlog::error("cannot open {}: {}", name, std::strerror(errno));
      unreadable = true;
      continue;
    }
    all_valid = decode_stream(f, name, dec, out) && all_valid;
    (void)std::fclose(f);  // read-only: nothing to lose
  }
  if (unreadable) return kExitNoInput;
  return all_valid ? kExitOk : kExitNothing;
}

int run_firefly(FireflyVerb verb, const FireflyArgs& args, std::FILE* in, std::FILE* out) {
  switch (verb) {
    case FireflyVerb::kSend: {
      auto o = resolve_firefly_send(args.send);
      return o ? run_firefly_send(*o, in) : report(o.error());
    }
    case FireflyVerb::kListen: {
      auto o = resolve_firefly_listen(args.listen);
      return o ? run_firefly_listen(*o, out) : report(o.error());
    }
    case FireflyVerb::kDecode: {
      DecoderOptions d;
      d.lenient_start_time = args.decode.lenient;
      return run_firefly_decode(args.decode.files, d, in, out);
    }
  }
  return kExitSoftware;
}

std::string firefly_send_exit_help() {
  return exit_code_help({
      {kExitOk, "every firefly was sent"},
      {kExitNothing,
       "some lines of standard input were rejected (each is reported with its line number) "
       "or not sent, or the kernel refused some datagrams"},
      {kExitUsage, "a flag, destination or flow token (the message names it)"},
      {kExitDataErr, "the --registry document"},
      {kExitNoInput, "the --registry source cannot be read or fetched"},
      {kExitNoInterface},
      {kExitUnavailable, "a socket option or a send (address not available)"},
      {kExitSoftware, "e.g. no route to the destination"},
      {kExitNoPermission},
      {kExitInterrupted, "while reading standard input"},
      {kExitTerminated, "while reading standard input"},
  });
}

std::string firefly_listen_exit_help() {
  return exit_code_help({
             {kExitOk, "--count reached, or --timeout after at least one datagram"},
             {kExitNothing, "--timeout with nothing received at all"},
             {kExitUsage},
             {kExitNoInterface},
             {kExitUnavailable, "a join, a bind (port in use / address not local)"},
             {kExitSoftware},
             {kExitNoPermission, "ports below 1024 need root or CAP_NET_BIND_SERVICE"},
             {kExitInterrupted, "--stats is still printed"},
             {kExitTerminated, "--stats is still printed"},
         }) +
         "Invalid datagrams are never fatal: they are counted by reason (--stats) and logged\n"
         "on stderr, at most 10 a second.\n";
}

std::string firefly_decode_exit_help() {
  return exit_code_help({
      {kExitOk, "every line is a valid firefly"},
      {kExitNothing, "some lines are not (each reported on stderr as FILE:LINE: reason: detail)"},
      {kExitUsage},
      {kExitNoInput, "a file cannot be opened (the others are still decoded)"},
      {kExitInterrupted, "while reading standard input"},
      {kExitTerminated, "while reading standard input"},
  });
}

std::string firefly_exit_help() {
  return exit_code_help({
      {kExitOk},
      {kExitNothing,
       "send: some lines rejected; listen: nothing received; decode: some "
       "lines invalid"},
      {kExitUsage},
      {kExitDataErr, "send: the --registry document"},
      {kExitNoInput, "send: the --registry source; decode: a file"},
      {kExitNoInterface},
      {kExitUnavailable, "a join, a bind, a send"},
      {kExitSoftware},
      {kExitNoPermission},
      {kExitInterrupted},
      {kExitTerminated},
  });
}

}  // namespace flowmark::scitags
