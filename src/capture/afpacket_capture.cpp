// Live capture through an AF_PACKET socket with a TPACKET_V3 receive ring: the kernel
// fills blocks of frames in memory shared with us; a batch is (part of) one block, handed
// to the observer in place and given back to the kernel on the next call. The filter is
// attached to the socket (the kernel drops what it rejects); the kernel's drop count comes
// from PACKET_STATISTICS.
//
// `--workers N` on an interface: N such sockets in one fanout group (PACKET_FANOUT_HASH with
// PACKET_FANOUT_FLAG_DEFRAG, open_afpacket_fanout): the kernel hands each frame to one of
// them by the symmetric flow hash of the frame (net/packet/af_packet.c fanout_demux_hash:
// __skb_get_hash_symmetric, addresses and ports, each pair ordered), IPv4 fragments
// reassembled first. Each socket is set up with a filter that drops everything, bound, joined
// to the group, and only then given its real filter: no frame reaches a socket before it is
// in the group (a bound socket outside the group would see every frame of the interface).
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "bpf_program.hpp"
#include "capture_internal.hpp"
#include "flowmark/capture/capture.hpp"

namespace flowmark::capture {

#ifndef ARPHRD_RAWIP
#define ARPHRD_RAWIP 519
#endif

namespace {

constexpr unsigned kBlockSize = 1u << 20;  // a power of two pages
constexpr unsigned kFrameSize = 2048;      // TPACKET_V3 ignores it, but checks it
constexpr unsigned kRetireMs = 20;         // a partly filled block reaches us after this
constexpr int kPollMs = 100;               // how often a stop request is noticed when idle
// After a stop request, how long we wait at most for the kernel to retire the block it is
// filling (it does so kRetireMs after the block's first frame).
constexpr auto kDrainLimit = std::chrono::seconds(1);
constexpr unsigned kVlanTagLen = 4;
// Each socket of a fanout group gets the ring's bytes divided by their number, at least this.
constexpr int kMinFanoutRing = 16 << 20;

class AfPacketCapture final : public Capture {
 public:
  AfPacketCapture(std::string name, int fd, observe::LinkType link)
      : name_(std::move(name)), fd_(fd), link_(link) {}
  ~AfPacketCapture() override {
    if (ring_ != nullptr) munmap(ring_, ring_bytes_);
    if (fd_ >= 0) ::close(fd_);
  }
  AfPacketCapture(const AfPacketCapture&) = delete;
  AfPacketCapture& operator=(const AfPacketCapture&) = delete;

