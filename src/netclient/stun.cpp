// STUN binding requests and responses (RFC 5389), and one UDP transaction.
#include "flowmark/netclient/stun.hpp"

#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

#include <fmt/format.h>

#include "flowmark/core/fd.hpp"
#include "flowmark/net/resolve.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::netclient {
namespace {

constexpr std::size_t kAttrHeaderSize = 4;
constexpr std::size_t kMaxSoftware = 127;              // RFC 5389 §15.10: fewer than 128 characters
constexpr std::size_t kMaxReason = 128;                // what we quote of a reason phrase
constexpr std::uint32_t kFingerprintXor = 0x5354554e;  // RFC 5389 §15.5
constexpr std::uint8_t kFamilyV4 = 0x01;
constexpr std::uint8_t kFamilyV6 = 0x02;

// CRC-32 of ISO/IEC 13239 (the one of Ethernet and zlib), for FINGERPRINT.
constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();

std::uint32_t crc32(std::span<const std::byte> bytes) noexcept {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::byte b : bytes) c = kCrcTable[(c ^ std::to_integer<std::uint8_t>(b)) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

// Big-endian reads over a message whose bounds the caller has checked.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> m) noexcept : m_(m) {}
  std::uint8_t u8(std::size_t at) const noexcept { return std::to_integer<std::uint8_t>(m_[at]); }
  std::uint16_t u16(std::size_t at) const noexcept {
    return static_cast<std::uint16_t>(u8(at) << 8 | u8(at + 1));
  }
  std::uint32_t u32(std::size_t at) const noexcept {
    return std::uint32_t{u16(at)} << 16 | u16(at + 2);
  }

 private:
  std::span<const std::byte> m_;
};

void put16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}

void put32(std::string& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v & 0xFFFF));
}

std::unexpected<Error> malformed(std::string message) {
  return fail(Errc::kMalformed, std::move(message));
}

// Attributes we know and do not need: the rest of RFC 3489 (old servers still send
// SOURCE-ADDRESS and CHANGED-ADDRESS), the authentication ones of RFC 5389/8489 and the
// RFC 5780 ones. Everything else below 0x8000 is unknown and comprehension-required.
bool known_attribute(std::uint16_t type) noexcept {
  if (type >= 0x0001 && type <= 0x000B) return true;  // RFC 3489 and 5389
  switch (type) {
    case 0x0014:  // REALM
    case 0x0015:  // NONCE
    case 0x001C:  // MESSAGE-INTEGRITY-SHA256
    case 0x001D:  // PASSWORD-ALGORITHM
    case 0x001E:  // USERHASH
    case 0x0020:  // XOR-MAPPED-ADDRESS
    case 0x0026:  // PADDING
    case 0x0027:  // RESPONSE-PORT
      return true;
    default: return false;
  }
}

// MAPPED-ADDRESS or XOR-MAPPED-ADDRESS, whose value starts at `at` and is `len` bytes.
Result<Endpoint> read_address(std::span<const std::byte> m, std::size_t at, std::size_t len,
                              bool xored, std::string_view name) {
  const Reader r(m);
  if (len < 4)
    return malformed(fmt::format("{} at byte {} is {} bytes, too short for an address", name,
                                 at - kAttrHeaderSize, len));
  const std::uint8_t family = r.u8(at + 1);
  const std::size_t want = family == kFamilyV4 ? 8 : family == kFamilyV6 ? 20 : 0;
  if (want == 0)
    return malformed(fmt::format("{} at byte {}: unknown address family 0x{:02x} at byte {}", name,
                                 at - kAttrHeaderSize, family, at + 1));
  if (len != want)
    return malformed(fmt::format("{} at byte {}: an IPv{} address takes {} bytes, not {}", name,
                                 at - kAttrHeaderSize, family == kFamilyV4 ? 4 : 6, want, len));
  Endpoint e;
  e.port = r.u16(at + 2);
  if (xored) e.port ^= static_cast<std::uint16_t>(kStunMagicCookie >> 16);
  if (e.port == 0)
    return malformed(fmt::format("{} at byte {} maps to port 0", name, at - kAttrHeaderSize));
  // The XOR key is the magic cookie followed by the transaction id: bytes 4..19.
  auto key = [&](std::size_t i) { return xored ? r.u8(4 + i) : std::uint8_t{0}; };
  if (family == kFamilyV4) {
    std::uint32_t a = 0;
    for (std::size_t i = 0; i < 4; ++i) a = a << 8 | (r.u8(at + 4 + i) ^ key(i));
    e.address = IpAddress::v4(a);
  } else {
    in6_addr a{};
    for (std::size_t i = 0; i < 16; ++i)
      a.s6_addr[i] = static_cast<std::uint8_t>(r.u8(at + 4 + i) ^ key(i));
    e.address = IpAddress::v6(a);
  }
  return e;
}

