#include "flowmark/capture/pcap_source.hpp"

#include <pcap/pcap.h>
#include <poll.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "libpcap.hpp"

namespace flowmark::capture {

struct PcapSource::Handle {
  const detail::Libpcap* lib = nullptr;  // loaded before pcap is opened
  pcap_t* pcap = nullptr;
  std::atomic<bool> stop{false};
  bool draining = false;  // live, after a stop request: non-blocking reads until none is left
  bool return_when_idle = false;  // set_return_when_idle()
  int fd = -1;                    // live: libpcap's descriptor, polled by next()
  bool idle = false;              // the last next() ended on the read timeout
  std::chrono::steady_clock::time_point drain_until;  // or until then
  std::int64_t ts_scale = 1000;                       // microsecond files; nanosecond files: 1
  ~Handle() {
    if (pcap != nullptr) lib->close(pcap);
  }
};

PcapSource::PcapSource(PcapSource&&) noexcept = default;
PcapSource& PcapSource::operator=(PcapSource&&) noexcept = default;
PcapSource::~PcapSource() = default;

namespace {

// After a stop request, how long frames already captured are still read at most.
constexpr auto kDrainLimit = std::chrono::milliseconds(500);
// Live: the longest a read waits for a frame before next() looks at its state again.
constexpr int kReadTimeoutMs = 100;

// libpcap's DLT values that differ from the LINKTYPE values we use.
observe::LinkType to_link_type(int dlt) {
  switch (dlt) {
    case DLT_RAW:  // 12 on Linux (14 on some BSDs): raw IP
    case 14:
    case 101: return observe::LinkType::kRaw;
    default: return static_cast<observe::LinkType>(dlt);  // LINKTYPE_* = DLT_* otherwise
  }
}

Result<void> apply_filter(const detail::Libpcap& lib, pcap_t* p, std::string_view filter,
                          std::string_view name) {
  if (filter.empty()) return {};
  bpf_program prog{};
  const std::string text(filter);
  if (lib.compile(p, &prog, text.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
    return fail(Errc::kInvalidArgument, fmt::format("filter '{}': {}", filter, lib.geterr(p)));
  const int rc = lib.setfilter(p, &prog);
  lib.freecode(&prog);
  if (rc != 0)
    return fail(Errc::kRefused,
                fmt::format("{}: cannot set filter '{}': {}", name, filter, lib.geterr(p)));
  return {};
}

}  // namespace

Result<PcapSource> PcapSource::open_file(std::string_view path, std::string_view filter) {
  FM_TRY(const detail::Libpcap* lib, detail::libpcap());
  PcapSource s;
  s.h_ = std::make_unique<Handle>();
  s.h_->lib = lib;
  s.name_ = path == "-" ? "standard input" : std::string(path);
  char err[PCAP_ERRBUF_SIZE] = {};
  const std::string p(path);
  if (path == "-") {
    s.h_->pcap = lib->fopen_offline(stdin, PCAP_TSTAMP_PRECISION_NANO, err);
  } else {
    s.h_->pcap = lib->open_offline(p.c_str(), PCAP_TSTAMP_PRECISION_NANO, err);
    struct stat st {};
    if (::stat(p.c_str(), &st) == 0) s.size_ = static_cast<std::uint64_t>(st.st_size);
  }
  if (s.h_->pcap == nullptr)
    return fail(Errc::kMalformed, fmt::format("{}: cannot read the capture: {}", s.name_, err));
  s.h_->ts_scale = 1;  // libpcap converts every file to nanoseconds for us
  s.link_ = to_link_type(lib->datalink(s.h_->pcap));
  FM_TRY_VOID(apply_filter(*lib, s.h_->pcap, filter, s.name_));
  return s;
}

Result<PcapSource> PcapSource::open_live(std::string_view iface, std::string_view filter,
                                         const LiveOptions& o) {
  FM_TRY(const detail::Libpcap* lib, detail::libpcap());
  PcapSource s;
  s.h_ = std::make_unique<Handle>();
  s.h_->lib = lib;
  s.name_ = std::string(iface);
  s.live_ = true;
  char err[PCAP_ERRBUF_SIZE] = {};
  s.h_->pcap = lib->create(s.name_.c_str(), err);
  if (s.h_->pcap == nullptr) return fail(Errc::kNotFound, fmt::format("{}: {}", iface, err));
  pcap_t* p = s.h_->pcap;
  (void)lib->set_snaplen(p, o.snaplen);
  (void)lib->set_promisc(p, o.promiscuous ? 1 : 0);
  (void)lib->set_immediate_mode(p, 1);
  (void)lib->set_buffer_size(p, o.buffer_bytes);
  if (lib->set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO) == 0) s.h_->ts_scale = 1;
  const int rc = lib->activate(p);
  if (rc < 0) {
    const bool perm = rc == PCAP_ERROR_PERM_DENIED;
    const bool missing = rc == PCAP_ERROR_NO_SUCH_DEVICE;
    return fail(missing ? Errc::kNotFound : Errc::kRefused,
                fmt::format("cannot capture on {}: {}{}", iface, lib->geterr(p),
                            perm ? " — run as root or grant CAP_NET_RAW" : ""));
  }
  if (lib->get_tstamp_precision(p) != PCAP_TSTAMP_PRECISION_NANO) s.h_->ts_scale = 1000;
  s.link_ = to_link_type(lib->datalink(p));
  FM_TRY_VOID(apply_filter(*lib, p, filter, s.name_));
  // Reads do not block: next() waits for frames itself, in poll(2) on libpcap's descriptor for
  // at most kReadTimeoutMs at a time (libpcap 1.10 with TPACKET_V3 waits for ever while no
  // frame comes, whatever its timeout), so that it sees a stop request or a caller's wish to
  // get control back (set_return_when_idle) on a quiet interface.
  s.h_->fd = lib->selectable_fd(p);
  if (s.h_->fd >= 0 && lib->setnonblock(p, 1, err) != 0)
    return fail(Errc::kRefused, fmt::format("{}: {}", iface, err));
  return s;
}

Result<bool> PcapSource::next(Frame& out) {
  pcap_pkthdr* hdr = nullptr;
  const u_char* data = nullptr;
  h_->idle = false;
  while (true) {
    if (h_->stop.load(std::memory_order_relaxed)) {
      // Stopping: a file ends here; a live capture still hands over the frames the kernel
      // captured before the request, without waiting for more.
      if (!live_) return false;
      // Within a bound: on a busy interface there is always another frame.
      if (!h_->draining) {
        h_->draining = true;
        h_->drain_until = std::chrono::steady_clock::now() + kDrainLimit;
        char err[PCAP_ERRBUF_SIZE] = {};
        if (h_->lib->setnonblock(h_->pcap, 1, err) != 0) return false;
      } else if (std::chrono::steady_clock::now() > h_->drain_until) {
        return false;
      }
    }
    hdr = nullptr;
    const int rc = h_->lib->next_ex(h_->pcap, &hdr, &data);
    if (rc == 1) break;
    // libpcap's ring reader checks for a break request after handing over a frame, and then
    // reports the break instead of the frame (a copy, in its one-shot buffer): keep it.
    if (rc == PCAP_ERROR_BREAK && live_ && hdr != nullptr && data != nullptr) break;
    if (rc == 0) {  // live: nothing within the read timeout (or nothing left when draining)
      if (h_->draining) return false;
      if (h_->fd >= 0) {  // nothing ready (non-blocking reads): wait for the descriptor
        pollfd pfd{h_->fd, POLLIN, 0};
        const int ready = ::poll(&pfd, 1, kReadTimeoutMs);
        if (ready < 0 && errno != EINTR)
          return fail(Errc::kRefused, fmt::format("{}: poll: {}", name_, std::strerror(errno)));
        if (ready > 0 || h_->stop.load(std::memory_order_relaxed)) continue;
      }
      if (h_->return_when_idle) {  // ~100 ms without a frame, or a signal: a pause, not the end
        h_->idle = true;
        return false;
      }
      continue;
    }
    if (rc == PCAP_ERROR_BREAK) {
      if (!live_) return false;
      continue;  // the stop request: drain (above)
    }
    if (rc == PCAP_ERROR_NO_SUCH_DEVICE || live_)
      return fail(Errc::kRefused, fmt::format("{}: {}", name_, h_->lib->geterr(h_->pcap)));
    return fail(Errc::kMalformed, fmt::format("{}: corrupt capture near byte offset {}: {}", name_,
                                              offset(), h_->lib->geterr(h_->pcap)));
  }
  out.ts_ns = static_cast<std::int64_t>(hdr->ts.tv_sec) * 1'000'000'000 +
              static_cast<std::int64_t>(hdr->ts.tv_usec) * h_->ts_scale;
  out.data = {reinterpret_cast<const std::byte*>(data), hdr->caplen};
  out.wire_length = hdr->len;
  return true;
}

void PcapSource::set_return_when_idle(bool on) noexcept { h_->return_when_idle = on; }
bool PcapSource::idle() const noexcept { return h_->idle; }

void PcapSource::break_loop() noexcept {
  h_->stop.store(true, std::memory_order_relaxed);
  h_->lib->breakloop(h_->pcap);
}

std::optional<std::uint64_t> PcapSource::drops() const noexcept {
  if (!live_) return std::nullopt;
  pcap_stat st{};
  if (h_->lib->stats(h_->pcap, &st) != 0) return std::nullopt;
  return static_cast<std::uint64_t>(st.ps_drop) + st.ps_ifdrop;
}

std::uint64_t PcapSource::offset() const noexcept {
  if (live_) return 0;
  FILE* f = h_->lib->file(h_->pcap);
  if (f == nullptr) return 0;
  const long pos = std::ftell(f);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos);
}

}  // namespace flowmark::capture
