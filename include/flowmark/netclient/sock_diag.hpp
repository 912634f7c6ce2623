// flowmark::netclient — the kernel's socket table through netlink sock_diag (NETLINK_SOCK_DIAG,
// inet_diag_req_v2): every TCP or UDP socket of one address family with its 4-tuple, state,
// owner, cookie and, on request, struct tcp_info (INET_DIAG_INFO) and the congestion
// algorithm (INET_DIAG_CONG). The `sockets` source polls it; the Prometheus backend looks up
// one live flow at a time.
//
//   FM_TRY(auto diag, SockDiag::open());
//   FM_TRY_VOID(diag.dump({.family = Family::kV4, .want_info = true},
//                         [&](const SocketInfo& s) { use(s.src, s.dst, s.tcp); }));
//   FM_TRY(auto one, diag.lookup(Protocol::kTcp, local, remote, /*want_info=*/true));
//
// One receive buffer, allocated when the socket opens, is reused by every call; a visited
// SocketInfo lives in that call's stack frame only (copy what you keep). Not thread-safe:
// one SockDiag per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "flowmark/core/address.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/scitags/enrichment.hpp"
#include "flowmark/scitags/flow_event.hpp"

struct nlmsghdr;  // <linux/netlink.h>

namespace flowmark::netclient {

// The kernel's TCP states (include/net/tcp_states.h), as inet_diag reports them. UDP
// sockets are kEstablished when connected, kClose otherwise.
enum class TcpState : std::uint8_t {
  kEstablished = 1,
  kSynSent,
  kSynRecv,
  kFinWait1,
  kFinWait2,
  kTimeWait,
  kClose,
  kCloseWait,
  kLastAck,
  kListen,
  kClosing,
  kNewSynRecv,
};
// "ESTABLISHED", "FIN_WAIT1", ... ("UNKNOWN" for anything else).
std::string_view to_string(TcpState s) noexcept;

// Bit masks for SockDiag::Query::states.
constexpr std::uint32_t state_bit(TcpState s) noexcept { return 1u << static_cast<unsigned>(s); }
inline constexpr std::uint32_t kAllStates = 0xfffu << 1;  // 1..12
// What a connection tracker needs: established and every state after it (no listeners,
// no half-open handshakes).
inline constexpr std::uint32_t kConnectedStates =
    state_bit(TcpState::kEstablished) | state_bit(TcpState::kFinWait1) |
    state_bit(TcpState::kFinWait2) | state_bit(TcpState::kTimeWait) | state_bit(TcpState::kClose) |
    state_bit(TcpState::kCloseWait) | state_bit(TcpState::kLastAck) | state_bit(TcpState::kClosing);

struct SocketInfo {
  Family family = Family::kV4;  // of the socket (an IPv6 socket may carry IPv4 traffic)
  scitags::Protocol protocol = scitags::Protocol::kTcp;
  TcpState state = TcpState::kClose;
  // Local and remote ends. IPv4-mapped IPv6 addresses (::ffff:a.b.c.d on a dual-stack
  // socket) are given as IPv4, so that classification sees the real destination.
  Endpoint src;
  Endpoint dst;
  std::uint32_t inode = 0;  // 0 for TIME_WAIT and request sockets
  std::uint32_t uid = 0;
  std::uint64_t cookie = 0;             // the kernel's socket cookie: unique while the host runs
  std::optional<scitags::TcpInfo> tcp;  // when asked for and the kernel sent it
  // INET_DIAG_CONG when asked for ("cubic", "bbr"); empty otherwise.
  std::array<char, 16> congestion_name{};

  std::string_view congestion() const noexcept { return {congestion_name.data()}; }
};

// Counted, never fatal: the dump goes on.
struct SockDiagStats {
  std::uint64_t malformed = 0;    // messages or attributes too short to parse
  std::uint64_t stale = 0;        // messages of an earlier, abandoned request
  std::uint64_t interrupted = 0;  // dumps the kernel flagged NLM_F_DUMP_INTR (tables changed)
};

class SockDiag {
 public:
  struct Query {
    Family family = Family::kV4;
    scitags::Protocol protocol = scitags::Protocol::kTcp;
    std::uint32_t states = kAllStates;
    bool want_info = false;        // INET_DIAG_INFO → SocketInfo::tcp (TCP only)
    bool want_congestion = false;  // INET_DIAG_CONG → SocketInfo::congestion()
  };
  using Visitor = std::function<void(const SocketInfo&)>;

