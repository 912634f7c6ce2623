#include "flowmark/netclient/sock_diag.hpp"

#include <fmt/format.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cstring>
#include <span>

#include <vector>
#include "flowmark/core/netlink_walk.hpp"

namespace flowmark::netclient {
namespace {

// The kernel caps one dump batch at 32 KiB (netlink_recvmsg); twice that is never short.
constexpr std::size_t kBufferBytes = 64 * 1024;
// A kernel that stops answering (it never should) must not hang the service's loop.
constexpr int kReceiveTimeoutSeconds = 5;

struct Request {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

int to_af(Family f) noexcept { return f == Family::kV4 ? AF_INET : AF_INET6; }
std::uint8_t to_ipproto(scitags::Protocol p) noexcept {
  return p == scitags::Protocol::kTcp ? IPPROTO_TCP : IPPROTO_UDP;
}

// An address as inet_diag carries it: 4 or 16 network-order bytes in a __be32[4].
IpAddress address_from(std::uint8_t af, const __be32 (&words)[4]) noexcept {
  if (af == AF_INET) {
    in_addr a{};
    std::memcpy(&a, &words[0], sizeof a);
    return IpAddress::v4(a);
  }
  in6_addr a{};
  std::memcpy(&a, words, sizeof a);
  if (IN6_IS_ADDR_V4MAPPED(&a)) {
    in_addr v4{};
    std::memcpy(&v4, &a.s6_addr[12], sizeof v4);
    return IpAddress::v4(v4);
  }
  return IpAddress::v6(a);
}

void address_to(const IpAddress& a, __be32 (&words)[4]) noexcept {
  std::memset(words, 0, sizeof words);
  std::memcpy(words, a.bytes(), a.size());
}

std::string_view netlink_hint(int err) noexcept {
  switch (err) {
    case EPERM:
    case EACCES: return " — run as root or grant CAP_NET_ADMIN, or check the seccomp/LSM policy";
    case EPROTONOSUPPORT:
    case EAFNOSUPPORT: return " — this kernel lacks NETLINK_SOCK_DIAG (CONFIG_INET_DIAG)";
    case ENOENT:
      return " — the kernel module for this protocol (tcp_diag / udp_diag) is not loaded";
    default: return "";
  }
}

// `h` has passed NLMSG_OK: nlmsg_len bytes are readable.
bool parse_message(const nlmsghdr* h, scitags::Protocol protocol, SocketInfo& out,
                   scitags::TcpDetail* detail = nullptr) {
  if (h->nlmsg_len < NLMSG_LENGTH(sizeof(inet_diag_msg))) return false;
  const auto* msg = static_cast<const inet_diag_msg*>(NLMSG_DATA(h));
  if (msg->idiag_family != AF_INET && msg->idiag_family != AF_INET6) return false;
  out.family = msg->idiag_family == AF_INET ? Family::kV4 : Family::kV6;
  out.protocol = protocol;
  out.state = static_cast<TcpState>(msg->idiag_state);
  out.src = {address_from(msg->idiag_family, msg->id.idiag_src), ntohs(msg->id.idiag_sport)};
  out.dst = {address_from(msg->idiag_family, msg->id.idiag_dst), ntohs(msg->id.idiag_dport)};
  // Link-local addresses need their interface to mean anything.
  for (auto* a : {&out.src.address, &out.dst.address}) {
    if (a->is_v6() && a->bytes()[0] == 0xfe && (a->bytes()[1] & 0xc0) == 0x80) {
      a->set_scope_id(msg->id.idiag_if);
    }
  }
  out.inode = msg->idiag_inode;
  out.uid = msg->idiag_uid;
  out.cookie = static_cast<std::uint64_t>(msg->id.idiag_cookie[0]) |
               static_cast<std::uint64_t>(msg->id.idiag_cookie[1]) << 32;
  out.tcp.reset();
  out.congestion_name[0] = '\0';

  const std::size_t header = NLMSG_LENGTH(NLMSG_ALIGN(sizeof(inet_diag_msg)));
  if (h->nlmsg_len <= header) return true;
  auto left = static_cast<int>(h->nlmsg_len - header);
  const auto* rta = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(h) + header);
  for (; RTA_OK(rta, left); rta = RTA_NEXT(rta, left)) {
    const auto len = static_cast<std::size_t>(RTA_PAYLOAD(rta));
    switch (rta->rta_type) {
      case INET_DIAG_INFO:
        if (protocol == scitags::Protocol::kTcp) out.tcp = tcp_info_from_bytes(RTA_DATA(rta), len);
        if (protocol == scitags::Protocol::kTcp && detail) {
          auto congestion = detail->congestion;  // INET_DIAG_CONG may come first
          *detail = tcp_detail_from_bytes(RTA_DATA(rta), len);
          detail->congestion = congestion;
        }
        break;
      case INET_DIAG_CONG: {
        const auto n = std::min(len, out.congestion_name.size() - 1);
        std::memcpy(out.congestion_name.data(), RTA_DATA(rta), n);
        out.congestion_name[n] = '\0';
        if (detail) detail->congestion = out.congestion_name;
        break;
      }
      default: break;
    }
  }
  // An attribute header left over that RTA_OK refused claims more than the message holds
  // (or less than itself): the message was cut. Fewer bytes than a header are padding.
  return left < static_cast<int>(sizeof(rtattr));
}

}  // namespace

bool parse_sock_diag_message(std::span<const std::byte> message, scitags::Protocol protocol,
                             SocketInfo& out) {
  if (message.size() < sizeof(nlmsghdr)) return false;
  // Copied to aligned storage: the caller's bytes need not be aligned.
  std::vector<std::uint32_t> aligned(message.size() / 4 + 1);
  std::memcpy(aligned.data(), message.data(), std::min(message.size(), aligned.size() * 4));
  const auto* h = reinterpret_cast<const nlmsghdr*>(aligned.data());
  if (h->nlmsg_len < sizeof(nlmsghdr) || h->nlmsg_len > message.size()) return false;
  return parse_message(h, protocol, out);
}

std::string_view to_string(TcpState s) noexcept {
  switch (s) {
    case TcpState::kEstablished: return "ESTABLISHED";
    case TcpState::kSynSent: return "SYN_SENT";
    case TcpState::kSynRecv: return "SYN_RECV";
    case TcpState::kFinWait1: return "FIN_WAIT1";
    case TcpState::kFinWait2: return "FIN_WAIT2";
    case TcpState::kTimeWait: return "TIME_WAIT";
    case TcpState::kClose: return "CLOSE";
    case TcpState::kCloseWait: return "CLOSE_WAIT";
    case TcpState::kLastAck: return "LAST_ACK";
    case TcpState::kListen: return "LISTEN";
    case TcpState::kClosing: return "CLOSING";
    case TcpState::kNewSynRecv: return "NEW_SYN_RECV";
  }
  return "UNKNOWN";
}

scitags::TcpInfo tcp_info_from_bytes(const void* data, std::size_t len) noexcept {
  // Older kernels send a shorter struct tcp_info (fields are only ever appended): copy what
  // came and leave the rest zero. A newer kernel's longer struct is cut to ours.
  tcp_info ti{};
  std::memcpy(&ti, data, std::min(len, sizeof ti));
  scitags::TcpInfo out;
  out.rtt_us = ti.tcpi_rtt;
  out.rtt_var_us = ti.tcpi_rttvar;
  out.cwnd = ti.tcpi_snd_cwnd;
  out.ssthresh = ti.tcpi_snd_ssthresh;
  out.mss = ti.tcpi_snd_mss;
  out.pmtu = ti.tcpi_pmtu;
  out.bytes_sent = ti.tcpi_bytes_sent;
  out.bytes_acked = ti.tcpi_bytes_acked;
  out.bytes_received = ti.tcpi_bytes_received;
  out.segs_out = ti.tcpi_segs_out;
  out.segs_in = ti.tcpi_segs_in;
  out.retrans = ti.tcpi_total_retrans;
  out.pacing_rate = ti.tcpi_pacing_rate;
  out.delivery_rate = ti.tcpi_delivery_rate;
  return out;
}

scitags::TcpDetail tcp_detail_from_bytes(const void* data, std::size_t len) noexcept {
  tcp_info ti{};
  std::memcpy(&ti, data, std::min(len, sizeof ti));
  scitags::TcpDetail d;
  d.state = ti.tcpi_state;
  d.ca_state = ti.tcpi_ca_state;
  d.retransmits = ti.tcpi_retransmits;
  d.probes = ti.tcpi_probes;
  d.backoff = ti.tcpi_backoff;
  d.options = ti.tcpi_options;
  d.snd_wscale = ti.tcpi_snd_wscale;
  d.rcv_wscale = ti.tcpi_rcv_wscale;
  d.delivery_rate_app_limited = ti.tcpi_delivery_rate_app_limited;
  d.rto = ti.tcpi_rto;
  d.ato = ti.tcpi_ato;
  d.snd_mss = ti.tcpi_snd_mss;
  d.rcv_mss = ti.tcpi_rcv_mss;
  d.unacked = ti.tcpi_unacked;
  d.sacked = ti.tcpi_sacked;
  d.lost = ti.tcpi_lost;
  d.retrans = ti.tcpi_retrans;
  d.fackets = ti.tcpi_fackets;
  d.last_data_sent = ti.tcpi_last_data_sent;
  d.last_ack_sent = ti.tcpi_last_ack_sent;
  d.last_data_recv = ti.tcpi_last_data_recv;
  d.last_ack_recv = ti.tcpi_last_ack_recv;
  d.pmtu = ti.tcpi_pmtu;
  d.rcv_ssthresh = ti.tcpi_rcv_ssthresh;
  d.rtt = ti.tcpi_rtt;
  d.rttvar = ti.tcpi_rttvar;
  d.snd_ssthresh = ti.tcpi_snd_ssthresh;
  d.snd_cwnd = ti.tcpi_snd_cwnd;
  d.advmss = ti.tcpi_advmss;
  d.reordering = ti.tcpi_reordering;
  d.rcv_rtt = ti.tcpi_rcv_rtt;
  d.rcv_space = ti.tcpi_rcv_space;
  d.total_retrans = ti.tcpi_total_retrans;
  d.pacing_rate = ti.tcpi_pacing_rate;
  d.max_pacing_rate = ti.tcpi_max_pacing_rate;
  d.bytes_acked = ti.tcpi_bytes_acked;
  d.bytes_received = ti.tcpi_bytes_received;
  d.segs_out = ti.tcpi_segs_out;
  d.segs_in = ti.tcpi_segs_in;
  d.notsent_bytes = ti.tcpi_notsent_bytes;
  d.min_rtt = ti.tcpi_min_rtt;
  d.data_segs_in = ti.tcpi_data_segs_in;
  d.data_segs_out = ti.tcpi_data_segs_out;
  d.delivery_rate = ti.tcpi_delivery_rate;
  d.busy_time = ti.tcpi_busy_time;
  d.rwnd_limited = ti.tcpi_rwnd_limited;
  d.sndbuf_limited = ti.tcpi_sndbuf_limited;
  d.bytes_sent = ti.tcpi_bytes_sent;
  return d;
}

SockDiag::SockDiag(UniqueFd fd, std::unique_ptr<std::uint32_t[]> buffer)
    : fd_(std::move(fd)), buffer_(std::move(buffer)) {}
SockDiag::SockDiag(SockDiag&&) noexcept = default;
SockDiag& SockDiag::operator=(SockDiag&&) noexcept = default;
SockDiag::~SockDiag() = default;

Result<SockDiag> SockDiag::open() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!fd) {
    const int err = errno;
    return fail_errno(fmt::format("cannot open a netlink sock_diag socket{}", netlink_hint(err)),
                      err);
  }
  timeval tv{.tv_sec = kReceiveTimeoutSeconds, .tv_usec = 0};
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  // Errors come back as NLMSG_ERROR with the extended-ack text when the kernel has one;
  // being told the offending attribute is not worth parsing here, so no NETLINK_EXT_ACK.
  auto buffer = std::make_unique_for_overwrite<std::uint32_t[]>(kBufferBytes / 4);
  return SockDiag(std::move(fd), std::move(buffer));
}