// ERROR-CODE (RFC 5389 §15.6) as "error 401 (Unauthorized)".
Result<std::string> read_error_code(std::span<const std::byte> m, std::size_t at, std::size_t len) {
  const Reader r(m);
  if (len < 4)
    return malformed(
        fmt::format("ERROR-CODE at byte {} is {} bytes, too short", at - kAttrHeaderSize, len));
  const unsigned code = (r.u8(at + 2) & 0x07) * 100u + r.u8(at + 3);
  std::string reason;
  for (std::size_t i = at + 4; i < at + len && reason.size() < kMaxReason; ++i) {
    const auto c = r.u8(i);
    reason.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  if (reason.empty()) return fmt::format("error {}", code);
  return fmt::format("error {} ({})", code, reason);
}

}  // namespace

std::string encode_binding_request(const StunTxid& txid, std::string_view software) {
  software = software.substr(0, kMaxSoftware);
  const std::size_t padded = (software.size() + 3) & ~std::size_t{3};
  const std::size_t body = software.empty() ? 0 : kAttrHeaderSize + padded;
  std::string out;
  out.reserve(kStunHeaderSize + body);
  put16(out, kStunBindingRequest);
  put16(out, static_cast<std::uint16_t>(body));
  put32(out, kStunMagicCookie);
  for (std::byte b : txid) out.push_back(static_cast<char>(b));
  if (!software.empty()) {
    put16(out, kStunAttrSoftware);
    put16(out, static_cast<std::uint16_t>(software.size()));
    out.append(software);
    out.append(padded - software.size(), '\0');
  }
  return out;
}

Result<Endpoint> parse_binding_response(std::span<const std::byte> m, const StunTxid& txid) {
  const Reader r(m);
  if (m.size() < kStunHeaderSize)
    return malformed(
        fmt::format("STUN message of {} bytes is shorter than the 20-byte header", m.size()));
  const std::uint16_t type = r.u16(0);
  if (type & 0xC000)
    return malformed(fmt::format(
        "the two top bits of the message type 0x{:04x} at byte 0 are not zero (not STUN)", type));
  const std::size_t length = r.u16(2);
  if (length % 4 != 0)
    return malformed(fmt::format("message length {} at byte 2 is not a multiple of 4", length));
  if (kStunHeaderSize + length != m.size())
    return malformed(
        fmt::format("message length {} at byte 2 does not match the {} bytes that "
                    "follow the header",
                    length, m.size() - kStunHeaderSize));
  if (const std::uint32_t cookie = r.u32(4); cookie != kStunMagicCookie)
    return malformed(
        fmt::format("magic cookie 0x{:08x} at byte 4 is not 0x{:08x}", cookie, kStunMagicCookie));
  if (!std::equal(txid.begin(), txid.end(), m.begin() + 8))
    return malformed("transaction id at byte 8 is not the one of the request");
  if (type != kStunBindingSuccess && type != kStunBindingError)
    return malformed(
        fmt::format("message type 0x{:04x} at byte 0 is not a binding response "
                    "(0x{:04x} or 0x{:04x})",
                    type, kStunBindingSuccess, kStunBindingError));

  // Offsets of the value of the first attribute of each kind we use (0: absent).
  std::size_t xor_at = 0, xor_len = 0, mapped_at = 0, mapped_len = 0, error_at = 0, error_len = 0;
  std::size_t unknown_at = 0;
  std::uint16_t unknown_type = 0;
  bool fingerprint = false;
  for (std::size_t off = kStunHeaderSize; off < m.size();) {
    if (m.size() - off < kAttrHeaderSize)  // cannot happen: the length is a multiple of 4
      return malformed(fmt::format("attribute header at byte {} is truncated", off));
    const std::uint16_t atype = r.u16(off);
    const std::size_t alen = r.u16(off + 2);
    const std::size_t value = off + kAttrHeaderSize;
    const std::size_t padded = (alen + 3) & ~std::size_t{3};
    if (padded > m.size() - value)
      return malformed(
          fmt::format("attribute 0x{:04x} at byte {} is {} bytes long but only {} bytes remain",
                      atype, off, alen, m.size() - value));
    if (fingerprint)
      return malformed(fmt::format(
          "attribute 0x{:04x} at byte {} follows FINGERPRINT, which must be last", atype, off));
    switch (atype) {
      case kStunAttrXorMappedAddress:
        if (xor_at == 0) xor_at = value, xor_len = alen;
        break;
      case kStunAttrMappedAddress:
        if (mapped_at == 0) mapped_at = value, mapped_len = alen;
        break;
      case kStunAttrErrorCode:
        if (error_at == 0) error_at = value, error_len = alen;
        break;
      case kStunAttrFingerprint: {
        if (alen != 4)
          return malformed(fmt::format("FINGERPRINT at byte {} is {} bytes, not 4", off, alen));
        const std::uint32_t want = crc32(m.first(off)) ^ kFingerprintXor;
        if (const std::uint32_t got = r.u32(value); got != want)
          return malformed(
              fmt::format("FINGERPRINT at byte {} is 0x{:08x}, the message's is "
                          "0x{:08x}",
                          off, got, want));
        fingerprint = true;
        break;
      }
      default:
        if (atype < 0x8000 && !known_attribute(atype) && unknown_at == 0)
          unknown_at = off, unknown_type = atype;
        break;
    }
    off = value + padded;
  }

  if (type == kStunBindingError) {
    if (error_at == 0) return fail(Errc::kRefused, "binding error response without ERROR-CODE");
    FM_TRY(auto what, read_error_code(m, error_at, error_len));
    return fail(Errc::kRefused, fmt::format("binding error response: {}", what));
  }
  if (unknown_at != 0)
    return fail(Errc::kUnsupported,
                fmt::format("unknown comprehension-required attribute 0x{:04x} at byte {}",
                            unknown_type, unknown_at));
  if (xor_at != 0) return read_address(m, xor_at, xor_len, true, "XOR-MAPPED-ADDRESS");
  if (mapped_at != 0) return read_address(m, mapped_at, mapped_len, false, "MAPPED-ADDRESS");
  return malformed("binding success response without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS");
}

