// Capture files: regular files mapped into memory and walked by CaptureParser (no copy per
// frame, no system call per batch), anything else (standard input, pipes) through libpcap.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "bpf_program.hpp"
#include "capture_internal.hpp"
#include "flowmark/capture/capture.hpp"
#include "flowmark/capture/file_parser.hpp"

namespace flowmark::capture {

namespace detail {

Result<BpfProgram> BpfProgram::compile(std::string_view expr, observe::LinkType link,
                                       std::uint32_t snaplen) {
  FM_TRY(const Libpcap* pcap, libpcap());
  // LINKTYPE_RAW is DLT_RAW for libpcap; the other link types we decode have equal values.
  const int dlt = link == observe::LinkType::kRaw ? DLT_RAW : static_cast<int>(link);
  pcap_t* dead = pcap->open_dead(dlt, static_cast<int>(snaplen));
  if (dead == nullptr) return fail(Errc::kRefused, "cannot compile a filter: out of memory");
  BpfProgram p;
  p.bind(*pcap);
  const std::string text(expr);
  const int rc = pcap->compile(dead, &p.prog_, text.c_str(), 1, PCAP_NETMASK_UNKNOWN);
  if (rc != 0) {
    auto err =
        fail(Errc::kInvalidArgument, fmt::format("filter '{}': {} (link type {})", expr,
                                                 pcap->geterr(dead), static_cast<int>(link)));
    pcap->close(dead);
    return err;
  }
  pcap->close(dead);
  return p;
}

Result<BpfProgram> BpfProgram::compile_live(std::string_view expr, std::string_view iface) {
  FM_TRY(const Libpcap* pcap, libpcap());
  char err[PCAP_ERRBUF_SIZE] = {};
  const std::string name(iface);
  pcap_t* p = pcap->create(name.c_str(), err);
  if (p == nullptr) return fail(Errc::kNotFound, fmt::format("{}: {}", iface, err));
  (void)pcap->set_buffer_size(p, 1 << 16);  // the handle only compiles: keep its ring small
  if (pcap->activate(p) < 0) {
    auto e = fail(Errc::kRefused,
                  fmt::format("cannot compile the filter for {}: {}", iface, pcap->geterr(p)));
    pcap->close(p);
    return e;
  }
  BpfProgram prog;
  prog.bind(*pcap);
  const std::string text(expr);
  if (pcap->compile(p, &prog.prog_, text.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0) {
    auto e = fail(Errc::kInvalidArgument, fmt::format("filter '{}': {}", expr, pcap->geterr(p)));
    pcap->close(p);
    return e;
  }
  pcap->close(p);
  return prog;
}

}  // namespace detail

namespace {

// The mapping is given back behind the reader every this many bytes: the pages stay in the
// page cache, but do not add the whole file to the process's resident set.
constexpr std::size_t kReleaseEvery = 16u << 20;
constexpr std::size_t kPopulate = 8u << 20;
#ifdef MADV_POPULATE_READ
constexpr int kMadvPopulateRead = MADV_POPULATE_READ;
#else
constexpr int kMadvPopulateRead = 22;
#endif

// The read mode's buffer: a window of the file, refilled when the parser has taken every
// whole record in it (the partial record at its end moved to the front first); doubled when
// one record does not fit.
constexpr std::size_t kReadWindow = 1u << 18;

// A regular file walked by CaptureParser, either mapped (map_) or read (fd_) in windows of
// kReadWindow bytes into one buffer.
class MappedFileCapture final : public Capture {
 public:
  MappedFileCapture(std::string name, void* map, std::size_t size, CaptureParser parser)
      : name_(std::move(name)), map_(map), size_(size), parser_(std::move(parser)) {}
  // Read mode: buf holds the file's first `filled` bytes, which the parser was opened on.
  MappedFileCapture(std::string name, int fd, std::size_t size, std::vector<std::byte> buf,
                    std::size_t filled, CaptureParser parser)
      : name_(std::move(name)),
        map_(nullptr),
        size_(size),
        fd_(fd),
        buf_(std::move(buf)),
        filled_(filled),
        parser_(std::move(parser)) {
    parser_.set_window(buf_.data(), 0, filled_, filled_ >= size_);
  }
  ~MappedFileCapture() override {
    if (map_ != nullptr) munmap(map_, size_);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedFileCapture(const MappedFileCapture&) = delete;
  MappedFileCapture& operator=(const MappedFileCapture&) = delete;

  Result<void> set_filter(std::string_view expr) {
    filter_ = std::string(expr);
    // Compiled now for the first link type, so that a bad expression is reported at once.
    FM_TRY(auto prog, detail::BpfProgram::compile(expr, parser_.first_link()));
    programs_.emplace_back(parser_.first_link(), std::move(prog));
    return {};
  }

  Result<std::size_t> next_batch(std::span<observe::FrameRef> frames,
                                 observe::LinkType& link) override {
    if (stop_.load(std::memory_order_relaxed)) return 0;
    if (map_ != nullptr) release_behind();
    // Filtered: read a batch, keep the frames the program accepts (a batch may shrink to
    // nothing while input remains: read on).
    for (;;) {
      if (!filter_.empty() && wire_.size() < frames.size()) wire_.resize(frames.size());
      FM_TRY(std::size_t n, filter_.empty() ? parser_.next_batch(frames, link)
                                            : parser_.next_batch(frames, link, wire_));
      if (n == 0) {
        if (parser_.last_window()) return 0;
        FM_TRY_VOID(refill());  // read mode: the window is used up
        continue;
      }
      if (filter_.empty()) return n;
      FM_TRY(const detail::BpfProgram* prog, program_for(link));
      std::size_t kept = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const auto& f = frames[i];
        if (prog->matches(f.frame.data(), static_cast<std::uint32_t>(f.frame.size()), wire_[i]))
          frames[kept++] = f;
      }
      if (kept != 0) return kept;
    }
  }