Result<void> SockDiag::send_request(const void* request, std::size_t len) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  for (;;) {
    const auto n =
        ::sendto(fd_.get(), request, len, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel);
    if (n >= 0) return {};
    if (errno == EINTR) continue;
    const int err = errno;
    return fail_errno(fmt::format("cannot send a sock_diag request{}", netlink_hint(err)), err);
  }
}

Result<std::size_t> SockDiag::receive() {
  for (;;) {
    const auto n = ::recv(fd_.get(), buffer_.get(), kBufferBytes, 0);
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    const int err = errno;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return fail_errno(
          fmt::format("no sock_diag answer from the kernel within {} s", kReceiveTimeoutSeconds),
          err);
    }
    return fail_errno("cannot read the sock_diag answer", err);
  }
}

Result<void> SockDiag::read_answer(std::uint32_t seq,
                                   const std::function<Result<bool>(const nlmsghdr&)>& on_message) {
  for (;;) {
    FM_TRY(auto got, receive());
    if (got == 0) return fail(Errc::kMalformed, "the kernel closed the sock_diag socket");
    auto left = static_cast<std::size_t>(got);
    for (auto* h = netlink_first<const nlmsghdr>(buffer_.get()); netlink_ok(h, left);
         h = netlink_next(h, left)) {
      if (h->nlmsg_seq != seq) {
        ++stats_.stale;
        continue;
      }
      if (h->nlmsg_flags & NLM_F_DUMP_INTR) ++stats_.interrupted;  // dumps only
      if (h->nlmsg_type == NLMSG_ERROR) {
        if (h->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
          return fail(Errc::kMalformed, "sock_diag: truncated error message from the kernel");
        }
        if (static_cast<const nlmsgerr*>(NLMSG_DATA(h))->error == 0) continue;  // an ack
      }
      FM_TRY(bool complete, on_message(*h));
      if (complete) return {};
    }
    if (left != 0) ++stats_.malformed;  // a partial message at the end of the datagram
  }
}

