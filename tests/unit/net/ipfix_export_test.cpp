// The IPFIX exporter over TCP against a real TCP collector in the test (a loopback listener
// that keeps each connection's bytes), every session read back by libfixbuf's reader (a TCP
// stream has the byte format of an RFC 5655 file): a collector up from the start, one
// started late, one killed mid-export and started again, one never up with a small buffer.
// Also a file reopened (log rotation): each file reads on its own. No sleeps: every wait is
// on a condition, with a timeout.
#include "flowmark/net/ipfix_export.hpp"

#include <fixbuf/public.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "flowmark/core/fd.hpp"
#include "flowmark/observe/ipfix.hpp"

namespace flowmark::net {
namespace {

using namespace std::chrono_literals;

// A TCP collector on 127.0.0.1: accepts connections and keeps the bytes of each (a session).
class TestCollector {
 public:
  ~TestCollector() { stop(); }

  // Listens on `port` (0: one the kernel picks).
  void start(std::uint16_t port = 0) {
    listener_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_TRUE(listener_);
    const int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    ASSERT_EQ(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0)
        << std::strerror(errno);
    ASSERT_EQ(::listen(listener_.get(), 8), 0);
    socklen_t len = sizeof a;
    ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    thread_ = std::thread([this] { run(); });
  }

  // Closes the listener and every connection (the collector dies).
  void stop() {
    if (!thread_.joinable()) return;
    const std::uint64_t v = 1;
    (void)!::write(stop_.get(), &v, sizeof v);
    thread_.join();
    listener_.reset();
  }

  std::uint16_t port() const { return port_; }
  // The first connection is closed by the collector once it has this many bytes (0: never),
  // in the middle of a message as like as not.
  void close_first_after(std::size_t bytes) { close_first_after_ = bytes; }

  std::vector<std::string> sessions() {
    std::lock_guard lock(mu_);
    return sessions_;
  }
  std::size_t bytes(std::size_t session) {
    std::lock_guard lock(mu_);
    return session < sessions_.size() ? sessions_[session].size() : 0;
  }
  // Waits until `pred` (called under the lock with the sessions) holds, up to `timeout`.
  bool wait(const std::function<bool(const std::vector<std::string>&)>& pred,
            std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return pred(sessions_); });
  }

