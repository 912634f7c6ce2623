#include "flowmark/mcast/commands.hpp"
#include "flowmark/core/time.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>
#include <unordered_map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/mcast/receiver.hpp"
#include "flowmark/mcast/sender.hpp"
#include "flowmark/mcast/stream.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::mcast {
namespace {

std::string_view as_text(std::span<const std::byte> b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

int report(const Error& e) {
  spdlog::error("{}", e.message());
  return exit_code_for(e);
}

void write_all(std::FILE* out, const std::string& s) {
  if (s.empty()) return;
  // A closed stdout ends the process by SIGPIPE, like any filter; nothing to recover here.
  (void)std::fwrite(s.data(), 1, s.size(), out);
  (void)std::fflush(out);
}

// Interface names by index, looked up once per index.
class InterfaceNames {
 public:
  const std::string& operator()(std::uint32_t index) {
    auto it = names_.find(index);
    if (it == names_.end()) it = names_.emplace(index, interface_name(index)).first;
    return it->second;
  }

 private:
  std::unordered_map<std::uint32_t, std::string> names_;
};

void append_payload_json(std::string& out, std::string_view key_prefix, std::string_view body) {
  if (is_valid_utf8(body)) {
    fmt::format_to(std::back_inserter(out), R"("{}":)", key_prefix);
    append_json_string(out, body);
  } else {
    fmt::format_to(std::back_inserter(out), R"("{}_base64":")", key_prefix);
    append_base64(out, body);
    out.push_back('"');
  }
}

// One JSON line describing a datagram.
void append_datagram_json(std::string& out, const Datagram& d, InterfaceNames& names,
                          const std::optional<StreamHeader>& hdr, std::int64_t rx_ns) {
  fmt::format_to(std::back_inserter(out),
                 R"({{"type":"datagram","source":"{}","sport":{},"group":"{}","interface":)",
                 d.source.address.to_string(), d.source.port, d.destination.to_string());
  append_json_string(out, names(d.ifindex));
  fmt::format_to(std::back_inserter(out), R"(,"size":{},"time_ns":{})", d.size, rx_ns);
  if (d.truncated) out += R"(,"truncated":true)";
  auto body = as_text(d.payload);
  if (hdr) {
    fmt::format_to(std::back_inserter(out), R"(,"stream":{},"seq":{},"delay_us":{:.1f})",
                   hdr->stream, hdr->sequence,
                   static_cast<double>(one_way_delay_ns(rx_ns, hdr->sent_ns)) / 1e3);
    body.remove_prefix(kStreamHeaderSize);
  }
  out.push_back(',');
  append_payload_json(out, "payload", body);
  out += "}\n";
}

// What RECV and HEAR share: open the receiver, wait for datagrams under an event loop
// with SIGINT/SIGTERM and an idle timeout, hand each batch to `on_batch` (which returns
// false to stop), and work out the exit code.
struct LoopResult {
  int exit_code = kExitOk;
  std::uint64_t received = 0;
};

template <typename OnBatch>
LoopResult receive_loop(const RecvOptions& o, Receiver& rx, OnBatch&& on_batch) {
  LoopResult result;
  auto loop = EventLoop::create();
  if (!loop) return {report(loop.error()), 0};
  int signalled = 0;
  for (int sig : {SIGINT, SIGTERM}) {
    auto r = loop->on_signal(sig, [&](int s) {
      signalled = s;
      loop->stop();
    });
    if (!r) return {report(r.error()), 0};
  }
  bool timed_out = false;
  std::optional<EventLoop::TimerId> timer;
  if (o.timeout) {
    auto t = loop->add_timer(*o.timeout, {}, [&] {
      timed_out = true;
      loop->stop();
    });
    if (!t) return {report(t.error()), 0};
    timer = *t;
  }
  std::optional<Error> failure;
  auto added = loop->add_fd(rx.fd(), EPOLLIN, [&](std::uint32_t) {
    // Drain in bounded rounds so signals and timers are still seen under load.
    for (int round = 0; round < 64 && !loop->stopped(); ++round) {
      auto batch = rx.receive();
      if (!batch) {
        failure = batch.error();
        loop->stop();
        return;
      }
      if (batch->empty()) break;
      result.received += batch->size();
      if (!on_batch(*batch)) {
        loop->stop();
        return;
      }
    }
    if (timer) {
      if (auto r = loop->rearm_timer(*timer, *o.timeout); !r) failure = r.error();
    }
  });
  if (!added) return {report(added.error()), 0};
  if (auto r = loop->run(); !r) return {report(r.error()), result.received};
  if (failure) return {report(*failure), result.received};
  if (signalled != 0) {
    result.exit_code = exit_code_for_signal(signalled);
  } else if (timed_out && result.received == 0) {
    spdlog::warn("nothing received on {} port {} within {:.3g} s", o.group.to_string(), o.port,
                 std::chrono::duration<double>(*o.timeout).count());
    result.exit_code = kExitNothing;
  }
  return result;
}

Result<Receiver> open_receiver(const RecvOptions& o) {
  ReceiverConfig c;
  c.groups = o.groups;
  c.sources = o.sources;
  c.port = o.port;
  c.iface = o.iface;
  c.bind = o.bind;
  c.send = {o.iface, o.ttl, o.loop};
  c.rcvbuf = o.rcvbuf;
  c.buffer_size = o.buffer_size;
  return Receiver::open(c);
}

// Prints / records one batch for RECV (and HEAR's printing). Returns datagrams handled.
struct Printer {
  const RecvOptions& o;
  bool print_payload;
  StatsTable stats;
  InterfaceNames names;
  std::string out;

  void add(const Datagram& d) {
    const std::int64_t rx_ns = d.rx_time_ns ? d.rx_time_ns : realtime_ns();
    auto hdr = decode_stream_header(d.payload);
    if (d.truncated) {
      spdlog::warn("datagram from {} to {} truncated: {} bytes, buffer {} (raise --buffer-size)",
                   d.source.to_string(), d.destination.to_string(), d.size, o.buffer_size);
      stats.add_truncated();
    }
    if (o.stats) {
      if (hdr) {
        stats.add({d.source, d.destination, hdr->stream}, hdr->sequence,
                  one_way_delay_ns(rx_ns, hdr->sent_ns));
      } else {
        stats.add_plain();
      }
    }
    if (o.json) {
      append_datagram_json(out, d, names, hdr, rx_ns);
    } else if (print_payload) {
      auto body = as_text(d.payload);
      if (hdr) body.remove_prefix(kStreamHeaderSize);
      out.append(body);
      out.push_back('\n');
    }
  }
};

// The receive loop of RECV and HEAR: each datagram goes to `on_datagram` (which may answer
// it) and, unless that skips it, to the printer; the printed text is written after each
// batch. The run ends after the first datagram without --daemon, after --count datagrams,
// or when `on_datagram` says kLast.
enum class Seen { kSkip, kPrint, kLast };

template <typename OnDatagram>
LoopResult print_loop(const RecvOptions& o, Receiver& rx, Printer& p, std::FILE* out,
                      OnDatagram&& on_datagram) {
  std::uint64_t handled = 0;
  return receive_loop(o, rx, [&](std::span<const Datagram> batch) {
    bool more = true;
    for (const Datagram& d : batch) {
      const Seen seen = on_datagram(d);
      if (seen == Seen::kSkip) continue;
      p.add(d);
      ++handled;
      if (seen == Seen::kLast || !o.daemon || (o.count && handled >= *o.count)) {
        more = false;
        break;
      }
    }
    write_all(out, p.out);
    p.out.clear();
    return more;
  });
}

}  // namespace

std::string hear_reply(std::string_view payload, const Endpoint& from, const IpAddress& group,
                       std::size_t limit) {
  const std::string tail = fmt::format(" SAID ('{}', {}) ] from {}", from.address.to_string(),
                                       from.port, group.to_string());
  std::string reply = "HEAR [ ";
  const std::size_t room =
      limit > reply.size() + tail.size() ? limit - reply.size() - tail.size() : 0;
  for (char c : payload.substr(0, room))
    reply.push_back(c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c);
  reply += tail;
  return reply;
}

int run_say(const SayOptions& o, std::FILE* in, std::FILE* out) {
  SenderConfig c;
  c.group = {o.group, o.port};
  c.send = {o.iface, o.ttl, o.loop};
  c.bind = o.bind;
  c.gso = o.gso;
  auto tx = Sender::open(c);
  if (!tx) return report(tx.error());

  const std::size_t limit = max_payload(o.group.family());
  const std::size_t header = o.sequence ? kStreamHeaderSize : 0;
  std::uint32_t stream_id = std::random_device{}();
  std::uint64_t seq = 0;

  // Datagrams are built into `slots` and handed to the kernel Sender::kBatch at a time.
  const std::size_t slot_size = limit;
  std::vector<std::byte> slots(slot_size * Sender::kBatch);
  std::array<std::span<const std::byte>, Sender::kBatch> pending;
  std::size_t npending = 0;
  auto flush = [&]() -> Result<void> {
    if (npending == 0) return {};
    FM_TRY_VOID(tx->send_batch(std::span(pending.data(), npending)));
    npending = 0;
    return {};
  };
  auto queue = [&](std::string_view body) -> Result<void> {
    std::byte* slot = slots.data() + npending * slot_size;
    std::size_t len = std::min(body.size(), limit - header);
    std::memcpy(slot + header, body.data(), len);
    len += header;
    if (o.size && *o.size > len) {
      std::memset(slot + len, '.', *o.size - len);  // pad to the requested size
      len = *o.size;
    }
    if (o.sequence)
      encode_stream_header({slot, header},
                           {stream_id, seq, static_cast<std::uint64_t>(realtime_ns())});
    ++seq;
    pending[npending++] = {slot, len};
    if (npending == Sender::kBatch) return flush();
    return {};
  };

  Result<void> r;
  if (o.pipe) {
    if (o.binary) {
      const std::size_t chunk = std::min(o.buffer_size, limit - header);
      std::vector<char> buf(chunk);
      std::size_t n;
      while (r && (n = std::fread(buf.data(), 1, chunk, in)) > 0) r = queue({buf.data(), n});
    } else {
      char* line = nullptr;
      std::size_t cap = 0;
      ssize_t n;
      while (r && (n = getline(&line, &cap, in)) >= 0) {
        std::string_view body(line, static_cast<std::size_t>(n));
        if (!body.empty() && body.back() == '\n') body.remove_suffix(1);
        if (body.size() + header > limit) {
          spdlog::warn("line of {} bytes is longer than a datagram ({}); sent cut", body.size(),
                       limit - header);
        }
        r = queue(body);
      }
      std::free(line);
    }
  } else {
    const std::int64_t start = monotonic_ns();
    const auto interval = o.interval.count();
    for (std::uint64_t i = 0; r && i < o.count; ++i) {
      if (interval > 0) {
        const std::int64_t due = start + static_cast<std::int64_t>(i) * interval;
        if (monotonic_ns() < due) {
          r = flush();  // everything already due goes out before we wait
          if (!r) break;
          sleep_until_monotonic(due);
        }
      }
      r = queue(o.message);
    }
  }
  if (r) r = flush();
  if (!r) return report(r.error());
  spdlog::debug("sent {} datagram(s) to {}", seq, tx->group().to_string());
  if (tx->refused() > 0) {
    auto why = fail_errno(fmt::format("{} of {} datagram(s) to {} refused by the local kernel "
                                      "(a firewall rule or a full queue?)",
                                      tx->refused(), seq, tx->group().to_string()),
                          tx->last_refusal_errno())
                   .error();
    if (tx->refused() == seq) return report(why);  // nothing went out at all
    spdlog::warn("{}", why.message());
    return kExitNothing;
  }

  if (!o.wait_reply) return kExitOk;
  // Wait for HEAR replies (unicast to our source port) until the timeout.
  const auto timeout = o.timeout.value_or(std::chrono::seconds(1));
  if (auto e = net::enable_packet_info(tx->fd(), o.group.family()); !e) return report(e.error());
  DatagramReader reader(65536, 16);
  const std::int64_t deadline = monotonic_ns() + timeout.count();
  std::uint64_t replies = 0;
  std::string text;
  InterfaceNames names;
  for (std::int64_t now = monotonic_ns(); now < deadline; now = monotonic_ns()) {
    pollfd pfd{tx->fd(), POLLIN, 0};
    const int wait_ms = static_cast<int>((deadline - now + 999'999) / 1'000'000);
    if (::poll(&pfd, 1, wait_ms) <= 0) continue;
    auto batch = reader.read(tx->fd());
    if (!batch) return report(batch.error());
    for (const Datagram& d : *batch) {
      ++replies;
      if (o.json) {
        append_datagram_json(text, d, names, std::nullopt, d.rx_time_ns);
      } else {
        text.append(as_text(d.payload));
        text.push_back('\n');
      }
    }
    write_all(out, text);
    text.clear();
  }
  if (replies == 0) {
    spdlog::warn("no reply to {} within {:.3g} s", tx->group().to_string(),
                 std::chrono::duration<double>(timeout).count());
    return kExitNothing;
  }
  return kExitOk;
}

int run_recv(const RecvOptions& o, std::FILE* out) {
  auto rx = open_receiver(o);
  if (!rx) return report(rx.error());
  Printer p{o, o.use_std || isatty(fileno(out)) != 0, {}, {}, {}};
  auto result = print_loop(o, *rx, p, out, [](const Datagram&) { return Seen::kPrint; });
  if (o.stats) write_all(out, p.stats.to_json() + "\n");
  return result.exit_code;
}

int run_hear(const RecvOptions& o, std::FILE* out) {
  auto rx = open_receiver(o);
  if (!rx) return report(rx.error());
  Printer p{o, o.use_std || isatty(fileno(out)) != 0, {}, {}, {}};
  const auto locals = local_addresses();
  const Endpoint bind_group{o.group, o.port};
  Endpoint forward_to = bind_group;
  if (o.group.is_v6() && o.group.scope_id() == 0 && o.iface)
    forward_to.address.set_scope_id(o.iface->index);
  const std::size_t limit = max_payload(o.group.family());
  bool stop_requested = false;
  auto result = print_loop(o, *rx, p, out, [&](const Datagram& d) {
    // Our own forwarded datagrams come back to us when loopback is on: skip them.
    if (d.source.port == rx->port() &&
        std::find(locals.begin(), locals.end(), d.source.address) != locals.end())
      return Seen::kSkip;
    // Unicast arrivals are replies to us (or strays): print them, never answer them,
    // or two HEARs would acknowledge each other for ever.
    if (!d.destination.is_multicast()) return Seen::kPrint;
    const auto body = as_text(d.payload);
    const auto reply = hear_reply(body, d.source, d.destination, limit);
    if (auto r = rx->send_to(d.source, std::as_bytes(std::span(reply))); !r)
      spdlog::warn("{}", r.error().message());
    if (d.destination != o.group && !d.truncated) {
      if (auto r = rx->send_to(forward_to, d.payload); !r)
        spdlog::warn("forwarding to {}: {}", bind_group.to_string(), r.error().message());
    }
    // As the Python tool does: a datagram containing the word (anywhere) stops HEAR, after
    // it has been answered and printed.
    if (!o.stop_word.empty() && body.find(o.stop_word) != std::string_view::npos) {
      stop_requested = true;
      return Seen::kLast;
    }
    return Seen::kPrint;
  });
  if (o.stats) write_all(out, p.stats.to_json() + "\n");
  if (stop_requested) spdlog::info("{} received; shutting down", o.stop_word);
  return result.exit_code;
}

int run_mcast(Verb verb, const RawOptions& raw, const EnvLookup& env, std::FILE* in,
              std::FILE* out) {
  switch (verb) {
    case Verb::kNoop: return kExitOk;
    case Verb::kSay: {
      auto o = resolve_say(raw, env);
      return o ? run_say(*o, in, out) : report(o.error());
    }
    case Verb::kRecv:
    case Verb::kHear: {
      auto o = resolve_recv(raw, env);
      if (!o) return report(o.error());
      return verb == Verb::kRecv ? run_recv(*o, out) : run_hear(*o, out);
    }
  }
  return kExitSoftware;
}

}  // namespace flowmark::mcast