Result<std::size_t> SockDiag::dump(const Query& query, const Visitor& visit) {
  Request req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.header.nlmsg_seq = ++seq_;
  req.body.sdiag_family = static_cast<std::uint8_t>(to_af(query.family));
  req.body.sdiag_protocol = to_ipproto(query.protocol);
  req.body.idiag_states = query.states;
  if (query.want_info) req.body.idiag_ext |= 1u << (INET_DIAG_INFO - 1);
  if (query.want_congestion) req.body.idiag_ext |= 1u << (INET_DIAG_CONG - 1);
  FM_TRY_VOID(send_request(&req, sizeof req));

  std::size_t visited = 0;
  SocketInfo info;
  FM_TRY_VOID(read_answer(req.header.nlmsg_seq, [&](const nlmsghdr& m) -> Result<bool> {
    const nlmsghdr* h = &m;
    if (h->nlmsg_type == NLMSG_DONE) {
      if (h->nlmsg_len >= NLMSG_LENGTH(sizeof(int))) {
        int err = 0;
        std::memcpy(&err, NLMSG_DATA(h), sizeof err);
        if (err < 0) {
          return fail_errno(fmt::format("sock_diag dump of {} {} sockets failed{}",
                                        query.family == Family::kV4 ? "IPv4" : "IPv6",
                                        scitags::to_string(query.protocol), netlink_hint(-err)),
                            -err);
        }
      }
      return true;
    }
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      return fail_errno(fmt::format("the kernel refused the sock_diag dump of {} {} sockets{}",
                                    query.family == Family::kV4 ? "IPv4" : "IPv6",
                                    scitags::to_string(query.protocol), netlink_hint(-e->error)),
                        -e->error);
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return false;
    if (!parse_message(h, query.protocol, info)) {
      ++stats_.malformed;
      return false;
    }
    ++visited;
    visit(info);
    return false;
  }));
  return visited;
}

