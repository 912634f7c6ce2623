// flowmark::scitags — the named-pipe line: flowd's `np_api`, one flow event per line.
//
//   state prot src_ip src_port dst_ip dst_port exp act
//   start tcp 192.168.0.1 2345 192.168.0.2 5777 atlas perfSONAR
//
// Tokens are separated by any whitespace (flowd-go's rule; flowd demands single spaces), a
// trailing "\r\n" is ignored, and the experiment and activity may be ids or registry names
// (names resolve through the Registry given). A bad line is a normal outcome, not an
// exception: the error says which token (1..8, 0 for the line as a whole) and why.
//
//   auto e = parse_pipe_line("start tcp 10.0.0.1 2345 10.0.0.2 5777 2 1", Registry::builtin());
//   if (!e) log("line {}: {}", n, e.error().message);   // "token 2 (protocol): ..."
// The event has no times: the caller stamps start/end times as its role requires.
#pragma once

#include <cstdint>
#include <expected>
#include <span>
#include <string>
#include <string_view>

#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::scitags {

inline constexpr std::size_t kPipeLineTokens = 8;

enum class PipeReject : std::uint8_t {
  kTokenCount,         // not exactly 8 tokens
  kBadState,           // not start, ongoing or end
  kBadProtocol,        // not tcp or udp
  kBadAddress,         // src_ip / dst_ip is not an IP address (or carries a %scope)
  kBadPort,            // not a number in 1..65535
  kFamilyMismatch,     // one IPv4 and one IPv6 endpoint
  kBadId,              // a numeric id outside the scitag range (exp 1..1023, act 1..63)
  kUnknownExperiment,  // a name the registry does not know
  kUnknownActivity,    // a name the experiment does not have in the registry
};
inline constexpr std::size_t kPipeRejectKinds =
    static_cast<std::size_t>(PipeReject::kUnknownActivity) + 1;
std::string_view to_string(PipeReject r) noexcept;  // "token_count", "bad_state", ...

struct PipeLineError {
  PipeReject reason;
  std::size_t token = 0;  // 1-based position of the bad token; 0: the line as a whole
  // For the user, naming the token: "token 2 (protocol): 'tpc' is not tcp or udp".
  std::string message;
};

// The name of token `position` (1..8): "state", "protocol", "src_ip", ... ("line" for 0).
std::string_view pipe_token_name(std::size_t position) noexcept;

// Parses one line. Allocates only for an error message.
std::expected<FlowEvent, PipeLineError> parse_pipe_line(std::string_view line,
                                                        const Registry& registry);
// The same for a line already split (e.g. command-line arguments); any count is checked.
std::expected<FlowEvent, PipeLineError> parse_pipe_tokens(std::span<const std::string_view> tokens,
                                                          const Registry& registry);

// True for a line with nothing but whitespace (callers skip those).
bool is_blank_line(std::string_view line) noexcept;

}  // namespace flowmark::scitags
