// Addresses, endpoints and ports as typed by users and read from configs.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/interface.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto a = flowmark::IpAddress::parse(text)) {
    // Whatever parses must print and parse back to the same address.
    auto again = flowmark::IpAddress::parse(a->to_string());
    if (!again || *again != *a) __builtin_trap();
    (void)a->is_multicast();
    (void)a->is_ssm();
  }
  if (auto e = flowmark::Endpoint::parse(text, 59559)) {
    sockaddr_storage ss{};
    e->to_sockaddr(ss);
    if (flowmark::Endpoint::from_sockaddr(ss) != *e) __builtin_trap();
  }
  (void)flowmark::parse_port(text);
  if (size < 64) (void)flowmark::resolve_interface(text);
  return 0;
}