 private:
  void run() {
    std::vector<std::pair<UniqueFd, std::size_t>> conns;  // fd, session index
    while (true) {
      std::vector<pollfd> p{{stop_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
      for (auto& c : conns) p.push_back({c.first.get(), POLLIN, 0});
      if (::poll(p.data(), p.size(), 10'000) < 0 && errno != EINTR) break;
      if (p[0].revents) break;
      const std::size_t polled = conns.size();  // a connection accepted now is polled next time
      if (p[1].revents & POLLIN) {
        UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (c) {
          std::lock_guard lock(mu_);
          sessions_.emplace_back();
          conns.emplace_back(std::move(c), sessions_.size() - 1);
          cv_.notify_all();
        }
      }
      for (std::size_t i = 0; i < polled; ++i) {
        if (!(p[2 + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        char buf[65536];
        const ssize_t n = ::recv(conns[i].first.get(), buf, sizeof buf, 0);
        if (n <= 0) {
          conns[i].first.reset();
          continue;
        }
        std::lock_guard lock(mu_);
        std::string& session = sessions_[conns[i].second];
        session.append(buf, static_cast<std::size_t>(n));
        if (conns[i].second == 0 && close_first_after_ != 0 &&
            session.size() >= close_first_after_) {
          session.resize(close_first_after_);  // what it read before it went away
          conns[i].first.reset();
        }
        cv_.notify_all();
      }
      std::erase_if(conns, [](const auto& c) { return !c.first; });
    }
  }

  UniqueFd listener_, stop_;
  std::uint16_t port_ = 0;
  std::size_t close_first_after_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> sessions_;
};

// What the test reads of each record (libfixbuf's internal template below).
struct Read {
  std::uint64_t octets;
  std::uint32_t sip;
  std::uint16_t sp;
  std::uint8_t pad[2];
};
static_assert(sizeof(Read) == 16);

fbInfoElementSpec_t kSpec[] = {{(char*)"octetDeltaCount", 8, 0},
                               {(char*)"sourceIPv4Address", 4, 0},
                               {(char*)"sourceTransportPort", 2, 0},
                               {(char*)"paddingOctets", 2, 0},
                               FB_IESPEC_NULL};

// The records of one session or file, read by libfixbuf from its first byte; `error` is what
// libfixbuf said when it stopped before the end ("" when it read to the end).
std::vector<std::uint64_t> read_stream(const std::string& bytes, std::string& error) {
  std::vector<std::uint64_t> out;
  error.clear();
  if (bytes.empty()) return out;
  std::FILE* f = ::fmemopen(const_cast<char*>(bytes.data()), bytes.size(), "rb");
  GError* err = nullptr;
  fbInfoModel_t* model = fbInfoModelAlloc();
  fbSession_t* session = fbSessionAlloc(model);
  fbTemplate_t* tmpl = fbTemplateAlloc(model);
  if (!fbTemplateAppendSpecArray(tmpl, kSpec, 0xffffffff, &err) ||
      !fbSessionAddTemplate(session, TRUE, 999, tmpl, &err)) {
    error = err->message;
    return out;
  }
  fBuf_t* buf = fBufAllocForCollection(session, fbCollectorAllocFP(nullptr, f));
  if (!fBufSetInternalTemplate(buf, 999, &err)) error = err->message;
  while (error.empty()) {
    Read r{};
    std::size_t len = sizeof r;
    if (!fBufNext(buf, reinterpret_cast<std::uint8_t*>(&r), &len, &err)) {
      if (!g_error_matches(err, FB_ERROR_DOMAIN, FB_ERROR_EOF)) error = err->message;
      g_clear_error(&err);
      break;
    }
    // The record's number is in its octets; address and port repeat it (checked here).
    EXPECT_EQ(r.sip, 0x0a000000u + static_cast<std::uint32_t>(r.octets));
    EXPECT_EQ(r.sp, static_cast<std::uint16_t>(r.octets));
    out.push_back(r.octets);
  }
  fBufFree(buf);
  fbInfoModelFree(model);
  std::fclose(f);
  return out;
}

// Message headers of a stream: (first set id, sequence number) of each message.
std::vector<std::pair<std::uint16_t, std::uint32_t>> headers(const std::string& s) {
  std::vector<std::pair<std::uint16_t, std::uint32_t>> out;
  auto u16 = [&](std::size_t at) {
    return static_cast<std::uint16_t>(static_cast<std::uint8_t>(s[at]) << 8 |
                                      static_cast<std::uint8_t>(s[at + 1]));
  };
  std::size_t off = 0;
  while (off + 20 <= s.size()) {
    const std::uint16_t len = u16(off + 2);
    if (len < 16 || off + len > s.size()) break;
    const std::uint32_t seq = std::uint32_t{u16(off + 8)} << 16 | u16(off + 10);
    out.emplace_back(u16(off + 16), seq);
    off += len;
  }
  return out;
}

// A writer of numbered IPv4 records into an exporter.
struct Feed {
  explicit Feed(IpfixExporter& e)
      : exporter(e),
        writer({.observation_domain = 5, .max_message_size = 2000, .now = [] { return 1234u; }},
               [this](std::span<const std::uint8_t> m) {
                 exporter.send(m, writer.records_in_message());
               }) {
    exporter.set_templates(writer.templates_message());
  }
  // Records first..last-1, then the message flushed.
  void add(std::uint64_t first, std::uint64_t last) {
    for (std::uint64_t i = first; i < last; ++i) {
      observe::FlowRecord r;
      r.ip_version = 4;
      r.sip = IpAddress::v4(0x0a000000u + static_cast<std::uint32_t>(i));
      r.dip = IpAddress::v4(0x0a010101u);
      r.sp = static_cast<std::uint16_t>(i);
      r.dp = 4739;
      r.proto = 6;
      r.pkt_fwd = 1;
      r.oct_fwd = i;
      writer.add(r);
    }
    writer.flush();
  }
  IpfixExporter& exporter;
  observe::IpfixWriter writer;
};

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
  std::vector<std::uint64_t> v;
  for (std::uint64_t i = first; i < last; ++i) v.push_back(i);
  return v;
}

// Connection events told by the exporter, waited on by the tests.
struct Log {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> lines;
  std::function<void(std::string_view)> sink() {
    return [this](std::string_view m) {
      std::lock_guard lock(mu);
      lines.emplace_back(m);
      cv.notify_all();
    };
  }
  bool wait_for(std::string_view word, std::size_t nth = 1) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] {
      std::size_t n = 0;
      for (const auto& l : lines) n += l.find(word) != std::string::npos;
      return n >= nth;
    });
  }
};

// A port on which nothing listens now (bound, then released).
std::uint16_t free_port() {
  TestCollector c;
  c.start();
  const std::uint16_t p = c.port();
  c.stop();
  return p;
}

bool wait_stats(IpfixExporter& e, const std::function<bool(const IpfixExportStats&)>& pred) {
  // The exporter's counters have no notification: polled, with a timeout.
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!pred(e.stats())) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);  // a poll of the condition, not a wait for time
  }
  return true;
}

