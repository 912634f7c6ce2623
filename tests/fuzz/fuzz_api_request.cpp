// The body of the api source's POST /flow (from any HTTP client that reaches the port):
// FlowRequestParser on arbitrary bytes returns an event or a refusal, never crashes.
// Invariants:
//   - a refusal names a known reason and says why;
//   - an event has both ports non-zero and one address family; flowd-go's shape gives
//     scitag ids in range (experiment 0..1023, activity 0..63, both 0 or neither), an end
//     time only for an end event;
//   - flowd-go's shape: the answer (flowd_go_json) parses back to the same event.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string_view>

#include "daemon/sources/api/flow_request.hpp"

namespace {

using namespace flowmark::daemon::api;
using flowmark::scitags::FlowState;
using flowmark::scitags::Registry;

#define FUZZ_REQUIRE(cond)                                                                         \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      std::fprintf(stderr, "fuzz_api_request: invariant broken: %s (line %d)\n", #cond, __LINE__); \
      __builtin_trap();                                                                            \
    }                                                                                              \
  } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static FlowRequestParser parser;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  auto r = parser.parse(body, Registry::builtin());
  if (!r) {
    FUZZ_REQUIRE(static_cast<std::size_t>(r.error().reason) < kRequestRejectKinds);
    FUZZ_REQUIRE(!r.error().message.empty());
    return 0;
  }
  const auto e = r->event;
  FUZZ_REQUIRE(e.src.port != 0 && e.dst.port != 0);
  FUZZ_REQUIRE(e.src.address.family() == e.dst.address.family());
  if (r->shape != RequestShape::kFlowdGo) return 0;
  FUZZ_REQUIRE(e.experiment <= 1023 && e.activity <= 63);
  FUZZ_REQUIRE((e.experiment == 0) == (e.activity == 0));
  FUZZ_REQUIRE(e.state == FlowState::kEnd || e.end_time == 0);
  FUZZ_REQUIRE(e.start_time >= 0 && e.end_time >= 0 && e.current_time >= 0);
  const auto answer = flowd_go_json(e, r->application);
  auto again = parser.parse(answer, Registry::builtin());
  FUZZ_REQUIRE(again.has_value());
  FUZZ_REQUIRE(again->shape == RequestShape::kFlowdGo);
  FUZZ_REQUIRE(again->event == e);
  return 0;
}
