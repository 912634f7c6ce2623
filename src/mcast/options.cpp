#include "flowmark/mcast/options.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "flowmark/mcast/socket.hpp"
#include "flowmark/mcast/stream.hpp"

namespace flowmark::mcast {

int exit_code_for(const Error& e) noexcept {
  const auto& code = e.code();
  if (code.category() == flowmark_category()) {
    switch (static_cast<Errc>(code.value())) {
      case Errc::kInvalidArgument:
      case Errc::kTruncated:
      case Errc::kMalformed: return kExitUsage;
      case Errc::kNotFound: return kExitNoInterface;
      case Errc::kRefused:
      case Errc::kUnsupported: return kExitUnavailable;
    }
  }
  if (code.category() == std::system_category()) {
    if (code.value() == EPERM || code.value() == EACCES) return kExitNoPermission;
    if (code.value() == EADDRINUSE || code.value() == EADDRNOTAVAIL) return kExitUnavailable;
  }
  return kExitSoftware;
}

std::string_view exit_code_help() noexcept {
  return "Exit codes:\n"
         "  0    success\n"
         "  1    completed without full success: nothing received before the timeout, no\n"
         "       reply, or some datagrams refused by the local kernel (a warning says)\n"
         "  2    usage error: bad flag or value (group, port, TTL, interval, size ...)\n"
         "  68   the named interface does not exist\n"
         "  69   the kernel refused: a join, a bind (address in use / not local)\n"
         "  70   socket or internal error\n"
         "  77   not permitted (run as root or grant the capability)\n"
         "  130  interrupted (SIGINT, Ctrl-C)\n"
         "  143  terminated (SIGTERM)\n";
}

std::optional<std::string> getenv_lookup(std::string_view name) {
  const char* v = std::getenv(std::string(name).c_str());
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

namespace {

// A value and where it came from, for error messages: "--port 70000" or "MULTICAST_PORT=…".
struct Sourced {
  std::string value;
  std::string origin;
};

std::optional<Sourced> pick(const std::optional<std::string>& flag, std::string_view flag_name,
                            const EnvLookup& env, std::string_view env_name) {
  if (flag) return Sourced{*flag, fmt::format("{} {}", flag_name, *flag)};
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

Result<std::uint64_t> parse_uint(const Sourced& s, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t v = 0;
  const auto& t = s.value;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec == std::errc::invalid_argument || p != t.data() + t.size())
    return bad<std::uint64_t>(s, "not a whole number");
  if (ec == std::errc::result_out_of_range || v < lo || v > hi)
    return bad<std::uint64_t>(s, fmt::format("out of range ({}..{})", lo, hi));
  return v;
}

Result<std::chrono::nanoseconds> parse_seconds(const Sourced& s, bool allow_zero) {
  const auto& t = s.value;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || errno != 0 || !std::isfinite(v))
    return bad<std::chrono::nanoseconds>(s, "not a number of seconds");
  if (v < 0 || (v == 0 && !allow_zero) || v > 1e6)
    return bad<std::chrono::nanoseconds>(
        s, allow_zero ? "must be between 0 and 1000000 seconds"
                      : "must be more than 0 and at most 1000000 seconds");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(v * 1e9)));
}

Result<IpAddress> parse_group_value(const Sourced& s) {
  auto a = IpAddress::parse(s.value);
  if (!a) return std::unexpected(std::move(a.error()).with_context(s.origin));
  if (!a->is_multicast())
    return bad<IpAddress>(s, fmt::format("{} is a unicast address, not a multicast group "
                                         "(use 224.0.0.0/4, e.g. 239.1.1.1, or ff00::/8)",
                                         a->to_string()));
  return *a;
}