  // hold: the socket gets a filter that drops every frame (for a socket to join a fanout
  // group once bound; release() then gives it `filter`); otherwise it gets `filter` now.
  Result<void> setup(unsigned ifindex, std::string_view filter, const LiveOptions& o,
                     bool hold = false) {
    int v = TPACKET_V3;
    if (setsockopt(fd_, SOL_PACKET, PACKET_VERSION, &v, sizeof v) != 0)
      return fail_errno(fmt::format("{}: TPACKET_V3 is not available", name_));
    if (link_ == observe::LinkType::kEthernet) {
      // Headroom in front of each frame, to put back a VLAN tag the driver took off.
      unsigned reserve = kVlanTagLen;
      if (setsockopt(fd_, SOL_PACKET, PACKET_RESERVE, &reserve, sizeof reserve) != 0)
        return fail_errno(fmt::format("{}: cannot reserve frame headroom", name_));
    }
    if (hold) {
      sock_filter drop_all{BPF_RET | BPF_K, 0, 0, 0};
      sock_fprog fp{1, &drop_all};
      if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) != 0)
        return fail_errno(fmt::format("{}: cannot attach a filter", name_));
    } else {
      FM_TRY_VOID(attach(filter));
    }
    blocks_ = std::max(2u, static_cast<unsigned>(o.buffer_bytes) / kBlockSize);
    tpacket_req3 req{};
    req.tp_block_size = kBlockSize;
    req.tp_block_nr = blocks_;
    req.tp_frame_size = kFrameSize;
    req.tp_frame_nr = kBlockSize / kFrameSize * blocks_;
    req.tp_retire_blk_tov = kRetireMs;
    if (setsockopt(fd_, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0)
      return fail_errno(fmt::format("{}: cannot set up the receive ring", name_));
    ring_bytes_ = std::size_t{kBlockSize} * blocks_;
    void* ring =
        mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, 0);
    if (ring == MAP_FAILED)
      return fail_errno(fmt::format("{}: cannot map the receive ring", name_));
    ring_ = static_cast<std::uint8_t*>(ring);
    if (o.promiscuous) {
      packet_mreq mr{};
      mr.mr_ifindex = static_cast<int>(ifindex);
      mr.mr_type = PACKET_MR_PROMISC;
      if (setsockopt(fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) != 0)
        return fail_errno(fmt::format("{}: cannot turn promiscuous mode on", name_));
    }
    // Bound last, with the protocol: until now the socket received nothing (protocol 0), so
    // no frame of another interface or outside the filter is in the ring.
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(ifindex);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0)
      return fail_errno(fmt::format("cannot capture on {}", name_));
    return {};
  }

  // Joins the fanout group `id` (PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG), or with
  // id < 0 makes a new one with an id the kernel picks unique in this network namespace;
  // returns the group's id. Errc::kUnsupported when the kernel refuses.
  Result<int> join_fanout(int id) {
    const int mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG;
    int arg = id >= 0 ? (mode << 16) | id : (mode | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
    if (setsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &arg, sizeof arg) != 0) {
      const int err = errno;
      return fail(Errc::kUnsupported,
                  fmt::format("{}: cannot join a PACKET_FANOUT_HASH group with DEFRAG: {}", name_,
                              std::strerror(err)));
    }
    if (id >= 0) return id;
    int got = 0;
    socklen_t len = sizeof got;
    if (getsockopt(fd_, SOL_PACKET, PACKET_FANOUT, &got, &len) != 0)
      return fail_errno(fmt::format("{}: cannot read the fanout group's id", name_));
    return got & 0xFFFF;
  }

  // After setup(…, hold = true) and join_fanout(): the socket's real filter (none: every frame).
  Result<void> release(std::string_view filter) {
    if (!filter.empty()) return attach(filter);
    int unused = 0;
    if (setsockopt(fd_, SOL_SOCKET, SO_DETACH_FILTER, &unused, sizeof unused) != 0)
      return fail_errno(fmt::format("{}: cannot detach a filter", name_));
    return {};
  }

  Result<std::size_t> next_batch(std::span<observe::FrameRef> frames,
                                 observe::LinkType& link) override {
    link = link_;
    idle_ = false;
    if (held_ != nullptr && left_ == 0) give_back();
    while (held_ == nullptr) {
      // After a stop request at most one ring's worth of blocks more: on a busy interface
      // the kernel would fill blocks as fast as they are read, and the stop never come.
      if (stop_.load(std::memory_order_relaxed) && drained_blocks_ >= blocks_) return 0;
      auto* b = reinterpret_cast<tpacket_block_desc*>(ring_ + std::size_t{cur_} * kBlockSize);
      if (__atomic_load_n(&b->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) {
        if (stop_.load(std::memory_order_relaxed)) ++drained_blocks_;
        held_ = b;
        left_ = b->hdr.bh1.num_pkts;
        next_ = reinterpret_cast<std::uint8_t*>(b) + b->hdr.bh1.offset_to_first_pkt;
        if (left_ == 0) give_back();
        continue;
      }
      if (stop_.load(std::memory_order_relaxed)) {
        // Stopping: the frames the kernel captured before the request are still read. The
        // blocks it handed over were read above; the one it is filling (its frame count is
        // zero from give_back() until the kernel opens it) comes when its retire timer fires.
        if (__atomic_load_n(&b->hdr.bh1.num_pkts, __ATOMIC_ACQUIRE) == 0) return 0;
        const auto now = std::chrono::steady_clock::now();
        if (!drain_until_) drain_until_ = now + kDrainLimit;
        if (now > *drain_until_) return 0;
      }
      pollfd p{fd_, POLLIN | POLLERR, 0};
      const int rc = ::poll(&p, 1, kPollMs);
      if (rc < 0 && errno != EINTR) return fail_errno(fmt::format("{}: poll", name_));
      if (rc <= 0 && return_when_idle_ && !stop_.load(std::memory_order_relaxed)) {
        idle_ = true;
        return 0;
      }
      if (rc > 0 && (p.revents & POLLERR)) {
        int err = 0;
        socklen_t len = sizeof err;
        (void)getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) return fail_errno(fmt::format("capture on {}", name_), err);
      }
    }
    std::size_t n = 0;
    while (n < frames.size() && left_ > 0) {
      auto* h = reinterpret_cast<tpacket3_hdr*>(next_);
      std::uint8_t* data = next_ + h->tp_mac;
      std::uint32_t caplen = h->tp_snaplen;
      if ((h->tp_status & TP_STATUS_VLAN_VALID) && link_ == observe::LinkType::kEthernet &&
          caplen >= 12) {
        // The driver took the 802.1Q tag off: put it back where it was, in the headroom.
        const std::uint16_t tpid =
            (h->tp_status & TP_STATUS_VLAN_TPID_VALID) ? h->hv1.tp_vlan_tpid : ETH_P_8021Q;
        data -= kVlanTagLen;
        std::memmove(data, data + kVlanTagLen, 12);
        const std::uint16_t tag[2] = {htons(tpid),
                                      htons(static_cast<std::uint16_t>(h->hv1.tp_vlan_tci))};
        std::memcpy(data + 12, tag, sizeof tag);
        caplen += kVlanTagLen;
      }
      frames[n].ts_ns = static_cast<std::int64_t>(h->tp_sec) * 1'000'000'000 + h->tp_nsec;
      frames[n].frame = {reinterpret_cast<const std::byte*>(data), caplen};
      ++n;
      --left_;
      next_ += h->tp_next_offset;
    }
    return n;
  }

  void break_loop() noexcept override { stop_.store(true, std::memory_order_relaxed); }
  void set_return_when_idle(bool on) noexcept override { return_when_idle_ = on; }
  bool idle() const noexcept override { return idle_; }
  std::string_view name() const noexcept override { return name_; }
  std::optional<std::uint64_t> drops() const noexcept override {
    if (!read_stats()) return std::nullopt;
    return kernel_.drops;
  }
  std::optional<KernelStats> kernel_stats() const noexcept override {
    if (!read_stats()) return std::nullopt;
    return kernel_;
  }

 private:
  Result<void> attach(std::string_view filter) {
    if (filter.empty()) return {};
    FM_TRY(auto prog, detail::BpfProgram::compile_live(filter, name_));
    sock_fprog fp{};
    fp.len = static_cast<unsigned short>(prog.program().bf_len);
    fp.filter = reinterpret_cast<sock_filter*>(prog.program().bf_insns);
    if (setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof fp) != 0)
      return fail_errno(fmt::format("{}: cannot attach the filter '{}'", name_, filter));
    return {};
  }

  bool read_stats() const noexcept {
    tpacket_stats_v3 st{};
    socklen_t len = sizeof st;
    if (getsockopt(fd_, SOL_PACKET, PACKET_STATISTICS, &st, &len) != 0) return false;
    // The kernel resets its counters when they are read; its packets include the drops.
    kernel_.packets += st.tp_packets;
    kernel_.drops += st.tp_drops;
    kernel_.freeze_q += st.tp_freeze_q_cnt;
    return true;
  }

  void give_back() noexcept {
    // The kernel resets the count when it opens the block; until then, zero says "empty" to a
    // stop request that finds the block not yet reopened.
    __atomic_store_n(&held_->hdr.bh1.num_pkts, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&held_->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    held_ = nullptr;
    left_ = 0;
    cur_ = (cur_ + 1) % blocks_;
  }

  std::string name_;
  int fd_;
  observe::LinkType link_;
  std::uint8_t* ring_ = nullptr;
  std::size_t ring_bytes_ = 0;
  unsigned blocks_ = 0, cur_ = 0;
  tpacket_block_desc* held_ = nullptr;  // the block being read (frames point into it)
  std::uint8_t* next_ = nullptr;
  std::uint32_t left_ = 0;
  std::atomic<bool> stop_{false};
  bool return_when_idle_ = false;  // set_return_when_idle()
  bool idle_ = false;              // the last next_batch() returned 0 for want of frames
  std::optional<std::chrono::steady_clock::time_point> drain_until_;  // set on a stop request
  unsigned drained_blocks_ = 0;  // blocks taken after the stop request
  mutable KernelStats kernel_;   // summed since the socket was opened
};

