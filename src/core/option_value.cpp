#include "flowmark/core/option_value.hpp"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

namespace flowmark {
namespace {

template <typename T>
Result<T> bad(const OptionValue& v, std::string_view why) {
  return fail(Errc::kInvalidArgument, fmt::format("{}: {}", v.origin, why));
}

}  // namespace

OptionValue OptionValue::flag(std::string_view name, std::string_view text) {
  return {std::string(text), fmt::format("{} {}", name, text)};
}

Result<std::uint64_t> parse_whole_number(const OptionValue& v, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t n = 0;
  const auto& t = v.text;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
  if (t.empty() || ec == std::errc::invalid_argument || p != t.data() + t.size())
    return bad<std::uint64_t>(v, "not a whole number");
  if (ec == std::errc::result_out_of_range || n < lo || n > hi)
    return bad<std::uint64_t>(v, fmt::format("out of range ({}..{})", lo, hi));
  return n;
}

Result<std::chrono::nanoseconds> parse_seconds(const OptionValue& v, bool allow_zero) {
  const auto& t = v.text;
  char* end = nullptr;
  errno = 0;
  const double s = std::strtod(t.c_str(), &end);
  if (t.empty() || end != t.c_str() + t.size() || errno != 0 || !std::isfinite(s))
    return bad<std::chrono::nanoseconds>(v, "not a number of seconds");
  if (s < 0 || (s == 0 && !allow_zero) || s > kMaxSeconds)
    return bad<std::chrono::nanoseconds>(
        v, allow_zero ? "must be between 0 and 1000000 seconds"
                      : "must be more than 0 and at most 1000000 seconds");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(std::llround(s * 1e9)));
}

Result<IpAddress> parse_group(const OptionValue& v) {
  auto a = IpAddress::parse(v.text);
  if (!a) return std::unexpected(std::move(a.error()).with_context(v.origin));
  if (!a->is_multicast())
    return bad<IpAddress>(v, fmt::format("{} is a unicast address, not a multicast group "
                                         "(use 224.0.0.0/4, e.g. 239.1.1.1, or ff00::/8)",
                                         a->to_string()));
  return *a;
}

Result<IpAddress> parse_source(const OptionValue& v) {
  auto a = IpAddress::parse(v.text);
  if (!a) return fail(Errc::kInvalidArgument, fmt::format("{}: {}", v.origin, a.error().message()));
  if (a->is_multicast() || a->is_unspecified())
    return bad<IpAddress>(v, "a source must be a unicast address");
  return *a;
}

Result<Interface> parse_iface(const OptionValue& v) {
  auto ifc = resolve_interface(v.text);
  if (!ifc) return std::unexpected(std::move(ifc.error()).with_context(v.origin));
  return ifc;
}

Result<int> parse_ttl(const OptionValue& v) {
  FM_TRY(auto n, parse_whole_number(v, 0, kMaxTtl));
  return static_cast<int>(n);
}

Result<int> parse_rcvbuf(const OptionValue& v) {
  FM_TRY(auto n, parse_whole_number(v, 0, kMaxReceiveBuffer));
  return static_cast<int>(n);
}

Result<std::uint64_t> parse_count(const OptionValue& v) {
  return parse_whole_number(v, 1, kMaxCount);
}

}  // namespace flowmark
