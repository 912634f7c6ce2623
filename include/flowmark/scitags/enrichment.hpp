// flowmark::scitags — the TCP statistics `ongoing` fireflies carry, and the shapes of their
// "netlink" object: flowmark's own (scitags::TcpInfo, snake_case names), or one of flowd-go's
// enrichment modes, for collectors built for flowd-go:
//
//   lean        {"cong": {"algorithm": "cubic"},
//                "tcpInfo": {"Retransmits", "advMss", "bytesSent", "deliveryRate", "minRtt",
//                            "pMtu", "rtt", "rttVar", "sndCwnd", "sndMss", "sndSsThresh"}}
//               (flowd-go's `lean` struct tags; "Retransmits" keeps its Go field name there, as
//               flowd-go's marshalling does; "cong" only when the algorithm is known)
//   compatible  flowd's (Python) ss-derived object, flat: "state" ("established"...), "pmtu",
//               "retrans", "ato", "rto", "snd_wscale", ..., "opts" (["ts", "sack", "ecn"]),
//               ..., "advmss", "backoff" (47 members; ato, rto, rtt, rttvar, rcv_rtt in ms)
//
//   TcpDetail d = netclient::tcp_detail_from_bytes(info, len, state, "cubic");
//   FM_TRY(auto wire, encoder.encode(ongoing_event, now, d, EnrichmentShape::kLean));
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace flowmark::scitags {

enum class EnrichmentShape : std::uint8_t { kFlowmark, kLean, kCompatible };
std::string_view to_string(EnrichmentShape s) noexcept;  // "flowmark", "lean", "compatible"
std::optional<EnrichmentShape> parse_enrichment_shape(std::string_view s) noexcept;

// The kernel's struct tcp_info (linux/tcp.h field names, its units: times in µs unless named
// otherwise, last_* in ms), the socket's TCP state (1 established ... 11 closing) and its
// congestion-control algorithm. Zero for what an older kernel does not send.
struct TcpDetail {
  std::uint8_t state = 0, ca_state = 0, retransmits = 0, probes = 0, backoff = 0, options = 0;
  std::uint8_t snd_wscale = 0, rcv_wscale = 0, delivery_rate_app_limited = 0;
  std::uint32_t rto = 0, ato = 0, snd_mss = 0, rcv_mss = 0;
  std::uint32_t unacked = 0, sacked = 0, lost = 0, retrans = 0, fackets = 0;
  std::uint32_t last_data_sent = 0, last_ack_sent = 0, last_data_recv = 0, last_ack_recv = 0;
  std::uint32_t pmtu = 0, rcv_ssthresh = 0, rtt = 0, rttvar = 0, snd_ssthresh = 0, snd_cwnd = 0;
  std::uint32_t advmss = 0, reordering = 0, rcv_rtt = 0, rcv_space = 0, total_retrans = 0;
  std::uint64_t pacing_rate = 0, max_pacing_rate = 0, bytes_acked = 0, bytes_received = 0;
  std::uint32_t segs_out = 0, segs_in = 0, notsent_bytes = 0, min_rtt = 0;
  std::uint32_t data_segs_in = 0, data_segs_out = 0;
  std::uint64_t delivery_rate = 0, busy_time = 0, rwnd_limited = 0, sndbuf_limited = 0;
  std::uint64_t bytes_sent = 0;
  std::array<char, 16> congestion{};  // "cubic", "bbr"; empty when not known

  std::string_view congestion_name() const noexcept {
    const std::string_view all(congestion.data(), congestion.size());
    return all.substr(0, all.find('\0'));
  }
};

}  // namespace flowmark::scitags