  void break_loop() noexcept override { stop_.store(true, std::memory_order_relaxed); }
  std::string_view name() const noexcept override { return name_; }
  std::uint64_t offset() const noexcept override { return parser_.offset(); }
  std::optional<std::uint64_t> size() const noexcept override { return size_; }
  // The mapping lives as long as the capture (pages given back behind the reader are read
  // again from the file when touched: MAP_PRIVATE, never written); the read mode's buffer is
  // refilled.
  bool frames_outlive_batch() const noexcept override { return map_ != nullptr; }
  // The workers read a pcap file themselves (observe_workers.cpp), with pread(2).
  SharedFile file_to_share() const noexcept override {
    if (fd_ < 0 || !filter_.empty() || parser_.pcapng()) return {};
    return {&parser_, fd_, size_};
  }
  bool stopping() const noexcept override { return stop_.load(std::memory_order_relaxed); }

 private:
  // Read mode: the next window. The bytes from the parser's offset on (a record cut by the
  // window's end) move to the front, the rest of the buffer is read from the file.
  Result<void> refill() {
    const std::size_t start = window_start_, pos = parser_.offset();
    const std::size_t keep = start + filled_ - pos;
    if (keep == buf_.size()) buf_.resize(buf_.size() * 2);  // one record fills the buffer
    std::memmove(buf_.data(), buf_.data() + (pos - start), keep);
    window_start_ = pos;
    filled_ = keep;
    while (filled_ < buf_.size() && window_start_ + filled_ < size_) {
      const ssize_t got = ::pread(fd_, buf_.data() + filled_, buf_.size() - filled_,
                                  static_cast<off_t>(window_start_ + filled_));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0)
        return fail(Errc::kRefused, fmt::format("{}: cannot read at byte offset {}: {}", name_,
                                                window_start_ + filled_, std::strerror(errno)));
      if (got == 0) {  // the file became shorter since it was opened: it ends here
        size_ = window_start_ + filled_;
        break;
      }
      filled_ += static_cast<std::size_t>(got);
    }
    parser_.set_window(buf_.data(), window_start_, filled_, window_start_ + filled_ >= size_);
    return {};
  }

  void release_behind() noexcept {
    populate_ahead();
    const std::size_t at = parser_.offset() & ~std::size_t{4095};
    if (at - released_ < kReleaseEvery) return;
    (void)madvise(static_cast<char*>(map_) + released_, at - released_, MADV_DONTNEED);
    released_ = at;
  }

  // The pages ahead of the reader are mapped kPopulate at a time by one madvise
  // (MADV_POPULATE_READ, Linux 5.14) rather than by a page fault every 64 KiB.
  void populate_ahead() noexcept {
    if (!populate_ok_) return;
    const std::size_t at = parser_.offset();
    if (populated_ > at + kPopulate / 2 || populated_ >= size_) return;
    const std::size_t from = std::max(populated_, at & ~std::size_t{4095});
    const std::size_t len = std::min(kPopulate, size_ - from);
    if (madvise(static_cast<char*>(map_) + from, len, kMadvPopulateRead) != 0) {
      populate_ok_ = false;  // an older kernel: page faults as before
      return;
    }
    populated_ = from + len;
  }

  Result<const detail::BpfProgram*> program_for(observe::LinkType link) {
    for (const auto& [l, p] : programs_)
      if (l == link) return &p;
    FM_TRY(auto prog, detail::BpfProgram::compile(filter_, link));
    programs_.emplace_back(link, std::move(prog));
    return &programs_.back().second;
  }

