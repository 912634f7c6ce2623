// Fireflies as they arrive on UDP port 10514: any bytes, decoded strictly and leniently.
//
// Invariants of an accepted firefly:
//   - both ports are non-zero, both addresses of one family, neither with a scope;
//   - start-time > 0 (strict); >= 0 and > 0 for a start event (lenient: flowd's null "");
//   - an end event has an end-time > 0;
//   - it re-encodes (FireflyEncoder with and without the syslog header) and decodes again
//     to the same FlowEvent, TCP information aside (it travels as the "netlink" extra);
//     an absent current-time (0) comes back as the encoder's `now`, as documented;
//   - printed with append_firefly_json it decodes again (with the same options) to the
//     same event, application and extra members: the printer invents nothing, drops nothing.
// A lenient firefly without start-time cannot be re-encoded (the encoder never writes a
// null time, by design) and is only printed. A rejection names a known reason and says why.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "flowmark/scitags/firefly.hpp"

namespace {

using namespace flowmark::scitags;

constexpr flowmark::Micros kNow = 1742896800'123456;  // 2025-03-25T10:00:00.123456Z

// Names the broken invariant, then crashes (libFuzzer saves the input).
#define FUZZ_REQUIRE(cond)                                                                     \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      std::fprintf(stderr, "fuzz_firefly: invariant broken: %s (line %d)\n", #cond, __LINE__); \
      __builtin_trap();                                                                        \
    }                                                                                          \
  } while (0)

void check(const std::expected<const Firefly*, Rejection>& r, bool lenient) {
  static FireflyEncoder with_header({.hostname = "fuzz.example.org", .application = "fuzz"});
  static FireflyEncoder bare({.hostname = "h", .syslog_header = false});
  static FireflyDecoder again;  // strict: what we send must pass the strictest reading
  static FireflyDecoder again_lenient({.lenient_start_time = true});
  if (!r) {
    FUZZ_REQUIRE(static_cast<std::size_t>(r.error().reason) < kRejectKinds);
    FUZZ_REQUIRE(to_string(r.error().reason) != "unknown");
    FUZZ_REQUIRE(!r.error().detail.empty());
    return;
  }
  const Firefly& f = **r;
  const FlowEvent e = f.event;
  FUZZ_REQUIRE(e.src.port != 0 && e.dst.port != 0);
  FUZZ_REQUIRE(e.src.address.family() == e.dst.address.family());
  FUZZ_REQUIRE(e.src.address.scope_id() == 0 && e.dst.address.scope_id() == 0);
  FUZZ_REQUIRE(lenient || e.start_time > 0);
  FUZZ_REQUIRE(e.start_time >= 0);
  FUZZ_REQUIRE(e.state != FlowState::kStart || e.start_time > 0);
  FUZZ_REQUIRE(e.state != FlowState::kEnd || e.end_time > 0);
  FUZZ_REQUIRE(!e.tcp);  // the decoder keeps "netlink" as an extra member

  // Printing: the document with the kept members.
  std::string printed;
  append_firefly_json(printed, f);
  {
    const std::string application = f.application;
    const auto extra = f.extra;
    auto p = (lenient ? again_lenient : again).decode(printed);
    FUZZ_REQUIRE(p.has_value());
    FUZZ_REQUIRE((*p)->event == e);
    FUZZ_REQUIRE((*p)->application == application);
    FUZZ_REQUIRE((*p)->extra == extra);
  }

  if (e.start_time <= 0) return;  // lenient, no start time: not encodable (by design)
  FlowEvent want = e;
  if (want.current_time <= 0) want.current_time = kNow;
  for (FireflyEncoder* enc : {&with_header, &bare}) {
    auto w = enc->encode(e, kNow);
    FUZZ_REQUIRE(w.has_value());
    auto back = again.decode(*w);
    FUZZ_REQUIRE(back.has_value());
    FUZZ_REQUIRE((*back)->event == want);
    FUZZ_REQUIRE((*back)->extra.empty());
    FUZZ_REQUIRE((*back)->has_header == (enc == &with_header));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static FireflyDecoder strict;
  static FireflyDecoder lenient({.lenient_start_time = true});
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  check(strict.decode(text), false);
  check(lenient.decode(text), true);
  return 0;
}