TEST(IpfixExportTcp, CollectorUpFromTheStartGetsWhatAFileGets) {
  TestCollector collector;
  collector.start();
  auto tcp = IpfixExporter::open(fmt::format("tcp://127.0.0.1:{}", collector.port()));
  ASSERT_TRUE(tcp) << tcp.error().message();
  const auto path = std::filesystem::temp_directory_path() /
                    fmt::format("flowmark_ipfix_export_{}.ipfix", ::getpid());
  auto file = IpfixExporter::open(path.string());
  ASSERT_TRUE(file) << file.error().message();
  {
    Feed a(**tcp), b(**file);
    a.add(0, 3000);
    b.add(0, 3000);
  }
  const auto end = (*tcp)->finish(5s);
  EXPECT_EQ(end.not_delivered, 0u);
  EXPECT_EQ(end.stats.records, 3000u);
  EXPECT_EQ(end.stats.connections, 1u);
  EXPECT_EQ(end.stats.reconnects, 0u);
  EXPECT_EQ(end.stats.records_dropped, 0u);
  ASSERT_FALSE((*file)->finish(0s).error);
  ASSERT_TRUE(collector.wait(
      [&](const auto& s) { return s.size() == 1 && s[0].size() == end.stats.bytes; }));
  std::string file_bytes;
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    ASSERT_NE(f, nullptr);
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) file_bytes.append(buf, n);
    std::fclose(f);
    std::filesystem::remove(path);
  }
  const std::string stream = collector.sessions()[0];
  std::string error;
  EXPECT_EQ(read_stream(stream, error), range(0, 3000));
  EXPECT_EQ(error, "");
  EXPECT_EQ(read_stream(file_bytes, error), range(0, 3000));
  EXPECT_EQ(error, "");
  // The stream is the templates-only message, then the file's messages byte for byte.
  const auto h = headers(stream);
  ASSERT_GE(h.size(), 2u);
  EXPECT_EQ(h[0].first, 2);  // a template set
  const std::size_t tmpl_len =
      static_cast<std::uint8_t>(stream[2]) << 8 | static_cast<std::uint8_t>(stream[3]);
  EXPECT_EQ(stream.substr(tmpl_len), file_bytes);
}

