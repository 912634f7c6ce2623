#include "flowmark/netclient/stun.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "flowmark/core/fd.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::netclient {
namespace {

using namespace std::chrono_literals;

// ---- building messages -------------------------------------------------------------------

std::vector<std::byte> bytes_of(std::string_view hex) {
  std::vector<std::byte> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<std::byte>(std::stoul(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::span<const std::byte> span_of(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

StunTxid txid_of(std::string_view hex) {
  StunTxid t{};
  auto b = bytes_of(hex);
  std::copy(b.begin(), b.end(), t.begin());
  return t;
}

// RFC 5769 §2.2 and §2.3: sample responses with SOFTWARE, XOR-MAPPED-ADDRESS,
// MESSAGE-INTEGRITY and FINGERPRINT.
const StunTxid kRfcTxid = txid_of("b7e7a701bc34d686fa87dfae");
const auto kRfcIpv4 = bytes_of(
    "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f72200020000800"
    "01a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96");
const auto kRfcIpv6 = bytes_of(
    "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f72200020001400"
    "02a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3"
    "ed4180280004c8fb0b4c");

const StunTxid kTxid = txid_of("000102030405060708090a0b");

void put16(std::string& s, unsigned v) {
  s.push_back(static_cast<char>(v >> 8 & 0xff));
  s.push_back(static_cast<char>(v & 0xff));
}

std::string attr(unsigned type, std::string_view value) {
  std::string a;
  put16(a, type);
  put16(a, static_cast<unsigned>(value.size()));
  a.append(value);
  a.append((4 - value.size() % 4) % 4, '\0');
  return a;
}

std::string message(unsigned type, const StunTxid& txid, const std::string& attrs,
                    std::uint32_t cookie = kStunMagicCookie) {
  std::string m;
  put16(m, type);
  put16(m, static_cast<unsigned>(attrs.size()));
  put16(m, cookie >> 16);
  put16(m, cookie & 0xffff);
  for (auto b : txid) m.push_back(static_cast<char>(b));
  return m + attrs;
}

// The value of MAPPED-ADDRESS (xored = false) or XOR-MAPPED-ADDRESS for `e`.
std::string address_value(const Endpoint& e, const StunTxid& txid, bool xored) {
  std::string v;
  v.push_back('\0');
  v.push_back(e.address.is_v4() ? '\x01' : '\x02');
  put16(v, e.port ^ (xored ? kStunMagicCookie >> 16 : 0));
  std::uint8_t key[16];
  for (int i = 0; i < 4; ++i) key[i] = static_cast<std::uint8_t>(kStunMagicCookie >> (24 - 8 * i));
  for (int i = 0; i < 12; ++i) key[4 + i] = std::to_integer<std::uint8_t>(txid[i]);
  for (std::size_t i = 0; i < e.address.size(); ++i)
    v.push_back(static_cast<char>(e.address.bytes()[i] ^ (xored ? key[i] : 0)));
  return v;
}

std::string error_value(unsigned code, std::string_view reason) {
  std::string v(2, '\0');
  v.push_back(static_cast<char>(code / 100));
  v.push_back(static_cast<char>(code % 100));
  return v + std::string(reason);
}

// CRC-32 bit by bit, independently of the table in stun.cpp.
std::uint32_t bitwise_crc32(std::string_view s) {
  std::uint32_t c = 0xffffffff;
  for (unsigned char ch : s) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320 & (0u - (c & 1)));
  }
  return ~c;
}

Endpoint ep(std::string_view text) { return Endpoint::parse(text).value(); }

::testing::AssertionResult fails_with(const Result<Endpoint>& r, Errc code,
                                      std::string_view needle) {
  if (r) return ::testing::AssertionFailure() << "accepted: " << r->to_string();
  if (r.error().code() != make_error_code(code))
    return ::testing::AssertionFailure() << "wrong code for: " << r.error().message();
  if (r.error().message().find(needle) == std::string::npos)
    return ::testing::AssertionFailure()
           << "'" << r.error().message() << "' does not say '" << needle << "'";
  return ::testing::AssertionSuccess();
}

// ---- codec ------------------------------------------------------------------------------

TEST(StunCodec, EncodesBindingRequest) {
  const std::string bare = encode_binding_request(kTxid);
  ASSERT_EQ(bare.size(), 20u);
  EXPECT_EQ(bare, message(kStunBindingRequest, kTxid, ""));

  const std::string sw = encode_binding_request(kTxid, "flowmark 1");  // 10 bytes, padded
  ASSERT_EQ(sw.size(), 20u + 4u + 12u);
  EXPECT_EQ(sw, message(kStunBindingRequest, kTxid, attr(kStunAttrSoftware, "flowmark 1")));
  EXPECT_EQ(sw[3], 16);  // header length counts the padded attribute

  EXPECT_EQ(encode_binding_request(kTxid, std::string(500, 'x')).size(), 20u + 4u + 128u);
}

TEST(StunCodec, Rfc5769Ipv4Response) {
  auto r = parse_binding_response(kRfcIpv4, kRfcTxid);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->to_string(), "192.0.2.1:32853");
}

TEST(StunCodec, Rfc5769Ipv6ResponseXorsWithCookieAndTxid) {
  auto r = parse_binding_response(kRfcIpv6, kRfcTxid);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(*r, ep("[2001:db8:1234:5678:11:2233:4455:6677]:32853"));
}

TEST(StunCodec, FingerprintIsChecked) {
  auto bad = kRfcIpv4;
  bad[60] ^= std::byte{1};  // inside MESSAGE-INTEGRITY, which we cannot check
  EXPECT_TRUE(fails_with(parse_binding_response(bad, kRfcTxid), Errc::kMalformed,
                         "FINGERPRINT at byte 72"));
  // Nothing may follow FINGERPRINT (here a correct one, for the length with what follows).
  const auto xm = attr(kStunAttrXorMappedAddress, address_value(ep("192.0.2.1:1"), kTxid, true));
  const auto tail = attr(0x8023, "xxxx");
  std::string after =
      message(kStunBindingSuccess, kTxid, xm + attr(kStunAttrFingerprint, "....") + tail);
  const std::uint32_t fp = bitwise_crc32(after.substr(0, 32)) ^ 0x5354554e;
  for (int i = 0; i < 4; ++i) after[36 + i] = static_cast<char>(fp >> (24 - 8 * i));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(after), kTxid), Errc::kMalformed,
                         "attribute 0x8023 at byte 40 follows FINGERPRINT"));
  after.resize(40);  // without the tail the length no longer matches: recompute both
  after[3] = 20;
  const std::uint32_t fp2 = bitwise_crc32(after.substr(0, 32)) ^ 0x5354554e;
  for (int i = 0; i < 4; ++i) after[36 + i] = static_cast<char>(fp2 >> (24 - 8 * i));
  auto ok = parse_binding_response(span_of(after), kTxid);
  ASSERT_TRUE(ok.has_value()) << ok.error().message();
  EXPECT_EQ(*ok, ep("192.0.2.1:1"));
}

