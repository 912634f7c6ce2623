// The `store` backend on a real SQLite file in a temporary directory: events become one row
// per flow (later events replace the row; coalesced in the buffer), a store that cannot be
// opened or is locked by another writer is retried with back-off while records wait in the
// buffer, past the bound new flows are dropped and counted, and every event is accounted for
// (written + coalesced + dropped). Rows are read back with SQLite's own API.
#include "daemon/backends/store/store_backend.hpp"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "../../test_util.hpp"

namespace flowmark::daemon {
namespace {

namespace fs = std::filesystem;
using scitags::FlowEvent;
using scitags::FlowState;
using testing::TempDir;

FlowEvent event(std::uint16_t sport, FlowState state = FlowState::kStart) {
  auto e = testing::sample_event("192.0.2.1", "192.0.2.2", sport, state);
  if (state != FlowState::kStart) e.usage = scitags::Usage{.received = 10, .sent = sport * 100u};
  return e;
}

std::int64_t sql_int(const fs::path& db, const std::string& sql) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(h);
    return -1;
  }
  sqlite3_stmt* s = nullptr;
  std::int64_t v = -1;
  if (sqlite3_prepare_v2(h, sql.c_str(), -1, &s, nullptr) == SQLITE_OK &&
      sqlite3_step(s) == SQLITE_ROW) {
    v = sqlite3_column_int64(s, 0);
  }
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

struct Fixture : testing::BackendFixture {
  Fixture() : BackendFixture("collector.example.org") {
    EXPECT_TRUE(register_store_backend(factories));
  }
  Result<std::unique_ptr<Backend>> make(const std::string& text) {
    return BackendFixture::make("store", "db", text);
  }
  std::uint64_t records(const char* outcome) const {
    return counters.value("flowmark_store_records_total",
                          {{"backend", "db"}, {"outcome", outcome}});
  }
  std::uint64_t errors(const char* reason) const {
    return counters.value("flowmark_store_errors_total", {{"backend", "db"}, {"reason", reason}});
  }
  std::uint64_t buffered() const {
    return counters.value("flowmark_store_buffered", {{"backend", "db"}});
  }
  std::uint64_t accounted() const {
    return records("written") + records("coalesced") + records("dropped_buffer_full") +
           records("dropped_shutdown");
  }
  // Ticks the backend (as its worker does) until done() or a deadline.
  bool tick_until(Backend& b, const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      b.on_tick();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
  }
};

TEST(StoreBackend, OneRowPerFlowTheLatestEventWinsWithNamesAndSites) {
  TempDir dir("fm-storeb");
  const auto db = dir.path() / "flows.db";
  Fixture f;
  collector::SiteMap sites;
  ASSERT_TRUE(sites.add("SITE-A", *Network::parse("192.0.2.1/32")));
  f.ctx.sites->set(std::move(sites));
  auto b = f.make("path = '" + db.string() + "'\nbatch = 2\nflush_interval = 50");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  (*b)->on_event(event(1000));
  (*b)->on_event(event(1000, FlowState::kEnd));  // coalesced with the start, still held
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 0);
  (*b)->on_event(event(1001));  // two flows held: batch size reached, written
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 2);
  (*b)->on_event(event(1001, FlowState::kEnd));
  (*b)->stop();  // writes what is held
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 2);
  EXPECT_EQ(sql_int(db,
                    "SELECT count(*) FROM flows WHERE state = 'complete' AND "
                    "experiment = 'atlas' AND src_site = 'SITE-A' AND dst_site IS NULL"),
            2);
  EXPECT_EQ(sql_int(db, "SELECT volume FROM flows WHERE src_port = 1001"), 100'100);
  EXPECT_EQ(sql_int(db, "SELECT duration = 1.0 FROM flows WHERE src_port = 1001"), 1);
  EXPECT_EQ(f.records("written"), 3u);
  EXPECT_EQ(f.records("coalesced"), 1u);
  EXPECT_EQ(f.accounted(), 4u);
  EXPECT_EQ(f.buffered(), 0u);
}

TEST(StoreBackend, AStoreThatCannotBeOpenedIsRetriedWhileRecordsWait) {
  TempDir dir("fm-storeb");
  // The store's directory is a regular file: SQLite cannot create the store (root or not).
  const auto parent = dir.path() / "later";
  std::ofstream(parent) << "in the way\n";
  const auto db = parent / "flows.db";
  Fixture f;
  auto b = f.make("path = '" + db.string() + "'\nflush_interval = 10\nretry_max = 200");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start()) << "the service starts; the store is retried";
  EXPECT_EQ(f.errors("unwritable"), 1u);
  for (std::uint16_t p = 1; p <= 50; ++p) (*b)->on_event(event(p));
  for (std::uint16_t p = 1; p <= 50; ++p) (*b)->on_event(event(p, FlowState::kEnd));
  ASSERT_TRUE(f.tick_until(**b, [&] { return f.errors("unwritable") >= 3; }))
      << "retried with back-off, each failure counted";
  EXPECT_EQ(f.buffered(), 50u);
  EXPECT_EQ(f.records("written"), 0u);
  fs::remove(parent);
  fs::create_directory(parent);
  ASSERT_TRUE(f.tick_until(**b, [&] { return f.records("written") == 50; }))
      << f.counters.to_json(true);
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows WHERE state = 'complete'"), 50);
  EXPECT_EQ(f.buffered(), 0u);
  (*b)->stop();
  EXPECT_EQ(f.accounted(), 100u);
  EXPECT_EQ(f.records("dropped_buffer_full") + f.records("dropped_shutdown"), 0u);
}