  // Errors: EPROTONOSUPPORT when the kernel lacks sock_diag, EMFILE and the like; the
  // message says what to do.
  static Result<SockDiag> open();
  SockDiag(SockDiag&&) noexcept;
  SockDiag& operator=(SockDiag&&) noexcept;
  ~SockDiag();

  // Streams every matching socket to `visit` (no allocation per socket). Returns the
  // number visited. Errors: the request refused (EPERM, EINVAL... with the reason) or the
  // netlink socket failing; malformed messages are only counted in stats().
  Result<std::size_t> dump(const Query& query, const Visitor& visit);
  // The same, collected.
  Result<std::vector<SocketInfo>> dump(const Query& query);

  // One socket by its 4-tuple as seen from its own side (src = local end). std::nullopt
  // when no such socket exists. An IPv4 tuple also finds a dual-stack IPv6 socket carrying
  // it (IPv4-mapped). The Prometheus backend polls each live flow this way.
  // With `detail` (TCP, want_info): also the whole struct tcp_info and the congestion
  // algorithm there, when the socket is found.
  Result<std::optional<SocketInfo>> lookup(scitags::Protocol protocol, const Endpoint& src,
                                           const Endpoint& dst, bool want_info,
                                           scitags::TcpDetail* detail = nullptr);
  // Shorthand: only the tcp_info of one TCP socket.
  Result<std::optional<scitags::TcpInfo>> tcp_info(const Endpoint& src, const Endpoint& dst);
  // The whole struct tcp_info, state and congestion algorithm of one TCP socket (what
  // flowd-go's enrichment shapes report).
  Result<std::optional<scitags::TcpDetail>> tcp_detail(const Endpoint& src, const Endpoint& dst);

  const SockDiagStats& stats() const noexcept { return stats_; }
  int fd() const noexcept { return fd_.get(); }

 private:
  SockDiag(UniqueFd fd, std::unique_ptr<std::uint32_t[]> buffer);
  Result<void> send_request(const void* request, std::size_t len);
  Result<std::size_t> receive();
  // Reads the answer to the request numbered `seq`, datagram after datagram, and hands each of
  // its messages to `on_message` until that returns true (the answer is complete) or an
  // error. Messages of other requests are counted stale, interrupted dumps counted,
  // acknowledgements (NLMSG_ERROR 0) skipped; a truncated NLMSG_ERROR is an error.
  Result<void> read_answer(std::uint32_t seq,
                           const std::function<Result<bool>(const nlmsghdr&)>& on_message);

  UniqueFd fd_;
  std::unique_ptr<std::uint32_t[]> buffer_;  // kBufferBytes, 4-byte aligned for nlmsghdr
  std::uint32_t seq_ = 0;
  SockDiagStats stats_;
};

// Parses one SOCK_DIAG_BY_FAMILY message (netlink header included). False when it is
// shorter than it claims or than an inet_diag_msg, or its attributes are cut: SockDiag
// counts such messages in stats().malformed and goes on. Exposed for tests and fuzzing.
bool parse_sock_diag_message(std::span<const std::byte> message, scitags::Protocol protocol,
                             SocketInfo& out);

// Copies what the kernel sent of struct tcp_info (`len` bytes: older kernels send a
// shorter struct; missing fields read as 0). Also for a getsockopt(TCP_INFO) result.
scitags::TcpInfo tcp_info_from_bytes(const void* data, std::size_t len) noexcept;
// The same, every field (TcpDetail::congestion left empty).
scitags::TcpDetail tcp_detail_from_bytes(const void* data, std::size_t len) noexcept;

}  // namespace flowmark::netclient