TEST(StunCodec, XorMappedIpv4AndIpv6) {
  for (auto text : {"203.0.113.9:4000", "[2001:db8::77]:65535", "[::ffff:1.2.3.4]:1"}) {
    const Endpoint e = ep(text);
    auto m = message(kStunBindingSuccess, kTxid,
                     attr(kStunAttrXorMappedAddress, address_value(e, kTxid, true)));
    auto r = parse_binding_response(span_of(m), kTxid);
    ASSERT_TRUE(r.has_value()) << text << ": " << r.error().message();
    EXPECT_EQ(*r, e);
  }
}

TEST(StunCodec, MappedAddressIsTheFallbackForOldServers) {
  const Endpoint old = ep("198.51.100.1:5000"), xored = ep("198.51.100.2:6000");
  // RFC 3489 servers: MAPPED-ADDRESS, SOURCE-ADDRESS and CHANGED-ADDRESS (required range).
  auto only = message(kStunBindingSuccess, kTxid,
                      attr(kStunAttrMappedAddress, address_value(old, kTxid, false)) +
                          attr(0x0004, address_value(ep("192.0.2.9:3478"), kTxid, false)) +
                          attr(0x0005, address_value(ep("192.0.2.10:3479"), kTxid, false)));
  auto r = parse_binding_response(span_of(only), kTxid);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(*r, old);
  // Both: XOR-MAPPED-ADDRESS wins wherever it is.
  for (bool xor_first : {true, false}) {
    const auto a = attr(kStunAttrMappedAddress, address_value(old, kTxid, false));
    const auto x = attr(kStunAttrXorMappedAddress, address_value(xored, kTxid, true));
    auto both = message(kStunBindingSuccess, kTxid, xor_first ? x + a : a + x);
    auto b = parse_binding_response(span_of(both), kTxid);
    ASSERT_TRUE(b.has_value()) << b.error().message();
    EXPECT_EQ(*b, xored);
  }
}

