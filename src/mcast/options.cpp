#include "flowmark/mcast/options.hpp"

#include "flowmark/core/option_value.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "flowmark/mcast/defaults.hpp"
#include "flowmark/mcast/stream.hpp"

namespace flowmark::mcast {

std::string_view exit_code_help() noexcept {
  static const std::string text = ::flowmark::exit_code_help({
      {kExitOk},
      {kExitNothing,
       "nothing received before the timeout, no reply, or some datagrams refused by the "
       "local kernel"},
      {kExitUsage, "group, port, TTL, interval, size ..."},
      {kExitNoInterface},
      {kExitUnavailable, "a join, a bind (address in use / not local)"},
      {kExitSoftware},
      {kExitNoPermission},
      {kExitInterrupted},
      {kExitTerminated},
  });
  return text;
}

std::optional<std::string> getenv_lookup(std::string_view name) {
  const char* v = std::getenv(std::string(name).c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

namespace {

// A value and where it came from, for error messages: "--port 70000" or "MULTICAST_PORT=…".
using Sourced = OptionValue;

std::optional<Sourced> pick(const std::optional<std::string>& flag, std::string_view flag_name,
                            const EnvLookup& env, std::string_view env_name) {
  if (flag) return OptionValue::flag(flag_name, *flag);
  if (!env_name.empty()) {
    if (auto v = env(env_name); v && !v->empty())
      return Sourced{*v, fmt::format("{}={}", env_name, *v)};
  }
  return std::nullopt;
}

template <typename T>
Result<T> bad(const Sourced& s, std::string_view why) {
  return fail(Errc::kInvalidArgument, fmt::format("{}: {}", s.origin, why));
}

Result<void> resolve_common(const RawOptions& raw, const EnvLookup& env, CommonOptions& o) {
  auto group = pick(raw.group, "--group", env, "MULTICAST_GROUP")
                   .value_or(Sourced{kDefaultGroup, "default group"});
  FM_TRY(o.group, parse_group(group));

  if (auto p = pick(raw.port, "--port", env, "MULTICAST_PORT")) {
    auto port = parse_port(p->text);
    if (!port) return bad<void>(*p, port.error().message());
    o.port = *port;
  } else {
    o.port = kDefaultPort;
  }

  if (auto t = pick(raw.ttl, "--ttl", env, "MULTICAST_TTL")) {
    FM_TRY(o.ttl, parse_ttl(*t));
  } else {
    o.ttl = kDefaultTtl;
  }
  o.loop = !raw.no_loop;

  if (auto i = pick(raw.iface, "--iface", env, "MULTICAST_IFACE")) {
    FM_TRY(auto ifc, parse_iface(*i));
    if (!ifc.multicast)
      return fail(Errc::kRefused, fmt::format("--iface {}: the interface has multicast off "
                                              "(ip link set {} multicast on)",
                                              ifc.name, ifc.name));
    o.iface = ifc;
  }
  // A scope on the group ("ff02::1%eth0") names the interface too.
  if (!o.iface && o.group.scope_id() != 0) {
    auto ifc = resolve_interface(std::to_string(o.group.scope_id()));
    if (ifc) o.iface = *ifc;
  }

  if (auto b = pick(raw.bind, "--bind", env, "MULTICAST_BIND_ADDR")) {
    auto a = IpAddress::parse(b->text);
    if (!a) return bad<void>(*b, a.error().message());
    o.bind = *a;
  }

  if (auto b = pick(raw.buffer_size, "--buffer-size", env, "MULTICAST_BUFFER_SIZE")) {
    FM_TRY(auto n, parse_whole_number(*b, 1, kMaxPayloadV6));
    o.buffer_size = n;
  } else {
    o.buffer_size = 65536;  // whole datagrams by default; the seed's 1316 truncated silently
  }
  if (auto t = pick(raw.timeout, "--timeout", env, "")) {
    FM_TRY(o.timeout, parse_seconds(*t, false));
  }
  o.json = raw.json;
  return {};
}

}  // namespace

Result<SayOptions> resolve_say(const RawOptions& raw, const EnvLookup& env) {
  SayOptions o;
  FM_TRY_VOID(resolve_common(raw, env, o));
  FM_TRY_VOID(check_group(o.group, o.iface));
  o.pipe = raw.pipe || (raw.message.size() == 1 && raw.message[0] == "-");
  o.binary = raw.binary;
  if (o.binary && !o.pipe)
    return fail(Errc::kInvalidArgument, "--binary reads standard input: use it with --pipe");
  if (o.pipe && !raw.message.empty() && !(raw.message.size() == 1 && raw.message[0] == "-"))
    return fail(Errc::kInvalidArgument, "give either --message TEXT or --pipe, not both");
  if (!o.pipe) {
    for (std::size_t i = 0; i < raw.message.size(); ++i) {
      if (i) o.message.push_back(' ');
      o.message += raw.message[i];
    }
  }
  o.sequence = raw.sequence || raw.count.has_value() || raw.interval.has_value();
  if (raw.count) {
    FM_TRY(o.count, parse_count(OptionValue::flag("--count", *raw.count)));
  }
  if (raw.interval) {
    FM_TRY(o.interval, parse_seconds(OptionValue::flag("--interval", *raw.interval), true));
  }
  if (o.pipe && raw.count)
    return fail(Errc::kInvalidArgument,
                "--count repeats --message; with --pipe every line "
                "(or chunk) is sent once");
  if (raw.size) {
    FM_TRY(auto size, parse_whole_number(OptionValue::flag("--size", *raw.size), 1,
                                         max_payload(o.group.family())));
    o.size = size;
    if (o.sequence && *o.size < kStreamHeaderSize)
      return fail(Errc::kInvalidArgument,
                  fmt::format("--size {}: a sequenced datagram needs at least 24 bytes", size));
  }
  if (!o.pipe && o.message.empty() && !o.sequence && !o.size)
    return fail(Errc::kInvalidArgument, "SAY needs a message: --message TEXT or --pipe");
  const std::size_t overhead = o.sequence ? kStreamHeaderSize : 0;
  if (!o.pipe && o.message.size() + overhead > max_payload(o.group.family()))
    return fail(Errc::kInvalidArgument,
                fmt::format("the message is {} bytes; a UDP datagram holds at most {}",
                            o.message.size() + overhead, max_payload(o.group.family())));
  o.wait_reply = raw.wait_reply;
  o.gso = raw.gso;
  return o;
}

Result<RecvOptions> resolve_recv(const RawOptions& raw, const EnvLookup& env) {
  RecvOptions o;
  FM_TRY_VOID(resolve_common(raw, env, o));
  for (const auto& g : raw.groups) {
    FM_TRY(auto a, parse_group(OptionValue::flag("--groups", g)));
    o.groups.push_back(a);
  }
  if (o.groups.empty()) o.groups.push_back(o.group);
  for (const auto& g : o.groups) FM_TRY_VOID(check_group(g, o.iface));
  for (const auto& s : raw.sources) {
    FM_TRY(auto a, parse_source(OptionValue::flag("--source", s)));
    o.sources.push_back(a);
  }
  o.use_std = raw.use_std;
  o.daemon = raw.daemon;
  o.stats = raw.stats;
  if (raw.stop_word) {
    if (raw.stop_word->empty())
      return fail(Errc::kInvalidArgument,
                  "--stop-word: empty (every datagram would stop HEAR); give a word");
    o.stop_word = *raw.stop_word;
  } else if (raw.allow_stop) {
    o.stop_word = "STOP";
  }
  if (raw.count) {
    FM_TRY(o.count, parse_count(OptionValue::flag("--count", *raw.count)));
    o.daemon = true;  // --count N: keep receiving until N datagrams
  }
  o.rcvbuf = kDefaultReceiveBuffer;
  if (raw.rcvbuf) {
    FM_TRY(o.rcvbuf, parse_rcvbuf(OptionValue::flag("--rcvbuf", *raw.rcvbuf)));
  }
  return o;
}

}  // namespace flowmark::mcast
