// Test helpers shared by the service's unit and BPF tests: a FlowSink that keeps what it is
// given, a temporary directory removed with everything in it, a sample FlowEvent, and
// sources and backends made from a TOML text through their factories, as the service
// makes them.
//
//   flowmark::testing::TestSink sink;          // source.start(loop, sink); sink.events ...
//   flowmark::testing::TempDir dir("fm-x");    // dir.path() / "file"
//   flowmark::testing::BackendFixture f("host.example.org");
//   auto b = f.make("records", "audit", "path = '/tmp/x'");
//   flowmark::testing::SourceFixture s;        // s.make(...), start(s.loop, s.sink), s.run_until
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <toml++/toml.h>

#include "flowmark/core/address.hpp"
#include "flowmark/core/event_loop.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/core/time.hpp"
#include "flowmark/daemon/counters.hpp"
#include "flowmark/daemon/factory.hpp"
#include "flowmark/daemon/plugin.hpp"
#include "flowmark/daemon/section.hpp"
#include "flowmark/net/socket.hpp"
#include "flowmark/scitags/flow_event.hpp"
#include "flowmark/scitags/registry.hpp"

namespace flowmark::testing {

// Keeps every event pushed, with the monotonic time of its push.
struct TestSink : daemon::FlowSink {
  std::vector<scitags::FlowEvent> events;
  std::vector<std::int64_t> at_ns;  // monotonic_ns() at each push
  void push(const scitags::FlowEvent& e) override {
    events.push_back(e);
    at_ns.push_back(monotonic_ns());
  }
  std::size_t count(scitags::FlowState s) const {
    std::size_t n = 0;
    for (const auto& e : events) n += e.state == s;
    return n;
  }
};

// A fresh directory under the system's temporary directory, named "<prefix>-XXXXXX";
// removed with its contents at the end of the scope.
class TempDir {
 public:
  explicit TempDir(std::string_view prefix) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr) << "cannot create " << tmpl;
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A UDP flow event from src:sport to dst:5777 (experiment 2, activity 1) at a fixed start
// time; an end event also has its end time, one second later.
inline scitags::FlowEvent sample_event(std::string_view src, std::string_view dst,
                                       std::uint16_t sport,
                                       scitags::FlowState state = scitags::FlowState::kStart) {
  scitags::FlowEvent e;
  e.state = state;
  e.src = {*IpAddress::parse(src), sport};
  e.dst = {*IpAddress::parse(dst), 5777};
  e.experiment = 2;
  e.activity = 1;
  e.start_time = 1'742'896'800'000'000;
  if (state == scitags::FlowState::kEnd) e.end_time = e.start_time + 1'000'000;
  return e;
}

// Makes a part of kind `kind` from the section [<table>.<name>] holding `text`, finishing
// the section (an unknown key fails as it does in the service).
template <typename Part>
Result<std::unique_ptr<Part>> make_part(daemon::Factories<Part>& factories,
                                        daemon::ServiceContext& ctx, std::string_view table,
                                        std::string_view kind, std::string_view name,
                                        const std::string& text) {
  toml::table parsed = toml::parse(text);
  daemon::Section s(&parsed, "[" + std::string(table) + "." + std::string(name) + "]",
                    std::string(name));
  FM_TRY(auto part, factories.create(kind, s, ctx));
  FM_TRY_VOID(s.finish());
  return part;
}

// What a source needs from the service (counters, the built-in registry, a host name), its
// factories, an event loop and a sink; the test registers the source kind it tries.
struct SourceFixture {
  explicit SourceFixture(std::string hostname = "host")
      : ctx{counters, &scitags::Registry::builtin(), std::move(hostname)} {}

  Result<std::unique_ptr<daemon::Source>> make(std::string_view kind, std::string_view name,
                                               const std::string& text) {
    return make_part(factories, ctx, "source", kind, name, text);
  }
  // Runs the loop until done() holds (true) or `timeout` passes or the loop fails (false).
  bool run_until(const std::function<bool()>& done,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (!loop.run_once(std::chrono::milliseconds(50))) return false;
    }
    return true;
  }

  daemon::Counters counters;
  daemon::ServiceContext ctx;
  daemon::SourceFactories factories{"source"};
  EventLoop loop = std::move(*EventLoop::create());
  TestSink sink;
};

// What a backend needs from the service (counters, the built-in registry, a host name) and
// its factories; the test registers the backend kind it tries.
struct BackendFixture {
  explicit BackendFixture(std::string hostname)
      : ctx{counters, &scitags::Registry::builtin(), std::move(hostname)} {}

  Result<std::unique_ptr<daemon::Backend>> make(std::string_view kind, std::string_view name,
                                                const std::string& text) {
    return make_part(factories, ctx, "backend", kind, name, text);
  }

  daemon::Counters counters;
  daemon::ServiceContext ctx;
  daemon::BackendFactories factories{"backend"};
};

// GET http://127.0.0.1:PORT/PATH over a plain TCP socket (HTTP/1.0: the server closes when
// done): the status line and the body; a failed connection fails the test (empty reply).
struct HttpReply {
  std::string status;
  std::string body;
};
inline HttpReply http_get(std::uint16_t port, std::string_view path) {
  auto client = net::connect_tcp({*IpAddress::parse("127.0.0.1"), port});
  if (!client) {
    ADD_FAILURE() << client.error().message();
    return {};
  }
  const int fd = client->get();
  const std::string request = "GET " + std::string(path) + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  EXPECT_EQ(::write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) response.append(buf, n);
  HttpReply r;
  r.status = response.substr(0, response.find("\r\n"));
  auto body = response.find("\r\n\r\n");
  if (body != std::string::npos) r.body = response.substr(body + 4);
  return r;
}

}  // namespace flowmark::testing