TEST(StunCodec, SkipsUnknownOptionalAttributes) {
  const Endpoint e = ep("198.51.100.3:7");
  auto m =
      message(kStunBindingSuccess, kTxid,
              attr(0x802b, address_value(ep("192.0.2.1:3478"), kTxid, false)) +  // RESPONSE-ORIGIN
                  attr(0xc057, "\x01") + attr(kStunAttrSoftware, "coturn") +
                  attr(kStunAttrXorMappedAddress, address_value(e, kTxid, true)));
  auto r = parse_binding_response(span_of(m), kTxid);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(*r, e);
}

TEST(StunCodec, UnknownRequiredAttributeFailsTheTransaction) {
  auto m =
      message(kStunBindingSuccess, kTxid,
              attr(kStunAttrXorMappedAddress, address_value(ep("198.51.100.3:7"), kTxid, true)) +
                  attr(0x0030, "abcd"));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(m), kTxid), Errc::kUnsupported,
                         "attribute 0x0030 at byte 32"));
}

TEST(StunCodec, ErrorResponseReportsCodeAndReason) {
  auto m = message(kStunBindingError, kTxid,
                   attr(kStunAttrErrorCode, error_value(420, "Unknown Attribute")));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(m), kTxid), Errc::kRefused,
                         "error 420 (Unknown Attribute)"));
  // Control characters in the reason are not passed on to a terminal.
  auto ctl =
      message(kStunBindingError, kTxid, attr(kStunAttrErrorCode, error_value(500, "a\x1b[2Jb")));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(ctl), kTxid), Errc::kRefused,
                         "error 500 (a?[2Jb)"));
  auto none = message(kStunBindingError, kTxid, "");
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(none), kTxid), Errc::kRefused,
                         "without ERROR-CODE"));
}

TEST(StunCodec, RejectsAnotherTransaction) {
  auto m = message(kStunBindingSuccess, txid_of("ffffffffffffffffffffffff"),
                   attr(kStunAttrXorMappedAddress, address_value(ep("192.0.2.1:1"), kTxid, true)));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(m), kTxid), Errc::kMalformed,
                         "transaction id at byte 8"));
}

TEST(StunCodec, RejectsBadHeaders) {
  const auto xm = attr(kStunAttrXorMappedAddress, address_value(ep("192.0.2.1:1"), kTxid, true));
  auto cookie = message(kStunBindingSuccess, kTxid, xm, 0x2112a443);
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(cookie), kTxid), Errc::kMalformed,
                         "magic cookie 0x2112a443 at byte 4"));
  auto top = message(0x4101, kTxid, xm);
  EXPECT_TRUE(
      fails_with(parse_binding_response(span_of(top), kTxid), Errc::kMalformed, "two top bits"));
  auto request = message(kStunBindingRequest, kTxid, "");
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(request), kTxid), Errc::kMalformed,
                         "0x0001 at byte 0 is not a binding response"));
  auto shorter = message(kStunBindingSuccess, kTxid, xm).substr(0, 19);
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(shorter), kTxid), Errc::kMalformed,
                         "19 bytes is shorter than the 20-byte header"));
}