namespace {

class RealStunClock final : public StunClock {
 public:
  TimePoint now() override { return std::chrono::steady_clock::now(); }
  int wait_readable(int fd, TimePoint until) override {
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(until - now());
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    return ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(wait.count(), 1)));
  }
};

std::string seconds_text(std::chrono::milliseconds d) {
  return fmt::format("{:g} s", static_cast<double>(d.count()) / 1000.0);
}

// The address the kernel would send from towards `server` (a connected UDP socket sends
// nothing); unspecified when there is no route.
IpAddress route_source(const Endpoint& server) {
  const IpAddress none = IpAddress::any(server.address.family());
  auto fd = net::open_udp_socket(server.address.family());
  if (!fd) return none;
  if (!net::connect_to(fd->get(), server)) return none;
  auto local = net::local_endpoint(fd->get());
  return local ? local->address : none;
}

Endpoint local_endpoint(int fd, const Endpoint& server) {
  Endpoint e = net::local_endpoint(fd).value_or(Endpoint{IpAddress::any(server.address.family())});
  if (e.address.is_unspecified()) e.address = route_source(server);
  return e;
}

std::string ignored_text(const StunAnswer& a, const std::optional<Error>& last_malformed) {
  std::string out;
  auto add = [&](unsigned n, std::string_view what) {
    if (n == 0) return;
    fmt::format_to(std::back_inserter(out), "{}{} {}", out.empty() ? "; ignored " : ", ", n, what);
  };
  add(a.ignored_foreign, "from other addresses");
  add(a.ignored_txid, "with another transaction id");
  add(a.ignored_malformed, "malformed");
  if (last_malformed)
    fmt::format_to(std::back_inserter(out), " (last: {})", last_malformed->message());
  return out;
}

}  // namespace

StunClock& real_stun_clock() noexcept {
  static RealStunClock clock;
  return clock;
}

