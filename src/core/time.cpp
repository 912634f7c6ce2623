#include "flowmark/core/time.hpp"

#include <climits>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace flowmark {
namespace {

// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t y;
  unsigned m, d;
};
constexpr Civil civil_from_days(std::int64_t z) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

// "00" "01" ... "99": two digits per lookup.
constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// Writes v (0..99) as two digits.
inline void put2(char* p, unsigned v) noexcept { std::memcpy(p, kDigitPairs + 2 * v, 2); }

constexpr unsigned days_in_month(std::int64_t y, unsigned m) noexcept {
  constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

// Reads exactly n digits at text[pos]; false if any is not a digit.
bool digits(std::string_view text, std::size_t pos, std::size_t n, unsigned& out) noexcept {
  if (pos + n > text.size()) return false;
  unsigned v = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  out = v;
  return true;
}

// Two digits at p into v; false unless both are digits.
inline bool two_digits(const char* p, unsigned& v) noexcept {
  const unsigned a = static_cast<unsigned char>(p[0]) - unsigned{'0'};
  const unsigned b = static_cast<unsigned char>(p[1]) - unsigned{'0'};
  v = a * 10 + b;
  return a <= 9 && b <= 9;
}

inline bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// parse_rfc3339 without its error messages: the same rules in one pass over fixed
// offsets (one length check for the 20 characters every valid form has). Returns false
// where parse_rfc3339 fails; it then runs the checks again to say what is wrong.
bool parse_rfc3339_fast(std::string_view text, Micros& out) noexcept {
  if (text.size() < 20) return false;  // "YYYY-MM-DDThh:mm:ssZ" is the shortest
  const char* s = text.data();
  const std::size_t n = text.size();
  unsigned yh = 0, yl = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!two_digits(s, yh) || !two_digits(s + 2, yl) || s[4] != '-' || !two_digits(s + 5, mo) ||
      s[7] != '-' || !two_digits(s + 8, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !two_digits(s + 11, h) || s[13] != ':' || !two_digits(s + 14, mi) || s[16] != ':' ||
      !two_digits(s + 17, sec))
    return false;
  const unsigned y = yh * 100 + yl;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;
  if (h > 23 || mi > 59 || sec > 60) return false;  // 60: leap second
  std::size_t pos = 19;
  Micros frac = 0;
  if (s[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    // Up to six digits count; further digits are cut.
    while (pos < n && pos - start < 6 && is_digit(s[pos])) frac = frac * 10 + (s[pos++] - '0');
    for (std::size_t k = pos - start; k < 6; ++k) frac *= 10;
    while (pos < n && is_digit(s[pos])) ++pos;
    if (pos == start) return false;
  }
  std::int64_t offset = 0;
  if (pos < n && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < n && (s[pos] == '+' || s[pos] == '-')) {
    unsigned oh = 0, om = 0;
    if (n < pos + 6 || !two_digits(s + pos + 1, oh) || s[pos + 3] != ':' ||
        !two_digits(s + pos + 4, om) || oh > 23 || om > 59)
      return false;
    offset = (s[pos] == '-' ? -1 : 1) * static_cast<std::int64_t>(oh * 3600 + om * 60);
    pos += 6;
  } else {
    return false;
  }
  if (pos != n) return false;
  const std::int64_t days = days_from_civil(y, mo, d);
  const std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
  out = secs * 1'000'000 + frac;
  return true;
}

// "YYYY-MM-DDThh:mm:ss" of `secs` since the epoch (19 characters).
void format_second(char* out, std::int64_t secs) noexcept {
  std::int64_t days = secs / 86400;
  std::int64_t sod = secs % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  const Civil c = civil_from_days(days);
  const auto y = static_cast<unsigned>(c.y);
  put2(out, y / 100);
  put2(out + 2, y % 100);
  out[4] = '-';
  put2(out + 5, c.m);
  out[7] = '-';
  put2(out + 8, c.d);
  out[10] = 'T';
  const auto s = static_cast<unsigned>(sod);
  const unsigned min_sec = s % 3600;
  put2(out + 11, s / 3600);
  out[13] = ':';
  put2(out + 14, min_sec / 60);
  out[16] = ':';
  put2(out + 17, min_sec % 60);
}

}  // namespace

Micros now_micros() noexcept {
  timespec ts{};
  (void)clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<Micros>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

std::int64_t realtime_ns() noexcept {
  timespec ts{};
  (void)clock_gettime(CLOCK_REALTIME, &ts);  // cannot fail with a valid clock and pointer
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  (void)clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until_monotonic(std::int64_t t) noexcept {
  timespec ts{static_cast<time_t>(t / 1'000'000'000), static_cast<long>(t % 1'000'000'000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

void format_rfc3339_micros(char* out, Micros t) noexcept {
  constexpr Micros kMin = -62167219200LL * 1'000'000;            // 0000-01-01
  constexpr Micros kMax = 253402300799LL * 1'000'000 + 999'999;  // 9999-12-31T23:59:59.999999
  if (t < kMin) t = kMin;
  if (t > kMax) t = kMax;
  std::int64_t secs = t / 1'000'000;
  std::int64_t us = t % 1'000'000;
  if (us < 0) {
    us += 1'000'000;
    --secs;
  }
  // The last two times formatted (per thread), and the date and time of day of the last
  // second: an encoder writes three or four times per firefly — mostly the same two, its
  // batch's syslog time and the pipeline's batch time — and the calendar arithmetic was 3 % of
  // flowmarkd's CPU on the pipe -> firefly bench.
  struct Formatted {
    Micros t = INT64_MIN;
    char text[kRfc3339MicrosSize];
  };
  struct Last {
    Formatted times[2];
    unsigned next = 0;  // the one replaced next
    std::int64_t secs = INT64_MIN;
    char second[19];
  };
  thread_local Last last;
  for (const Formatted& f : last.times) {
    if (f.t == t) {
      std::memcpy(out, f.text, kRfc3339MicrosSize);
      return;
    }
  }
  if (secs != last.secs) {
    format_second(last.second, secs);
    last.secs = secs;
  }
  Formatted& f = last.times[last.next];
  last.next ^= 1;
  char* p = f.text;
  std::memcpy(p, last.second, 19);
  p[19] = '.';
  const auto u = static_cast<unsigned>(us);
  const unsigned low4 = u % 10000;
  put2(p + 20, u / 10000);
  put2(p + 22, low4 / 100);
  put2(p + 24, low4 % 100);
  std::memcpy(p + 26, "+00:00", 6);
  f.t = t;
  std::memcpy(out, p, kRfc3339MicrosSize);
}

Result<Micros> parse_rfc3339(std::string_view s) {
  if (Micros t = 0; parse_rfc3339_fast(s, t)) return t;
  // Not valid: the step-by-step checks below name the part that is wrong.
  auto bad = [&](std::string_view what) {
    return fail(Errc::kMalformed, fmt::format("'{}' is not an RFC 3339 date-time: {}", s, what));
  };
  unsigned y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (!digits(s, 0, 4, y) || s.size() < 5 || s[4] != '-' || !digits(s, 5, 2, mo) || s.size() < 8 ||
      s[7] != '-' || !digits(s, 8, 2, d))
    return bad("expected YYYY-MM-DD");
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return bad("no such date");
  if (s.size() < 11 || (s[10] != 'T' && s[10] != 't' && s[10] != ' '))
    return bad("expected 'T' after the date");
  if (!digits(s, 11, 2, h) || s.size() < 14 || s[13] != ':' || !digits(s, 14, 2, mi) ||
      s.size() < 17 || s[16] != ':' || !digits(s, 17, 2, sec))
    return bad("expected hh:mm:ss");
  if (h > 23 || mi > 59 || sec > 60) return bad("time out of range");  // 60: leap second
  std::size_t pos = 19;
  Micros frac = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    Micros scale = 100'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      frac += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
    if (pos == start) return bad("empty fraction");
  }
  std::int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    unsigned oh = 0, om = 0;
    if (!digits(s, pos + 1, 2, oh) || s.size() < pos + 4 || s[pos + 3] != ':' ||
        !digits(s, pos + 4, 2, om) || oh > 23 || om > 59)
      return bad("bad offset (expected Z or +hh:mm)");
    offset = (s[pos] == '-' ? -1 : 1) * static_cast<std::int64_t>(oh * 3600 + om * 60);
    pos += 6;
  } else {
    return bad("missing time zone (Z or +hh:mm)");
  }
  if (pos != s.size()) return bad("trailing characters");
  const std::int64_t days = days_from_civil(y, mo, d);
  const std::int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
  return secs * 1'000'000 + frac;
}

}  // namespace flowmark
