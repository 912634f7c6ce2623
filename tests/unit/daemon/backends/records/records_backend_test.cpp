// The `records` backend on real files in a temporary directory: one JSON line per event
// (readable by the firefly decoder), flushed per event or per batch, reopened for log
// rotation, and a path it cannot open refused at start.
#include "daemon/backends/records/records_backend.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "../../test_util.hpp"
#include "flowmark/scitags/firefly.hpp"

namespace flowmark::daemon {
namespace {

namespace fs = std::filesystem;
using scitags::FlowEvent;
using scitags::FlowState;
using testing::TempDir;

std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p);
  std::vector<std::string> out;
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

FlowEvent event(std::uint16_t sport, FlowState state = FlowState::kStart) {
  return testing::sample_event("192.0.2.1", "192.0.2.2", sport, state);
}

struct Fixture : testing::BackendFixture {
  Fixture() : BackendFixture("records.example.org") {
    EXPECT_TRUE(register_records_backend(factories));
  }
  Result<std::unique_ptr<Backend>> make(const std::string& text) {
    return BackendFixture::make("records", "audit", text);
  }
  std::uint64_t written() const {
    return counters.value("flowmark_records_written_total", {{"backend", "audit"}});
  }
};

TEST(RecordsBackend, OneDecodableLinePerEventFlushedAtOnce) {
  TempDir dir("fm-records");
  const fs::path file = dir.path() / "sub" / "events.jsonl";  // the directory is created
  Fixture f;
  auto b = f.make("path = '" + file.string() + "'\nflush = 'event'");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1000));
  ASSERT_EQ(lines_of(file).size(), 1u);  // flushed per event: on disk before the next
  (*b)->on_event(event(1000, FlowState::kEnd));
  auto lines = lines_of(file);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(f.written(), 2u);
  scitags::FireflyDecoder decoder;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_NE(lines[i].front(), '<') << "no syslog header: " << lines[i];
    auto d = decoder.decode(lines[i]);
    ASSERT_TRUE(d) << lines[i];
    const FlowEvent want = event(1000, i == 0 ? FlowState::kStart : FlowState::kEnd);
    EXPECT_EQ((*d)->event.state, want.state);
    EXPECT_EQ((*d)->event.src, want.src);
    EXPECT_EQ((*d)->event.dst, want.dst);
    EXPECT_EQ((*d)->event.experiment, 2u);
    EXPECT_EQ((*d)->event.activity, 1u);
    EXPECT_EQ((*d)->event.start_time, want.start_time);
    EXPECT_EQ((*d)->event.end_time, want.end_time);
  }
  (*b)->stop();
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::others_all, fs::perms::none);
}

TEST(RecordsBackend, BatchModeWritesOnTickAndStop) {
  TempDir dir("fm-records");
  const fs::path file = dir.path() / "events.jsonl";
  Fixture f;
  auto b = f.make("path = '" + file.string() + "'");
  ASSERT_TRUE(b) << b.error().message();
  EXPECT_GT((*b)->tick_interval().count(), 0);
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1));
  (*b)->on_event(event(2));
  EXPECT_EQ(lines_of(file).size(), 0u);  // held for the batch
  (*b)->on_tick();
  EXPECT_EQ(lines_of(file).size(), 2u);
  (*b)->on_event(event(3));
  (*b)->stop();
  EXPECT_EQ(lines_of(file).size(), 3u);
  EXPECT_EQ(f.written(), 3u);
}

TEST(RecordsBackend, ReopenFollowsLogRotation) {
  TempDir dir("fm-records");
  const fs::path file = dir.path() / "events.jsonl";
  const fs::path rotated = dir.path() / "events.jsonl.1";
  Fixture f;
  auto b = f.make("path = '" + file.string() + "'\nflush = 'event'");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1));
  fs::rename(file, rotated);
  (*b)->on_event(event(2));  // still the open file, now named .1
  (*b)->reopen();            // SIGHUP
  (*b)->on_event(event(3));
  (*b)->stop();
  EXPECT_EQ(lines_of(rotated).size(), 2u);
  auto fresh = lines_of(file);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_NE(fresh[0].find("\"src-port\":3"), std::string::npos) << fresh[0];
}

TEST(RecordsBackend, AppendsToAnExistingFile) {
  TempDir dir("fm-records");
  const fs::path file = dir.path() / "events.jsonl";
  { std::ofstream(file) << "earlier line\n"; }
  Fixture f;
  auto b = f.make("path = '" + file.string() + "'\nflush = 'event'");
  ASSERT_TRUE(b);
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1));
  (*b)->stop();
  auto lines = lines_of(file);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "earlier line");
}

TEST(RecordsBackend, UnopenablePathFailsAtStartNamingIt) {
  TempDir dir("fm-records");
  const fs::path blocker = dir.path() / "file";
  { std::ofstream(blocker) << "x"; }
  const fs::path file = blocker / "events.jsonl";  // a file is in the way of the directory
  Fixture f;
  auto b = f.make("path = '" + file.string() + "'");
  ASSERT_TRUE(b) << b.error().message();
  auto r = (*b)->start();
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find(file.string()), std::string::npos) << r.error().message();
}

TEST(RecordsBackend, ConfigRejectsAnUnknownFlushMode) {
  Fixture f;
  auto b = f.make("path = '/tmp/x'\nflush = 'sometimes'");
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message().find("flush"), std::string::npos) << b.error().message();
}

}  // namespace
}  // namespace flowmark::daemon
