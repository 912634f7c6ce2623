// SIGHUP on a running Service (real signals, a real FIFO and real files in a temporary
// directory): a good new configuration replaces the changed part and the live flows are
// adopted; a bad one is rejected and the running configuration kept; SIGTERM stops it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "flowmark/daemon/service.hpp"
#include "test_util.hpp"

namespace flowmark::daemon {
namespace {

namespace fs = std::filesystem;

using testing::TempDir;

bool wait_for(const std::function<bool()>& done,
              std::chrono::seconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling, with a deadline
  }
  return true;
}

std::size_t line_count(const fs::path& p) {
  std::ifstream in(p);
  std::size_t n = 0;
  for (std::string l; std::getline(in, l);) n += !l.empty();
  return n;
}

// Writes one flow line into the FIFO (once it has a reader).
bool write_line(const fs::path& fifo, const std::string& line) {
  int fd = -1;
  if (!wait_for([&] {
        fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        return fd >= 0;
      }))
    return false;
  const std::string text = line + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

std::string config(const fs::path& fifo, const fs::path& records) {
  return "[source.pipe]\ntype = \"named-pipe\"\npath = \"" + fifo.string() +
         "\"\n\n[backend.rec]\ntype = \"records\"\npath = \"" + records.string() +
         "\"\nflush = \"event\"\n";
}

void write_file(const fs::path& p, const std::string& text) {
  const fs::path tmp = p.string() + ".tmp";
  std::ofstream(tmp) << text;
  fs::rename(tmp, p);
}

// Blocks the service's signals in this thread (the service thread inherits the mask and
// reads them from its signalfd; a process-directed signal then reaches it, never the
// default action), and restores the mask at the end.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&set_);
    for (int s : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&set_, s);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

 private:
  sigset_t set_, old_;
};

TEST(ServiceReload, SighupAppliesAGoodConfigAndKeepsTheRunningOneOnABadOne) {
  TempDir dir("fm-reload");
  const fs::path cfg = dir.path() / "flowmark.toml";
  const fs::path fifo = dir.path() / "flowmark.pipe";
  const fs::path first = dir.path() / "first.jsonl";
  const fs::path second = dir.path() / "second.jsonl";
  write_file(cfg, config(fifo, first));

  BlockedSignals blocked;
  auto doc = ConfigDocument::load(cfg.string());
  ASSERT_TRUE(doc) << doc.error().message();
  auto svc = Service::create(std::move(*doc), cfg.string());
  ASSERT_TRUE(svc) << svc.error().message();
  Result<void> ran;
  std::thread runner([&] { ran = (*svc)->run(); });
  auto& counters = (*svc)->counters();
  auto reloads = [&](const char* outcome) {
    return counters.value("flowmark_reloads_total", {{"outcome", outcome}});
  };

  ASSERT_TRUE(write_line(fifo, "start tcp 10.0.0.1 1000 10.0.0.2 5777 2 1"));
  ASSERT_TRUE(wait_for([&] { return line_count(first) == 1; })) << "the first record";

  // A bad edit: rejected, the running configuration kept.
  write_file(cfg, config(fifo, second) + "bogus_key = 1\n");
  ::kill(::getpid(), SIGHUP);
  ASSERT_TRUE(wait_for([&] { return reloads("rejected") == 1; }));
  ASSERT_TRUE(write_line(fifo, "start tcp 10.0.0.1 1001 10.0.0.2 5777 2 1"));
  ASSERT_TRUE(wait_for([&] { return line_count(first) == 2; })) << "still the first file";
  EXPECT_FALSE(fs::exists(second));

  // A good edit: the records backend moves to the second file and adopts the two live
  // flows (their start events written there).
  write_file(cfg, config(fifo, second));
  ::kill(::getpid(), SIGHUP);
  ASSERT_TRUE(wait_for([&] { return reloads("applied") == 1; }));
  ASSERT_TRUE(wait_for([&] { return line_count(second) == 2; })) << "the adopted live flows";
  ASSERT_TRUE(write_line(fifo, "end tcp 10.0.0.1 1000 10.0.0.2 5777 2 1"));
  ASSERT_TRUE(wait_for([&] { return line_count(second) == 3; })) << "the end in the new file";
  EXPECT_EQ(line_count(first), 2u);  // the old backend got nothing more

  ::kill(::getpid(), SIGTERM);
  runner.join();
  EXPECT_TRUE(ran) << ran.error().message();
  EXPECT_EQ(line_count(second), 4u);  // + the end of the flow still live at shutdown
  EXPECT_FALSE(fs::exists(fifo));
  EXPECT_EQ(reloads("rejected"), 1u);
  EXPECT_EQ(reloads("applied"), 1u);
}

}  // namespace
}  // namespace flowmark::daemon
