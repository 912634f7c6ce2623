// flowmark::core — the values of options that several commands share (--group --source
// --iface --ttl --rcvbuf --timeout --count), checked one way for every command: the same types,
// ranges, defaults and error messages. A value remembers where it came from, so that an
// error names the flag or the environment variable ("--ttl 300: out of range (0..255)").
// Errors are Errc::kInvalidArgument (exit 2), an unknown interface Errc::kNotFound (68).
//
//   FM_TRY(int ttl, parse_ttl(OptionValue::flag("--ttl", "5")));
//   FM_TRY(auto g, parse_group({"ff02::1", "MULTICAST_GROUP=ff02::1"}));
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/interface.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark {

// The one default of --rcvbuf (SO_RCVBUF(FORCE)) for every receiving command: room for
// bursts of small datagrams while the reader is busy; memory is only used under backlog.
inline constexpr int kDefaultReceiveBuffer = 32 << 20;
inline constexpr int kMaxReceiveBuffer = 1 << 30;
inline constexpr int kMaxTtl = 255;
inline constexpr double kMaxSeconds = 1e6;  // the longest --timeout or --interval
inline constexpr std::uint64_t kMaxCount = std::uint64_t{1} << 62;

struct OptionValue {
  std::string text;    // the value as given
  std::string origin;  // for messages: "--ttl 300" or "MULTICAST_TTL=300"

  static OptionValue flag(std::string_view name, std::string_view text);
};

// A whole number in lo..hi.
Result<std::uint64_t> parse_whole_number(const OptionValue& v, std::uint64_t lo, std::uint64_t hi);
// Seconds as a decimal number, more than 0 (or 0 too with allow_zero), at most kMaxSeconds.
Result<std::chrono::nanoseconds> parse_seconds(const OptionValue& v, bool allow_zero = false);
// --group, --groups: an IPv4 or IPv6 multicast group.
Result<IpAddress> parse_group(const OptionValue& v);
// --source: the unicast source address of a source-specific join.
Result<IpAddress> parse_source(const OptionValue& v);
// --iface: an interface by name, index or address (Errc::kNotFound if there is none).
Result<Interface> parse_iface(const OptionValue& v);
// --ttl: a multicast TTL / hop limit, 0..255.
Result<int> parse_ttl(const OptionValue& v);
// --rcvbuf: a receive buffer in bytes, 0 (the kernel's default) .. 1 GiB.
Result<int> parse_rcvbuf(const OptionValue& v);
// --count: a number of datagrams, 1..kMaxCount.
Result<std::uint64_t> parse_count(const OptionValue& v);

}  // namespace flowmark