TEST(StoreBackend, AStoreLockedByAnotherWriterIsRetriedAndNothingIsLost) {
  TempDir dir("fm-storeb");
  const auto db = dir.path() / "flows.db";
  Fixture f;
  auto b = f.make("path = '" + db.string() + "'\nbatch = 10\nflush_interval = 10\nretry_max = 200");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  for (std::uint16_t p = 1; p <= 25; ++p) (*b)->on_event(event(p));
  EXPECT_GE(f.errors("busy"), 1u);
  EXPECT_EQ(f.buffered(), 25u);
  ASSERT_TRUE(f.tick_until(**b, [&] { return f.errors("busy") >= 2; }));
  ASSERT_EQ(sqlite3_exec(other, "COMMIT", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  ASSERT_TRUE(f.tick_until(**b, [&] { return f.records("written") == 25; }))
      << f.counters.to_json(true);
  EXPECT_EQ(sql_int(db, "SELECT count(*) FROM flows"), 25);
  (*b)->stop();
  EXPECT_EQ(f.accounted(), 25u);
}

TEST(StoreBackend, PastTheBufferNewFlowsAreDroppedAndCountedHeldOnesStillUpdate) {
  TempDir dir("fm-storeb");
  const auto parent = dir.path() / "blocked";
  std::ofstream(parent) << "in the way\n";
  Fixture f;
  auto b = f.make("path = '" + (parent / "flows.db").string() + "'\nbuffer = 3");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  for (std::uint16_t p = 1; p <= 5; ++p) (*b)->on_event(event(p));
  (*b)->on_event(event(2, FlowState::kEnd));  // held: replaces its start
  (*b)->on_event(event(5, FlowState::kEnd));  // not held: dropped
  EXPECT_EQ(f.buffered(), 3u);
  EXPECT_EQ(f.records("dropped_buffer_full"), 3u);
  EXPECT_EQ(f.records("coalesced"), 1u);
  (*b)->stop();  // one last attempt fails: what is held is lost, and counted
  EXPECT_EQ(f.records("dropped_shutdown"), 3u);
  EXPECT_EQ(f.accounted(), 7u);
}

TEST(StoreBackend, RetentionDeletesFlowsThatEndedLongAgo) {
  TempDir dir("fm-storeb");
  const auto db = dir.path() / "flows.db";
  Fixture f;
  auto b = f.make("path = '" + db.string() + "'\nretention = 30\nflush_interval = 10");
  ASSERT_TRUE(b) << b.error().message();
  ASSERT_TRUE((*b)->start());
  auto old = event(1, FlowState::kEnd);  // 2025: long before 30 days ago
  auto recent = event(2, FlowState::kEnd);
  recent.start_time = now_micros() - 5'000'000;
  recent.end_time = now_micros();
  (*b)->on_event(old);
  (*b)->on_event(recent);
  (*b)->on_tick();  // writes both, then retention deletes the old one
  ASSERT_TRUE(f.tick_until(**b, [&] {
    return f.counters.value("flowmark_store_deleted_total", {{"backend", "db"}}) == 1;
  }));
  EXPECT_EQ(sql_int(db, "SELECT src_port FROM flows"), 2);
  (*b)->stop();
}

TEST(StoreBackend, ConfigurationErrorsNameTheKey) {
  Fixture f;
  auto both = f.make("path = '/tmp/x.db'\nurl = 'postgresql://h/db'");
  ASSERT_FALSE(both);
  EXPECT_NE(both.error().message().find("[backend.db] url: give path"), std::string::npos)
      << both.error().message();
  auto notpg = f.make("url = 'mysql://h/db'");
  ASSERT_FALSE(notpg);
  EXPECT_NE(notpg.error().message().find("not a postgresql:// URL"), std::string::npos);
  auto batch = f.make("path = '/tmp/x.db'\nbatch = 0");
  ASSERT_FALSE(batch);
  EXPECT_NE(batch.error().message().find("batch"), std::string::npos);
  auto unknown = f.make("path = '/tmp/x.db'\nbatches = 3");
  ASSERT_FALSE(unknown);
  auto bad_url = f.make("url = 'postgresql://[::1'");
  ASSERT_TRUE(bad_url);
  EXPECT_FALSE((*bad_url)->start()) << "a malformed URL does not start";
}

}  // namespace
}  // namespace flowmark::daemon