TEST(StunCodec, RejectsLengthMismatch) {
  const auto xm = attr(kStunAttrXorMappedAddress, address_value(ep("192.0.2.1:1"), kTxid, true));
  auto longer = message(kStunBindingSuccess, kTxid, xm) + std::string(4, '\0');
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(longer), kTxid), Errc::kMalformed,
                         "message length 12 at byte 2 does not match the 16 bytes"));
  auto odd = message(kStunBindingSuccess, kTxid, xm);
  odd[3] = 13;
  odd += '\0';
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(odd), kTxid), Errc::kMalformed,
                         "message length 13 at byte 2 is not a multiple of 4"));
}

TEST(StunCodec, RejectsTruncatedAttribute) {
  // SOFTWARE claims 40 bytes; the message (consistent header) holds 8 after it.
  std::string a;
  put16(a, kStunAttrSoftware);
  put16(a, 40);
  a += "coturn..";
  auto m = message(kStunBindingSuccess, kTxid, a);
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(m), kTxid), Errc::kMalformed,
                         "attribute 0x8022 at byte 20 is 40 bytes long but only 8 bytes remain"));
  // Padding counts: 5 bytes of value need 8.
  std::string p;
  put16(p, 0x8023);
  put16(p, 5);
  p += "abcd";
  auto pm = message(kStunBindingSuccess, kTxid, p);
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(pm), kTxid), Errc::kMalformed,
                         "at byte 20 is 5 bytes long but only 4 bytes remain"));
}

TEST(StunCodec, RejectsBadAddresses) {
  auto fam = address_value(ep("192.0.2.1:1"), kTxid, true);
  fam[1] = '\x03';
  auto m = message(kStunBindingSuccess, kTxid, attr(kStunAttrXorMappedAddress, fam));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(m), kTxid), Errc::kMalformed,
                         "unknown address family 0x03 at byte 25"));
  auto len = address_value(ep("192.0.2.1:1"), kTxid, true);
  len[1] = '\x02';  // IPv6 with 4 address bytes
  auto l = message(kStunBindingSuccess, kTxid, attr(kStunAttrXorMappedAddress, len));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(l), kTxid), Errc::kMalformed,
                         "an IPv6 address takes 20 bytes, not 8"));
  auto none = message(kStunBindingSuccess, kTxid, attr(kStunAttrSoftware, "x"));
  EXPECT_TRUE(fails_with(parse_binding_response(span_of(none), kTxid), Errc::kMalformed,
                         "without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS"));
}

TEST(StunCodec, EveryPrefixOfAResponseIsRejectedCleanly) {
  for (std::size_t n = 0; n < kRfcIpv6.size(); ++n) {
    auto r = parse_binding_response(std::span(kRfcIpv6).first(n), kRfcTxid);
    EXPECT_FALSE(r.has_value()) << n;
  }
}

// ---- one transaction against a responder on loopback ------------------------------------

// A STUN server in a thread: a UDP socket on loopback port 0; `answer` decides what to
// send back for each request (nothing: an empty list). Stops when destroyed.
class Responder {
 public:
  using Reply = std::function<std::vector<std::string>(int n, const std::string& request,
                                                       const Endpoint& from)>;

  explicit Responder(Reply reply, const char* address = "127.0.0.1") : reply_(std::move(reply)) {
    auto fd = net::bind_udp({*IpAddress::parse(address), 0});
    auto local = fd ? net::local_endpoint(fd->get()) : Result<Endpoint>(Endpoint{});
    ok_ = fd && local;
    if (ok_) {
      fd_ = std::move(*fd);
      endpoint_ = *local;
    }
    if (ok_) thread_ = std::thread([this] { run(); });
  }
  ~Responder() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  bool ok() const { return ok_; }
  const Endpoint& endpoint() const { return endpoint_; }
  int fd() const { return fd_.get(); }
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void run() {
    char buf[1500];
    int n = 0;
    while (!stop_) {
      pollfd p{.fd = fd_.get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 20) <= 0) continue;  // a stop check, not a test delay
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      const ssize_t got =
          ::recvfrom(fd_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&ss), &len);
      if (got < 0) continue;
      const std::string request(buf, static_cast<std::size_t>(got));
      {
        std::lock_guard lock(mu_);
        requests_.push_back(request);
      }
      for (const auto& out : reply_(n++, request, Endpoint::from_sockaddr(ss)))
        ::sendto(fd_.get(), out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
    }
  }

  Reply reply_;
  UniqueFd fd_;
  bool ok_ = false;
  Endpoint endpoint_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

