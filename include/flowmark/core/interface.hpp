// flowmark::core — network interfaces by name, index or address.
//
//   auto ifc = resolve_interface("eth0");     // or "3", or "192.0.2.7", or "fe80::1"
//   if (!ifc) fmt::print(stderr, "{}\n", ifc.error().message());
//   ifc->index; ifc->name; ifc->ipv4 (first IPv4 address, if any)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark {

struct Interface {
  std::uint32_t index = 0;
  std::string name;
  std::optional<IpAddress> ipv4;  // first IPv4 address of the interface, if any
  bool multicast = false;         // IFF_MULTICAST
  bool up = false;                // IFF_UP
};

// Resolves "eth0", "3" (an index) or an address assigned to a local interface. The error
// (Errc::kNotFound) names the interfaces that do exist.
Result<Interface> resolve_interface(std::string_view spec);

// Name of an interface index, or the index as text when the interface is gone.
std::string interface_name(std::uint32_t index);

// Every address assigned to a local interface (for recognising our own datagrams).
std::vector<IpAddress> local_addresses();

}  // namespace flowmark
