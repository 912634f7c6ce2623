// Private: the JSON document of a firefly, shared by the encoder and append_firefly_json.
#pragma once

#include <string>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/scitags/flow_event.hpp"

namespace flowmark::scitags::detail {

// Appends the address as inet_ntop writes it (no scope), without inet_ntop's sprintf.
void append_ip_text(std::string& out, const IpAddress& a);

// Appends the compact document. `application_literal` is a JSON string literal (quoted),
// or empty to leave context.application out. A current_time or start_time of 0 (possible
// only when printing a decoded firefly) leaves current-time out / writes start-time null.
// The caller has checked the event (ports, times, families).
void append_document(std::string& out, const FlowEvent& e, std::string_view application_literal,
                     Micros current_time);

}  // namespace flowmark::scitags::detail