StunTxid txid_in(const std::string& request) {
  StunTxid t{};
  std::memcpy(t.data(), request.data() + 8, t.size());
  return t;
}

// The answer a server gives: the request's source in XOR-MAPPED-ADDRESS.
std::string success_for(const std::string& request, const Endpoint& from) {
  const auto t = txid_in(request);
  return message(kStunBindingSuccess, t,
                 attr(kStunAttrSoftware, "test responder") +
                     attr(kStunAttrXorMappedAddress, address_value(from, t, true)));
}

StunOptions fast(std::chrono::milliseconds timeout = 2000ms) {
  StunOptions o;
  o.timeout = timeout;
  o.initial_rto = 50ms;
  return o;
}

TEST(StunDiscover, AnswersWithTheSourceTheServerSaw) {
  Responder server([](int, const std::string& req, const Endpoint& from) {
    return std::vector{success_for(req, from)};
  });
  ASSERT_TRUE(server.ok());
  auto a = stun_query(server.endpoint(), fast());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->mapped.address.to_string(), "127.0.0.1");
  EXPECT_NE(a->mapped.port, 0);
  EXPECT_EQ(a->local, a->mapped);  // no NAT on loopback
  EXPECT_FALSE(a->behind_nat());
  EXPECT_EQ(a->server, server.endpoint());
  EXPECT_EQ(a->requests, 1u);
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 1u);
  // What we sent is a binding request with a SOFTWARE attribute.
  EXPECT_EQ(reqs[0], encode_binding_request(txid_in(reqs[0]), "flowmark"));

  auto d = stun_discover(server.endpoint(), fast());
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->address.to_string(), "127.0.0.1");
  EXPECT_NE(txid_in(server.requests().at(1)), txid_in(reqs[0]));  // a fresh random id
}

TEST(StunDiscover, Ipv6Loopback) {
  Responder server([](int, const std::string& req,
                      const Endpoint& from) { return std::vector{success_for(req, from)}; },
                   "::1");
  if (!server.ok()) GTEST_SKIP() << "no IPv6 loopback here";
  StunOptions o = fast();
  o.bind = *IpAddress::parse("::1");
  auto a = stun_query(server.endpoint(), o);
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->mapped.address.to_string(), "::1");
  EXPECT_EQ(a->mapped, a->local);
}

TEST(StunDiscover, RetransmitsWhenTheFirstRequestIsLost) {
  Responder server([](int n, const std::string& req, const Endpoint& from) {
    if (n == 0) return std::vector<std::string>{};  // dropped
    return std::vector{success_for(req, from)};
  });
  ASSERT_TRUE(server.ok());
  auto a = stun_query(server.endpoint(), fast());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->requests, 2u);
  EXPECT_GE(a->elapsed, 50ms);  // the first RTO
  const auto reqs = server.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0], reqs[1]);  // a retransmission is the same transaction
}

TEST(StunDiscover, IgnoresAndCountsWhatIsNotTheAnswer) {
  UniqueFd stranger(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(stranger);
  const int stranger_fd = stranger.get();
  Responder server([stranger_fd](int, const std::string& req, const Endpoint& from) {
    const std::string good = success_for(req, from);
    // From another address: the right answer, by someone else.
    sockaddr_storage ss{};
    const socklen_t len = from.to_sockaddr(ss);
    ::sendto(stranger_fd, good.data(), good.size(), 0, reinterpret_cast<sockaddr*>(&ss), len);
    std::string other = good;
    other[19] ^= 1;  // another transaction
    std::string broken = good.substr(0, good.size() - 4);
    broken[3] = static_cast<char>(broken[3] - 4);  // consistent length, truncated address
    return std::vector{other, broken, good};
  });
  ASSERT_TRUE(server.ok());
  auto a = stun_query(server.endpoint(), fast());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->requests, 1u);
  // The stranger's datagram may be read before or after the server's answer.
  EXPECT_LE(a->ignored_foreign, 1u);
  EXPECT_EQ(a->ignored_txid, 1u);
  EXPECT_EQ(a->ignored_malformed, 1u);
  EXPECT_EQ(a->mapped.address.to_string(), "127.0.0.1");
}