Result<void> resolve_common(const RawOptions& raw, const EnvLookup& env, CommonOptions& o) {
  auto group = pick(raw.group, "--group", env, "MULTICAST_GROUP")
                   .value_or(Sourced{kDefaultGroup, "default group"});
  FM_TRY(o.group, parse_group_value(group));

  if (auto p = pick(raw.port, "--port", env, "MULTICAST_PORT")) {
    auto port = parse_port(p->value);
    if (!port) return bad<void>(*p, port.error().message());
    o.port = *port;
  } else {
    o.port = kDefaultPort;
  }

  if (auto t = pick(raw.ttl, "--ttl", env, "MULTICAST_TTL")) {
    FM_TRY(auto ttl, parse_uint(*t, 0, 255));
    o.ttl = static_cast<int>(ttl);
  } else {
    o.ttl = kDefaultTtl;
  }
  o.loop = !raw.no_loop;

  if (auto i = pick(raw.iface, "--iface", env, "MULTICAST_IFACE")) {
    auto ifc = resolve_interface(i->value);
    if (!ifc) return std::unexpected(std::move(ifc.error()).with_context("--iface"));
    if (!ifc->multicast)
      return fail(Errc::kRefused, fmt::format("--iface {}: the interface has multicast off "
                                              "(ip link set {} multicast on)",
                                              ifc->name, ifc->name));
    o.iface = *ifc;
  }
  // A scope on the group ("ff02::1%eth0") names the interface too.
  if (!o.iface && o.group.scope_id() != 0) {
    auto ifc = resolve_interface(std::to_string(o.group.scope_id()));
    if (ifc) o.iface = *ifc;
  }

  if (auto b = pick(raw.bind, "--bind", env, "MULTICAST_BIND_ADDR")) {
    auto a = IpAddress::parse(b->value);
    if (!a) return bad<void>(*b, a.error().message());
    o.bind = *a;
  }

  if (auto b = pick(raw.buffer_size, "--buffer-size", env, "MULTICAST_BUFFER_SIZE")) {
    FM_TRY(auto n, parse_uint(*b, 1, kMaxPayloadV6));
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
    FM_TRY(o.count,
           parse_uint(Sourced{*raw.count, "--count " + *raw.count}, 1, std::uint64_t{1} << 62));
  }
  if (raw.interval) {
    FM_TRY(o.interval, parse_seconds(Sourced{*raw.interval, "--interval " + *raw.interval}, true));
  }
  if (o.pipe && raw.count)
    return fail(Errc::kInvalidArgument,
                "--count repeats --message; with --pipe every line "
                "(or chunk) is sent once");
  if (raw.size) {
    FM_TRY(auto size,
           parse_uint(Sourced{*raw.size, "--size " + *raw.size}, 1, max_payload(o.group.family())));
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
    FM_TRY(auto a, parse_group_value(Sourced{g, "--groups " + g}));
    o.groups.push_back(a);
  }
  if (o.groups.empty()) o.groups.push_back(o.group);
  for (const auto& g : o.groups) FM_TRY_VOID(check_group(g, o.iface));
  for (const auto& s : raw.sources) {
    auto a = IpAddress::parse(s);
    if (!a) return fail(Errc::kInvalidArgument, fmt::format("--source: {}", a.error().message()));
    if (a->is_multicast() || a->is_unspecified())
      return fail(Errc::kInvalidArgument,
                  fmt::format("--source {}: a source must be a unicast address", s));
    o.sources.push_back(*a);
  }
  o.use_std = raw.use_std;
  o.daemon = raw.daemon;
  o.stats = raw.stats;
  o.allow_stop = raw.allow_stop;
  if (raw.count) {
    FM_TRY(o.count,
           parse_uint(Sourced{*raw.count, "--count " + *raw.count}, 1, std::uint64_t{1} << 62));
    o.daemon = true;  // --count N: keep receiving until N datagrams
  }
  if (raw.rcvbuf) {
    FM_TRY(auto n, parse_uint(Sourced{*raw.rcvbuf, "--rcvbuf " + *raw.rcvbuf}, 4096, 1 << 30));
    o.rcvbuf = static_cast<int>(n);
  } else {
    o.rcvbuf = 16 << 20;
  }
  return o;
}

}  // namespace flowmark::mcast