TEST(IpfixExportTcp, CollectorStartedLateGetsTheBufferTemplatesFirst) {
  const std::uint16_t port = free_port();
  Log log;
  auto tcp = IpfixExporter::open(fmt::format("tcp://127.0.0.1:{}", port), {.log = log.sink()});
  ASSERT_TRUE(tcp) << tcp.error().message();
  Feed feed(**tcp);
  feed.add(0, 500);
  ASSERT_TRUE(log.wait_for("cannot connect"));
  feed.add(500, 1000);
  EXPECT_EQ((*tcp)->stats().records_buffered, 1000u);
  EXPECT_EQ((*tcp)->stats().records, 0u);
  TestCollector collector;
  collector.start(port);
  ASSERT_TRUE(wait_stats(**tcp, [](const auto& s) { return s.records == 1000; }));
  const auto end = (*tcp)->finish(5s);
  EXPECT_EQ(end.not_delivered, 0u);
  EXPECT_EQ(end.stats.connections, 1u);
  ASSERT_TRUE(collector.wait(
      [&](const auto& s) { return s.size() == 1 && s[0].size() == end.stats.bytes; }));
  const std::string stream = collector.sessions()[0];
  std::string error;
  EXPECT_EQ(read_stream(stream, error), range(0, 1000));
  EXPECT_EQ(error, "");
  const auto h = headers(stream);
  ASSERT_GE(h.size(), 2u);
  EXPECT_EQ(h[0].first, 2);    // templates first
  EXPECT_EQ(h[0].second, 0u);  // with the sequence number of the message after it
  EXPECT_EQ(h[1].second, 0u);
  EXPECT_TRUE(log.wait_for("connected to"));
}

TEST(IpfixExportTcp, CollectorKilledAndRestartedGetsTemplatesAgain) {
  TestCollector collector;
  collector.start();
  const std::uint16_t port = collector.port();
  Log log;
  auto tcp = IpfixExporter::open(fmt::format("tcp://127.0.0.1:{}", port),
                                 {.retry_initial = 50ms, .log = log.sink()});
  ASSERT_TRUE(tcp) << tcp.error().message();
  Feed feed(**tcp);
  feed.add(0, 400);
  ASSERT_TRUE(wait_stats(**tcp, [](const auto& s) { return s.records == 400; }));
  const std::size_t first_bytes = (*tcp)->stats().bytes;
  ASSERT_TRUE(
      collector.wait([&](const auto& s) { return s.size() == 1 && s[0].size() == first_bytes; }));
  const std::string first = collector.sessions()[0];
  collector.stop();  // the collector dies
  ASSERT_TRUE(log.wait_for("closed by the collector"));
  feed.add(400, 900);  // held while it is down
  ASSERT_TRUE(log.wait_for("cannot connect"));
  EXPECT_EQ((*tcp)->stats().records_buffered, 500u);
  TestCollector again;
  again.start(port);
  ASSERT_TRUE(wait_stats(**tcp, [](const auto& s) { return s.records == 900; }));
  feed.add(900, 1200);  // after the reconnection
  const auto end = (*tcp)->finish(5s);
  EXPECT_EQ(end.not_delivered, 0u);
  EXPECT_EQ(end.stats.records, 1200u);
  EXPECT_EQ(end.stats.connections, 2u);
  EXPECT_EQ(end.stats.reconnects, 1u);
  ASSERT_TRUE(again.wait([&](const auto& s) {
    return s.size() == 1 && s[0].size() == end.stats.bytes - first_bytes;
  }));
  std::string error;
  EXPECT_EQ(read_stream(first, error), range(0, 400));
  EXPECT_EQ(error, "");
  // The new session reads on its own from its first byte: the templates came first again.
  const std::string second = again.sessions()[0];
  EXPECT_EQ(read_stream(second, error), range(400, 1200));
  EXPECT_EQ(error, "");
  const auto h = headers(second);
  ASSERT_GE(h.size(), 2u);
  EXPECT_EQ(h[0].first, 2);
  EXPECT_EQ(h[0].second, 400u);
  EXPECT_EQ(h[1].second, 400u);
}