// A socket on `iface` (not set up yet) and the interface's index.
Result<std::pair<std::unique_ptr<AfPacketCapture>, unsigned>> open_socket(std::string_view iface) {
  const std::string name(iface);
  if (name.size() >= IFNAMSIZ)
    return fail(Errc::kNotFound, fmt::format("cannot capture on {}: no such interface", iface));
  const unsigned ifindex = if_nametoindex(name.c_str());
  if (ifindex == 0)
    return fail(Errc::kNotFound, fmt::format("cannot capture on {}: no such interface", iface));
  // Protocol 0: the socket receives nothing until bind() names the protocol and interface.
  const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    if (err == EPERM || err == EACCES)
      return fail(Errc::kRefused, fmt::format("cannot capture on {}: {} — run as root or grant "
                                              "CAP_NET_RAW",
                                              iface, std::strerror(err)));
    return fail_errno(fmt::format("cannot capture on {}", iface), err);
  }
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.c_str(), name.size());
  if (ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) {
    const int err = errno;
    ::close(fd);
    return fail_errno(fmt::format("cannot capture on {}", iface), err);
  }
  observe::LinkType link;
  switch (ifr.ifr_hwaddr.sa_family) {
    case ARPHRD_ETHER:
    case ARPHRD_LOOPBACK: link = observe::LinkType::kEthernet; break;
    case ARPHRD_NONE:  // tun and other interfaces without a link header: the IP packet
    case ARPHRD_RAWIP: link = observe::LinkType::kRaw; break;
    default:
      ::close(fd);
      return fail(Errc::kUnsupported,
                  fmt::format("cannot capture on {} with --capture afpacket: link type (ARPHRD) "
                              "{} is not supported — use --capture pcap",
                              iface, ifr.ifr_hwaddr.sa_family));
  }
  return std::pair{std::make_unique<AfPacketCapture>(name, fd, link), ifindex};
}