TEST(StunDiscover, ErrorResponseEndsTheTransaction) {
  Responder server([](int, const std::string& req, const Endpoint&) {
    return std::vector{message(kStunBindingError, txid_in(req),
                               attr(kStunAttrErrorCode, error_value(400, "Bad Request")))};
  });
  ASSERT_TRUE(server.ok());
  auto a = stun_discover(server.endpoint(), fast());
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), make_error_code(Errc::kRefused));
  EXPECT_EQ(a.error().message(), "STUN server " + server.endpoint().to_string() +
                                     ": binding error response: error 400 (Bad Request)");
  EXPECT_EQ(server.requests().size(), 1u);
}

TEST(StunDiscover, TimesOutWhenNobodyAnswers) {
  // A bound socket nobody reads: requests queue up in it.
  auto silent = net::bind_udp({*IpAddress::parse("127.0.0.1"), 0}, SOCK_NONBLOCK);
  ASSERT_TRUE(silent.has_value()) << silent.error().message();
  auto bound = net::local_endpoint(silent->get());
  ASSERT_TRUE(bound.has_value()) << bound.error().message();
  const Endpoint where = *bound;

  // RTO 50 ms: requests at 0, 50 and 150 ms; the next would be at 350, after the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  auto a = stun_query(where, fast(300ms));
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), std::make_error_code(std::errc::timed_out));
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 2000ms);
  unsigned queued = 0;
  char buf[512];
  while (::recv(silent->get(), buf, sizeof buf, 0) > 0) ++queued;
  EXPECT_GE(queued, 2u);
  EXPECT_LE(queued, 3u);
  const std::string& msg = a.error().message();
  EXPECT_NE(msg.find("no answer from STUN server " + where.to_string() + " within 0.3 s (" +
                     std::to_string(queued) + " binding requests sent from 127.0.0.1:"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("UDP to port " + std::to_string(where.port)), std::string::npos) << msg;
}

TEST(StunDiscover, RejectsBadArguments) {
  StunOptions o = fast();
  o.bind = *IpAddress::parse("::1");
  auto a = stun_discover(ep("127.0.0.1:3478"), o);
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), make_error_code(Errc::kInvalidArgument));
  EXPECT_NE(a.error().message().find("bind address ::1 is IPv6 but the STUN server"),
            std::string::npos);
  auto port0 = stun_discover(Endpoint{*IpAddress::parse("127.0.0.1"), 0}, fast());
  ASSERT_FALSE(port0.has_value());
  EXPECT_NE(port0.error().message().find("port 0"), std::string::npos);
  auto group = stun_discover(ep("239.1.1.1:3478"), fast());
  ASSERT_FALSE(group.has_value());
  EXPECT_NE(group.error().message().find("not a unicast address"), std::string::npos);
}

TEST(StunDiscover, ResolvesServerText) {
  EXPECT_EQ(resolve_stun_server("192.0.2.1").value(), ep("192.0.2.1:3478"));
  EXPECT_EQ(resolve_stun_server("[2001:db8::1]:19302").value(), ep("[2001:db8::1]:19302"));
  EXPECT_EQ(resolve_stun_server("localhost:5000").value().port, 5000);
  auto bad = resolve_stun_server("192.0.2.1:99999");
  ASSERT_FALSE(bad.has_value());
  EXPECT_TRUE(bad.error().message().starts_with("STUN server: ")) << bad.error().message();
}

}  // namespace
}  // namespace flowmark::netclient