// The collector drops the connection in the middle of the stream (unread bytes: a reset);
// what it had is a readable prefix, and the next session reads on its own from its start.
TEST(IpfixExportTcp, ConnectionDroppedMidStreamNextSessionReadsOnItsOwn) {
  TestCollector collector;
  collector.close_first_after(30'000);
  collector.start();
  Log log;
  IpfixExportOptions o;
  o.retry_initial = 20ms;
  o.log = log.sink();
  auto tcp = IpfixExporter::open(fmt::format("tcp://127.0.0.1:{}", collector.port()), o);
  ASSERT_TRUE(tcp) << tcp.error().message();
  Feed feed(**tcp);
  feed.add(0, 3000);                           // ~200 kB: the collector goes away after 30 kB
  ASSERT_TRUE(log.wait_for("connection to"));  // "... lost: ..." or "... closed by ..."
  feed.add(3000, 3500);                        // after the loss was noticed
  const auto end = (*tcp)->finish(5s);
  EXPECT_EQ(end.not_delivered, 0u);
  EXPECT_EQ(end.stats.connections, 2u);
  EXPECT_EQ(end.stats.reconnects, 1u);
  ASSERT_TRUE(collector.wait([&](const std::vector<std::string>& s) {
    return s.size() == 2 && headers(s[1]).size() >= 2;
  }));
  std::string error;
  const auto first = read_stream(collector.sessions()[0], error);
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first, range(0, first.size()));  // a prefix (the cut message is not read)
  ASSERT_TRUE(collector.wait([&](const std::vector<std::string>& s) {
    std::string e;
    const auto r = read_stream(s[1], e);
    return e.empty() && !r.empty() && r.back() == 3499;
  }));
  const std::string second = collector.sessions()[1];
  const auto h = headers(second);
  EXPECT_EQ(h[0].first, 2);  // templates first
  const auto got = read_stream(second, error);
  EXPECT_EQ(error, "");
  // In order, no gap within the session, ending with the last record.
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got, range(got.front(), 3500));
  EXPECT_GE(got.front(), first.size());
}

TEST(IpfixExportTcp, CollectorNeverUpDropsBeyondTheBufferAndEndsInTime) {
  const std::uint16_t port = free_port();
  IpfixExportOptions o;
  o.buffer_bytes = 3000;
  o.wait_for_room = true;
  auto tcp = IpfixExporter::open(fmt::format("tcp://127.0.0.1:{}", port), o);
  ASSERT_TRUE(tcp) << tcp.error().message();
  Feed feed(**tcp);
  for (int i = 0; i < 10; ++i) feed.add(i * 50, i * 50 + 50);  // one message each (< 2000 B)
  const auto s = (*tcp)->stats();
  EXPECT_GT(s.records_dropped, 0u);
  EXPECT_EQ(s.records_dropped + s.records_buffered, 500u);
  EXPECT_LE(s.bytes_buffered, 3000u);
  const auto t0 = std::chrono::steady_clock::now();
  const auto end = (*tcp)->finish(300ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 3s);
  EXPECT_EQ(end.stats.records, 0u);
  EXPECT_EQ(end.stats.connections, 0u);
  EXPECT_EQ(end.not_delivered + end.stats.records_dropped, 500u);
}

TEST(IpfixExportTcp, BadTargetsNameWhatIsWrong) {
  auto e = IpfixExporter::open("tcp://");
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code(), make_error_code(Errc::kInvalidArgument));
  EXPECT_NE(e.error().message().find("tcp://HOST"), std::string::npos) << e.error().message();
  e = IpfixExporter::open("tcp://127.0.0.1:99999");
  ASSERT_FALSE(e);
  e = IpfixExporter::open("tpc://127.0.0.1:4739");
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message().find("tcp://HOST:PORT"), std::string::npos);
}

TEST(IpfixExportFile, ReopenedFileStartsWithTheTemplates) {
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("flowmark_ipfix_reopen_{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto path = dir / "flows.ipfix";
  IpfixExportOptions o;
  o.append = true;
  auto file = IpfixExporter::open(path.string(), o);
  ASSERT_TRUE(file) << file.error().message();
  Feed feed(**file);
  feed.add(0, 100);
  std::filesystem::rename(path, dir / "flows.ipfix.1");  // log rotation
  ASSERT_TRUE((*file)->reopen());
  feed.add(100, 250);
  ASSERT_FALSE((*file)->finish(0s).error);
  auto slurp = [](const std::filesystem::path& p) {
    std::string out;
    std::FILE* f = std::fopen(p.c_str(), "rb");
    char buf[65536];
    std::size_t n;
    while (f != nullptr && (n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
    if (f != nullptr) std::fclose(f);
    return out;
  };
  std::string error;
  EXPECT_EQ(read_stream(slurp(dir / "flows.ipfix.1"), error), range(0, 100));
  EXPECT_EQ(error, "");
  EXPECT_EQ(read_stream(slurp(path), error), range(100, 250));
  EXPECT_EQ(error, "");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace flowmark::net