Result<std::vector<SocketInfo>> SockDiag::dump(const Query& query) {
  std::vector<SocketInfo> out;
  FM_TRY_VOID(dump(query, [&](const SocketInfo& s) { out.push_back(s); }));
  return out;
}

Result<std::optional<SocketInfo>> SockDiag::lookup(scitags::Protocol protocol, const Endpoint& src,
                                                   const Endpoint& dst, bool want_info,
                                                   scitags::TcpDetail* detail) {
  if (src.address.family() != dst.address.family()) {
    return fail(Errc::kInvalidArgument,
                fmt::format("sock_diag lookup of {} → {}: the two ends differ in family",
                            src.to_string(), dst.to_string()));
  }
  Request req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  req.header.nlmsg_flags = NLM_F_REQUEST;
  req.header.nlmsg_seq = ++seq_;
  // An IPv4 tuple also matches a dual-stack IPv6 socket: the kernel's lookup goes by the
  // addresses in its one hash table, whatever the socket's family.
  req.body.sdiag_family = static_cast<std::uint8_t>(to_af(src.address.family()));
  req.body.sdiag_protocol = to_ipproto(protocol);
  req.body.idiag_states = kAllStates;
  if (want_info) req.body.idiag_ext |= 1u << (INET_DIAG_INFO - 1);
  if (want_info && detail) req.body.idiag_ext |= 1u << (INET_DIAG_CONG - 1);
  // TCP's lookup reads idiag_src as the socket's own end; UDP's (udp_dump_one) reads it as
  // the sender of an incoming datagram, i.e. the peer. Each gets the order it expects.
  const bool swap = protocol == scitags::Protocol::kUdp;
  const Endpoint& own = swap ? dst : src;
  const Endpoint& peer = swap ? src : dst;
  req.body.id.idiag_sport = htons(own.port);
  req.body.id.idiag_dport = htons(peer.port);
  address_to(own.address, req.body.id.idiag_src);
  address_to(peer.address, req.body.id.idiag_dst);
  req.body.id.idiag_if = src.address.scope_id();
  req.body.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  req.body.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  FM_TRY_VOID(send_request(&req, sizeof req));

  std::optional<SocketInfo> found;
  FM_TRY_VOID(read_answer(req.header.nlmsg_seq, [&](const nlmsghdr& m) -> Result<bool> {
    const nlmsghdr* h = &m;
    if (h->nlmsg_type == NLMSG_ERROR) {
      const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
      if (e->error == -ENOENT) return true;  // no such socket
      return fail_errno(
          fmt::format("sock_diag lookup of {} {} → {} refused{}", scitags::to_string(protocol),
                      src.to_string(), dst.to_string(), netlink_hint(-e->error)),
          -e->error);
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return false;
    SocketInfo info;
    scitags::TcpDetail got;
    if (!parse_message(h, protocol, info, detail ? &got : nullptr)) {
      ++stats_.malformed;
      return fail(Errc::kMalformed, "sock_diag: malformed answer to a lookup");
    }
    // The kernel's lookup falls back to a listener (TCP) or an unconnected socket (UDP) on
    // the local port: that is not the connection asked for.
    if (info.src.port == src.port && info.dst.port == dst.port) {
      found = std::move(info);
      if (detail) *detail = got;
    }
    return true;
  }));
  return found;
}

Result<std::optional<scitags::TcpInfo>> SockDiag::tcp_info(const Endpoint& src,
                                                           const Endpoint& dst) {
  FM_TRY(auto one, lookup(scitags::Protocol::kTcp, src, dst, true));
  if (!one) return std::optional<scitags::TcpInfo>{};
  return one->tcp;
}

Result<std::optional<scitags::TcpDetail>> SockDiag::tcp_detail(const Endpoint& src,
                                                               const Endpoint& dst) {
  scitags::TcpDetail detail;
  FM_TRY(auto one, lookup(scitags::Protocol::kTcp, src, dst, true, &detail));
  if (!one || !one->tcp) return std::optional<scitags::TcpDetail>{};
  return std::optional<scitags::TcpDetail>{detail};
}

}  // namespace flowmark::netclient