  std::string name_;
  void* map_;
  std::size_t size_;
  std::size_t released_ = 0;
  std::size_t populated_ = 0;
  bool populate_ok_ = true;
  int fd_ = -1;                 // read mode
  std::vector<std::byte> buf_;  // read mode: the window's bytes
  std::size_t window_start_ = 0, filled_ = 0;
  CaptureParser parser_;
  std::string filter_;
  std::vector<std::pair<observe::LinkType, detail::BpfProgram>> programs_;
  std::vector<std::uint32_t> wire_;
  std::atomic<bool> stop_{false};
};

// libpcap, one frame per batch (its buffer is reused by the next read).
class PcapCapture final : public Capture {
 public:
  explicit PcapCapture(PcapSource src) : src_(std::move(src)) {}
  Result<std::size_t> next_batch(std::span<observe::FrameRef> frames,
                                 observe::LinkType& link) override {
    if (frames.empty()) return 0;
    Frame f;
    FM_TRY(bool more, src_.next(f));
    if (!more) return 0;
    link = src_.link_type();
    frames[0] = {f.ts_ns, f.data};
    return 1;
  }
  void break_loop() noexcept override { src_.break_loop(); }
  void set_return_when_idle(bool on) noexcept override { src_.set_return_when_idle(on); }
  bool idle() const noexcept override { return src_.idle(); }
  std::string_view name() const noexcept override { return src_.name(); }
  std::optional<std::uint64_t> drops() const noexcept override { return src_.drops(); }
  std::uint64_t offset() const noexcept override { return src_.offset(); }
  std::optional<std::uint64_t> size() const noexcept override { return src_.size(); }

 private:
  PcapSource src_;
};

// A regular file opened for reading, and its size.
struct OpenedFile {
  int fd;
  std::size_t size;
};
Result<OpenedFile> open_regular_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return fail(err == ENOENT ? Errc::kNotFound : Errc::kRefused,
                fmt::format("{}: cannot open: {}", path, std::strerror(err)));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail(Errc::kUnsupported, fmt::format("{}: not a regular file", path));
  }
  return OpenedFile{fd, static_cast<std::size_t>(st.st_size)};
}

}  // namespace

Result<std::unique_ptr<Capture>> open_mapped_file(std::string_view path, std::string_view filter) {
  const std::string p(path);
  FM_TRY(const OpenedFile file, open_regular_file(p));
  const int fd = file.fd;
  const std::size_t size = file.size;
  void* map = nullptr;
  if (size != 0) {
    map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return fail(Errc::kRefused, fmt::format("{}: cannot map: {}", path, std::strerror(err)));
    }
    (void)madvise(map, size, MADV_SEQUENTIAL);
  }
  ::close(fd);  // the mapping keeps the file
  auto parser = CaptureParser::open({static_cast<const std::byte*>(map), size}, p);
  if (!parser) {
    if (map != nullptr) munmap(map, size);
    return std::unexpected(std::move(parser.error()));
  }
  auto cap = std::make_unique<MappedFileCapture>(p, map, size, std::move(*parser));
  if (!filter.empty()) FM_TRY_VOID(cap->set_filter(filter));
  return std::unique_ptr<Capture>(std::move(cap));
}

Result<std::unique_ptr<Capture>> open_read_file(std::string_view path, std::string_view filter) {
  const std::string p(path);
  FM_TRY(const OpenedFile file, open_regular_file(p));
  const int fd = file.fd;
  const std::size_t size = file.size;
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::byte> buf(kReadWindow);
  std::size_t filled = 0;
  while (filled < std::min(size, buf.size())) {
    const ssize_t got =
        ::pread(fd, buf.data() + filled, buf.size() - filled, static_cast<off_t>(filled));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int err = errno;
      ::close(fd);
      return fail(Errc::kRefused, fmt::format("{}: cannot read: {}", path, std::strerror(err)));
    }
    if (got == 0) break;
    filled += static_cast<std::size_t>(got);
  }
  auto parser = CaptureParser::open({buf.data(), filled}, p);
  if (!parser) {
    ::close(fd);
    return std::unexpected(std::move(parser.error()));
  }
  auto cap = std::make_unique<MappedFileCapture>(p, fd, filled < buf.size() ? filled : size,
                                                 std::move(buf), filled, std::move(*parser));
  if (!filter.empty()) FM_TRY_VOID(cap->set_filter(filter));
  return std::unique_ptr<Capture>(std::move(cap));
}

Result<std::unique_ptr<Capture>> open_file_capture(std::string_view path, std::string_view filter) {
  if (path != "-") {
    struct stat st {};
    const std::string p(path);
    if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return open_mapped_file(path, filter);
  }
  FM_TRY(auto src, PcapSource::open_file(path, filter));
  return detail::wrap_pcap(std::move(src));
}

std::unique_ptr<Capture> detail::wrap_pcap(PcapSource src) {
  return std::make_unique<PcapCapture>(std::move(src));
}

}  // namespace flowmark::capture
