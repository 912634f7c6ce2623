// flowmark::core — wall-clock time in microseconds and RFC 3339 text, without allocation.
//
//   char buf[kRfc3339MicrosSize];
//   format_rfc3339_micros(buf, now_micros());       // "2025-03-25T10:00:00.123456+00:00"
//   auto t = parse_rfc3339("2025-03-25T10:00:00Z");  // Result<Micros>
#pragma once

#include <cstdint>
#include <string_view>

#include "flowmark/core/result.hpp"

namespace flowmark {

// Microseconds since the Unix epoch, UTC.
using Micros = std::int64_t;

Micros now_micros() noexcept;
// Nanoseconds: CLOCK_REALTIME since the epoch, and CLOCK_MONOTONIC (for intervals).
std::int64_t realtime_ns() noexcept;
std::int64_t monotonic_ns() noexcept;
// Sleeps until CLOCK_MONOTONIC reaches t (restarted after signals).
void sleep_until_monotonic(std::int64_t t_ns) noexcept;

// "YYYY-MM-DDThh:mm:ss.uuuuuu+00:00": 32 characters, no terminator.
inline constexpr std::size_t kRfc3339MicrosSize = 32;
// Writes exactly kRfc3339MicrosSize characters (years 0000..9999; others are clamped).
void format_rfc3339_micros(char* out, Micros t) noexcept;

// RFC 3339 date-time: "YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)" ('t'/'z' accepted, and a
// space for 'T' as RFC 3339 §5.6 allows). Fractions beyond microseconds are cut. The
// error (Errc::kMalformed) says which part is wrong.
Result<Micros> parse_rfc3339(std::string_view text);

}  // namespace flowmark
