// STUN binding responses as they arrive from the network: any bytes.
//
// Each input is read twice: with the transaction id it carries (bytes 8..19, so that the
// fuzzer gets past the id check) and with a fixed one. Invariants:
//   - a rejection is Errc::kMalformed, kRefused or kUnsupported with a non-empty message
//     of printable ASCII (the server's reason phrase reaches terminals and logs);
//   - an accepted answer has a port, no scope, and is what the message says: a success
//     response rebuilt around it (XOR-MAPPED-ADDRESS) parses to the same endpoint;
//   - a binding request is never taken for an answer.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>

#include "flowmark/netclient/stun.hpp"

namespace {

using namespace flowmark;
using namespace flowmark::netclient;

#define FUZZ_REQUIRE(cond)                                                                  \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "fuzz_stun: invariant broken: %s (line %d)\n", #cond, __LINE__); \
      __builtin_trap();                                                                     \
    }                                                                                       \
  } while (0)

void put16(std::string& s, unsigned v) {
  s.push_back(static_cast<char>(v >> 8 & 0xff));
  s.push_back(static_cast<char>(v & 0xff));
}

// A success response carrying `e` in XOR-MAPPED-ADDRESS, written independently of the
// parser.
std::string success(const Endpoint& e, const StunTxid& txid) {
  std::string m;
  put16(m, kStunBindingSuccess);
  put16(m, static_cast<unsigned>(4 + 4 + e.address.size()));
  put16(m, kStunMagicCookie >> 16);
  put16(m, kStunMagicCookie & 0xffff);
  for (auto b : txid) m.push_back(static_cast<char>(b));
  put16(m, kStunAttrXorMappedAddress);
  put16(m, static_cast<unsigned>(4 + e.address.size()));
  m.push_back('\0');
  m.push_back(e.address.is_v4() ? '\1' : '\2');
  put16(m, e.port ^ (kStunMagicCookie >> 16));
  for (std::size_t i = 0; i < e.address.size(); ++i)
    m.push_back(static_cast<char>(e.address.bytes()[i] ^ static_cast<std::uint8_t>(m[4 + i])));
  return m;
}

void check(std::span<const std::byte> in, const StunTxid& txid) {
  auto r = parse_binding_response(in, txid);
  if (!r) {
    const auto& code = r.error().code();
    FUZZ_REQUIRE(code == make_error_code(Errc::kMalformed) ||
                 code == make_error_code(Errc::kRefused) ||
                 code == make_error_code(Errc::kUnsupported));
    const std::string& msg = r.error().message();
    FUZZ_REQUIRE(!msg.empty());
    for (char c : msg) FUZZ_REQUIRE(c >= 0x20 && c < 0x7f);
    return;
  }
  FUZZ_REQUIRE(r->port != 0);
  FUZZ_REQUIRE(r->address.scope_id() == 0);
  FUZZ_REQUIRE(in.size() >= kStunHeaderSize && in.size() % 4 == 0);
  const std::string again = success(*r, txid);
  auto back = parse_binding_response(std::as_bytes(std::span(again.data(), again.size())), txid);
  FUZZ_REQUIRE(back.has_value());
  FUZZ_REQUIRE(*back == *r);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto in = std::as_bytes(std::span(data, size));
  StunTxid carried{};
  if (size >= kStunHeaderSize) std::memcpy(carried.data(), data + 8, carried.size());
  check(in, carried);
  check(in, StunTxid{});

  const std::string request = encode_binding_request(carried, "fuzz");
  FUZZ_REQUIRE(
      !parse_binding_response(std::as_bytes(std::span(request.data(), request.size())), carried)
           .has_value());
  return 0;
}