Result<StunAnswer> stun_query(const Endpoint& server, const StunOptions& options) {
  if (server.port == 0)
    return fail(Errc::kInvalidArgument,
                fmt::format("STUN server {}: port 0 is not a port to send to", server.to_string()));
  if (server.address.is_unspecified() || server.address.is_multicast())
    return fail(Errc::kInvalidArgument,
                fmt::format("STUN server {}: not a unicast address", server.to_string()));
  if (options.bind && options.bind->family() != server.address.family())
    return fail(
        Errc::kInvalidArgument,
        fmt::format("bind address {} is IPv{} but the STUN server {} is IPv{}: give an "
                    "address of the server's family",
                    options.bind->to_string_scoped(), static_cast<int>(options.bind->family()),
                    server.to_string(), static_cast<int>(server.address.family())));
  if (options.timeout.count() <= 0 || options.initial_rto.count() <= 0)
    return fail(Errc::kInvalidArgument, "the STUN timeout and RTO must be positive");

  FM_TRY(UniqueFd fd, net::open_udp_socket(server.address.family(), SOCK_NONBLOCK));
  if (options.bind)
    FM_TRY_VOID(net::bind_to(fd.get(), {*options.bind, 0}, "cannot bind the STUN socket to"));

  StunTxid txid;
  if (::getrandom(txid.data(), txid.size(), 0) != static_cast<ssize_t>(txid.size()))
    return fail_errno("cannot draw a STUN transaction id (getrandom)");
  const std::string request = encode_binding_request(txid, options.software);
  sockaddr_storage to{};
  const socklen_t to_len = server.to_sockaddr(to);

  StunAnswer answer;
  answer.server = server;
  std::optional<Error> last_malformed;
  StunClock& clock = options.clock ? *options.clock : real_stun_clock();
  const auto start = clock.now();
  const auto deadline = start + options.timeout;
  auto next_send = start;
  auto rto = std::chrono::duration_cast<StunClock::TimePoint::duration>(options.initial_rto);
  std::array<std::byte, 2048> buf;

  for (;;) {
    auto now = clock.now();
    if (answer.requests < kStunMaxRequests && now >= next_send && now < deadline) {
      const ssize_t n = ::sendto(fd.get(), request.data(), request.size(), 0,
                                 reinterpret_cast<const sockaddr*>(&to), to_len);
      // A full send buffer (EAGAIN) or an interrupted call is a lost request: the next
      // retransmission covers it.
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        return fail_errno(
            fmt::format("cannot send a STUN binding request to {}", server.to_string()));
      ++answer.requests;
      next_send = now + rto;
      rto *= 2;
    }
    if (now >= deadline) break;
    const auto wake = answer.requests < kStunMaxRequests ? std::min(next_send, deadline) : deadline;
    const int rc = clock.wait_readable(fd.get(), wake);
    if (rc < 0 && errno != EINTR) return fail_errno("poll on the STUN socket");
    if (rc <= 0) continue;

    for (;;) {  // every queued datagram
      sockaddr_storage from_ss{};
      socklen_t from_len = sizeof from_ss;
      const ssize_t n = ::recvfrom(fd.get(), buf.data(), buf.size(), MSG_TRUNC,
                                   reinterpret_cast<sockaddr*>(&from_ss), &from_len);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        return fail_errno(
            fmt::format("cannot receive the STUN answer from {}", server.to_string()));
      }
      const Endpoint from = Endpoint::from_sockaddr(from_ss);
      if (from.address != server.address || from.port != server.port) {
        ++answer.ignored_foreign;
        continue;
      }
      const auto size = static_cast<std::size_t>(n);
      if (size > buf.size()) {  // no STUN response of ours is that large
        ++answer.ignored_malformed;
        last_malformed =
            Error(make_error_code(Errc::kMalformed), fmt::format("a datagram of {} bytes", size));
        continue;
      }
      const std::span<const std::byte> msg(buf.data(), size);
      // Bytes 4..19 are the cookie and the transaction id: anything else is not ours.
      if (size < kStunHeaderSize || !std::equal(txid.begin(), txid.end(), msg.begin() + 8) ||
          Reader(msg).u32(4) != kStunMagicCookie) {
        ++answer.ignored_txid;
        continue;
      }
      auto mapped = parse_binding_response(msg, txid);
      if (mapped) {
        answer.mapped = *mapped;
        answer.local = local_endpoint(fd.get(), server);
        if (options.bind) answer.local.address = *options.bind;
        answer.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(clock.now() - start);
        return answer;
      }
      if (mapped.error().code() == make_error_code(Errc::kMalformed)) {
        // RFC 5389 §7.3: a malformed answer is discarded; a good one may still come.
        ++answer.ignored_malformed;
        last_malformed = std::move(mapped).error();
        continue;
      }
      return std::unexpected(std::move(mapped).error().with_context(
          fmt::format("STUN server {}", server.to_string())));
    }
  }

  const Endpoint local = local_endpoint(fd.get(), server);
  return std::unexpected(
      Error(std::make_error_code(std::errc::timed_out),
            fmt::format("no answer from STUN server {} within {} ({} binding request{} sent from "
                        "{}){}: check that the server runs and that UDP to port {} is not filtered",
                        server.to_string(), seconds_text(options.timeout), answer.requests,
                        answer.requests == 1 ? "" : "s", local.to_string(),
                        ignored_text(answer, last_malformed), server.port)));
}

Result<Endpoint> stun_discover(const Endpoint& server, const StunOptions& options) {
  FM_TRY(auto answer, stun_query(server, options));
  return answer.mapped;
}

Result<Endpoint> resolve_stun_server(std::string_view text) {
  auto e = net::resolve_endpoint(text, kStunPort);
  if (!e) return std::unexpected(std::move(e).error().with_context("STUN server"));
  return e;
}

}  // namespace flowmark::netclient
