// flowmark.observe()'s columns (observe_columns.hpp): the time conversion.
#include "observe_columns.hpp"

#include <bit>
#include <cmath>
#include <limits>

namespace flowmark::python {
namespace {

__extension__ typedef unsigned __int128 U128;

}  // namespace

// The packet-clock time as the JSON writes it (seconds with nine decimals) read back as a
// float: the double nearest to t / 1e9 (ties to even), exactly as Python's float() of the
// JSON text. A first guess within a step of it, then settled by comparing t with the
// midpoints to the neighbours in 128-bit integers.
double seconds(observe::Nanos t) noexcept {
  if (t == 0) return 0.0;
  const bool negative = t < 0;
  const std::uint64_t a =
      negative ? ~static_cast<std::uint64_t>(t) + 1 : static_cast<std::uint64_t>(t);
  // The whole seconds are exact, the fraction is rounded once and the sum once: less than a
  // step off.
  double d = static_cast<double>(a / 1'000'000'000) + static_cast<double>(a % 1'000'000'000) / 1e9;
  for (int i = 0; i < 4; ++i) {  // one step at most; the bound is for safety
    // d in [2^p, 2^(p+1)), its step 2^(p-52), d = m steps (d is normal: 1e-9 <= d < 1e10).
    const auto bits = std::bit_cast<std::uint64_t>(d);
    const int p = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
    const std::uint64_t m = (bits & ((std::uint64_t{1} << 52) - 1)) | (std::uint64_t{1} << 52);
    // In quarter steps: d = 4m, the midpoints 4m + 2 and 4m - 2 (4m - 1 below a power of
    // two); t / 1e9 = a * 2^(54 - p) / 1e9 quarter steps (p <= 33: the shift is at least 21
    // and the product stays below 2^90).
    const U128 x = static_cast<U128>(a) << (54 - p);
    const U128 g = 1'000'000'000;
    const U128 hi = g * (4 * m + 2);
    const U128 lo = g * (4 * m - (m == (std::uint64_t{1} << 52) ? 1 : 2));
    if (x > hi || (x == hi && (m & 1) != 0)) {
      d = std::nextafter(d, std::numeric_limits<double>::infinity());
    } else if (x < lo || (x == lo && (m & 1) != 0)) {
      d = std::nextafter(d, 0.0);
    } else {
      break;
    }
  }
  return negative ? -d : d;
}

}  // namespace flowmark::python