Result<std::unique_ptr<Capture>> open_afpacket(std::string_view iface, std::string_view filter,
                                               const LiveOptions& o) {
  FM_TRY(auto opened, open_socket(iface));
  FM_TRY_VOID(opened.first->setup(opened.second, filter, o));
  return std::unique_ptr<Capture>(std::move(opened.first));
}

}  // namespace

Result<std::unique_ptr<Capture>> open_live_capture(std::string_view iface, std::string_view filter,
                                                   LiveBackend backend, const LiveOptions& o) {
  if (backend == LiveBackend::kAfPacket) return open_afpacket(iface, filter, o);
  FM_TRY(auto src, PcapSource::open_live(iface, filter, o));
  return detail::wrap_pcap(std::move(src));
}

Result<std::vector<std::unique_ptr<Capture>>> open_afpacket_fanout(std::string_view iface,
                                                                   std::string_view filter,
                                                                   std::size_t n,
                                                                   const LiveOptions& o) {
  std::vector<std::unique_ptr<AfPacketCapture>> socks;
  LiveOptions each = o;
  each.buffer_bytes =
      std::max(o.buffer_bytes / static_cast<int>(std::max<std::size_t>(n, 1)), kMinFanoutRing);
  int group = -1;
  for (std::size_t i = 0; i < n; ++i) {
    FM_TRY(auto opened, open_socket(iface));
    FM_TRY_VOID(opened.first->setup(opened.second, filter, each, /*hold=*/true));
    FM_TRY(group, opened.first->join_fanout(group));
    socks.push_back(std::move(opened.first));
  }
  std::vector<std::unique_ptr<Capture>> out;
  for (auto& s : socks) {
    FM_TRY_VOID(s->release(filter));
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace flowmark::capture
