// The body of the `api` source's POST /flow: one flow event as JSON, in either of two shapes.
//
// flowd-go's flow event (its REST API plugin; keys matched without regard to case, as Go's
// encoding/json does; other keys ignored):
//   {"State": 2, "Protocol": 0, "Family": 2, "Src": "192.0.2.1:2345", "Dst": "[2001:db8::2]:5777",
//    "Experiment": 2, "Activity": 1, "StartTs": "2025-02-06T13:21:30.89+01:00",
//    "EndTs": "0001-01-01T00:00:00Z", "CurrentTs": "0001-01-01T00:00:00Z", "Application": "x"}
//   State 2 start / 3 end / 4 ongoing (or "start" / "end" / "ongoing"); Protocol 0 TCP / 1 UDP
//   (or "tcp" / "udp"), 0 when absent; Family 2 IPv4 / 10 IPv6, optional, checked against the
//   addresses; Src and Dst "ADDRESS:PORT" (IPv6 in brackets) or {"IP": "...", "Port": n} (the
//   form flowd-go's README shows); Experiment / Activity ids (0 or absent: the [[rule]]s
//   decide) or registry names; times RFC 3339, Go's zero time "0001-01-01T00:00:00Z", "" or
//   null for "not known".
// flowmark's own schema: a firefly document (scitags schema v1: "version", "flow-lifecycle",
//   "flow-id", "context"...; a syslog header allowed), read by scitags::FireflyDecoder.
//
//   FlowRequestParser p;
//   auto r = p.parse(body, registry);          // std::expected<FlowRequest, RequestError>
//   if (!r) answer(400, r.error().message);    // r.error().reason: "bad_json", "unknown_state"...
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <string_view>

#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::daemon::api {

enum class RequestReject : std::uint8_t {
  kBadJson,       // the body does not parse as JSON (or is not an object)
  kUnknownState,  // State is not 2, 3, 4 / start, end, ongoing
  kBadField,      // a member of the wrong type or value (address, port, family, id, time...)
  kMissingField,  // Src, Dst or State absent
};
inline constexpr std::size_t kRequestRejectKinds =
    static_cast<std::size_t>(RequestReject::kMissingField) + 1;
std::string_view to_string(RequestReject r) noexcept;  // "bad_json", "unknown_state", ...

struct RequestError {
  RequestReject reason;
  std::string message;  // for the client: "Src: '10.0.0.1' is not ADDRESS:PORT ..."
};

enum class RequestShape : std::uint8_t { kFlowdGo, kFirefly };

struct FlowRequest {
  scitags::FlowEvent event;
  RequestShape shape = RequestShape::kFlowdGo;
  std::string application;  // flowd-go's Application / the firefly's context.application
};

class FlowRequestParser {
 public:
  FlowRequestParser();
  ~FlowRequestParser();
  FlowRequestParser(FlowRequestParser&&) noexcept;
  FlowRequestParser& operator=(FlowRequestParser&&) noexcept;

  std::expected<FlowRequest, RequestError> parse(std::string_view body,
                                                 const scitags::Registry& registry);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The answer to a request: the event as flowd-go prints its flow event (State as its number,
// Src/Dst "ADDRESS:PORT", times RFC 3339 with Go's zero time for "not known"), one line.
std::string flowd_go_json(const scitags::FlowEvent& e, std::string_view application);

}  // namespace flowmark::daemon::api
