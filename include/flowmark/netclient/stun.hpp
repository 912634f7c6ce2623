// flowmark::netclient — public-address discovery by STUN (RFC 5389 binding request).
//
// A host behind NAT puts its private address in the fireflies it sends unless it learns
// the public one. A STUN server answers a binding request with the address and port it saw
// the request come from (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from RFC 3489 servers).
//
// The codec is pure (no sockets; parsing allocates only for an error message) and takes
// untrusted bytes; stun_discover() does one transaction over UDP with the retransmissions
// of RFC 5389 §7.2.1.
//
//   FM_TRY(auto server, resolve_stun_server("stun.example.org"));     // port 3478 by default
//   FM_TRY(auto mapped, stun_discover(server, {.timeout = std::chrono::seconds(2)}));
//   // mapped.address is the public address when the host is behind NAT
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "flowmark/core/address.hpp"
#include "flowmark/core/result.hpp"

namespace flowmark::netclient {

inline constexpr std::uint16_t kStunPort = 3478;
inline constexpr std::uint32_t kStunMagicCookie = 0x2112A442;
inline constexpr std::size_t kStunHeaderSize = 20;

// The 96-bit transaction id of one request; the answer must carry the same.
using StunTxid = std::array<std::byte, 12>;

// Message types and attributes the codec knows (RFC 5389 §18.1, §18.2).
inline constexpr std::uint16_t kStunBindingRequest = 0x0001;
inline constexpr std::uint16_t kStunBindingSuccess = 0x0101;
inline constexpr std::uint16_t kStunBindingError = 0x0111;
inline constexpr std::uint16_t kStunAttrMappedAddress = 0x0001;
inline constexpr std::uint16_t kStunAttrErrorCode = 0x0009;
inline constexpr std::uint16_t kStunAttrXorMappedAddress = 0x0020;
inline constexpr std::uint16_t kStunAttrSoftware = 0x8022;
inline constexpr std::uint16_t kStunAttrFingerprint = 0x8028;

// A binding request: the 20-byte header (type 0x0001, magic cookie, `txid`) followed by a
// SOFTWARE attribute carrying `software` when it is not empty (cut to 127 bytes; padded
// to 4 bytes as the attribute layout requires).
std::string encode_binding_request(const StunTxid& txid, std::string_view software = {});

// Reads the answer to the request with `txid` (the bytes are the caller's; nothing is
// kept). Returns the mapped address of a binding success response, taken from
// XOR-MAPPED-ADDRESS or, for RFC 3489 servers, MAPPED-ADDRESS.
// Errors:
//   - Errc::kMalformed: not a well-formed STUN message (header bits, length, cookie,
//     attribute layout, address family, FINGERPRINT), a transaction id other than `txid`,
//     not a binding response, or a success without a mapped address. The message says
//     what was wrong and at which byte offset.
//   - Errc::kRefused: a binding error response; the message carries the ERROR-CODE class
//     and number ("error 401") and the server's reason phrase (printable ASCII only).
//   - Errc::kUnsupported: an unknown comprehension-required attribute (0x0000-0x7FFF),
//     which RFC 5389 §7.3.3 says fails the transaction.
Result<Endpoint> parse_binding_response(std::span<const std::byte> message, const StunTxid& txid);

struct StunOptions {
  // Local address to send from (port chosen by the kernel); its family must be the
  // server's. Unset: the kernel picks by route.
  std::optional<IpAddress> bind;
  // The whole transaction, retransmissions included.
  std::chrono::milliseconds timeout{3000};
  // First retransmission timeout; doubled after each request (RFC 5389 §7.2.1), at most
  // kStunMaxRequests requests in all.
  std::chrono::milliseconds initial_rto{500};
  // SOFTWARE attribute of the request; empty sends none.
  std::string software = "flowmark";
};

inline constexpr unsigned kStunMaxRequests = 7;  // Rc of RFC 5389 §7.2.1

// What one transaction saw, for logs and for `flowmark stun --json`.
struct StunAnswer {
  Endpoint mapped;  // the address and port the server saw: the public one behind NAT
  Endpoint local;   // our socket (address by route, or the bind address)
  Endpoint server;
  std::chrono::microseconds elapsed{0};  // first request to answer
  unsigned requests = 0;                 // requests sent, retransmissions included
  // Datagrams read and set aside while waiting.
  unsigned ignored_foreign = 0;    // from an address other than the server
  unsigned ignored_txid = 0;       // another transaction id (or too short to carry one)
  unsigned ignored_malformed = 0;  // our transaction id, but malformed

  // True when the server saw another address than ours: there is NAT on the way.
  bool behind_nat() const noexcept { return mapped.address != local.address; }
};

// One binding transaction with `server` over UDP. Retransmits at RTO, 2·RTO, 4·RTO, …
// until an answer or `timeout`. Datagrams from other addresses, with other transaction
// ids or malformed are counted and ignored; an error response ends the transaction.
// Errors: Errc::kInvalidArgument (bind family differs from the server's, port 0), errno
// (socket, bind, sendto), std::errc::timed_out (no answer; the message says how many
// requests were sent and what was ignored), and the errors of parse_binding_response
// for an error response or an unknown comprehension-required attribute.
Result<StunAnswer> stun_query(const Endpoint& server, const StunOptions& options = {});

// stun_query(), keeping only the mapped (public) address and port.
Result<Endpoint> stun_discover(const Endpoint& server, const StunOptions& options = {});

// "192.0.2.1", "192.0.2.1:3478", "[2001:db8::1]:3478", "stun.example.org[:port]"
// (resolved now; the first address wins). The port defaults to 3478.
Result<Endpoint> resolve_stun_server(std::string_view text);

}  // namespace flowmark::netclient
