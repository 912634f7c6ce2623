// flowmark::net — host-name resolution for the places that take "an address or a name"
// (firefly destinations and collectors, STUN servers).
//
//   FM_TRY(Endpoint to, resolve_endpoint("collector.example.org:10514", 10514));
//   FM_TRY(Endpoint s, resolve_endpoint("[2001:db8::1]", 3478));   // port defaulted
#pragma once

#include <cstdint>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::net {

// "192.0.2.1", "192.0.2.1:10514", "2001:db8::1", "[2001:db8::1]:10514", "ff02::1%eth0",
// or a host name ("collector.example.org[:port]", resolved now with getaddrinfo; the first
// address wins). The port defaults to `default_port`. The error (Errc::kInvalidArgument)
// names the text and what was wrong with it.
Result<Endpoint> resolve_endpoint(std::string_view text, std::uint16_t default_port);

}  // namespace flowmark::net
