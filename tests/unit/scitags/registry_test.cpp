#include "flowmark/scitags/registry.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "flowmark/core/fd.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::scitags {
namespace {

// EXPECT_CONTAINS(text, part): `part` occurs in `text` (printed when it does not).
#define EXPECT_CONTAINS(text, part) \
  EXPECT_NE(std::string(text).find(part), std::string::npos) << "in: " << (text)

// ---- the embedded registry -------------------------------------------------------------

TEST(RegistryBuiltin, LoadsThePublicRegistry) {
  const Registry& reg = Registry::builtin();
  EXPECT_EQ(reg.source(), "builtin");
  EXPECT_FALSE(reg.modified().empty());
  ASSERT_EQ(reg.experiments().size(), 14u);
  const char* names[] = {"default", "atlas", "cms", "lhcb",  "alice", "belleii", "ska",
                         "dune",    "lsst",  "ilc", "auger", "juno",  "nova",    "xenon"};
  for (std::uint32_t id = 1; id <= 14; ++id) {
    EXPECT_EQ(reg.experiment_name(id), names[id - 1]) << id;
    EXPECT_EQ(reg.experiment_id(names[id - 1]), id);
    EXPECT_EQ(reg.activity_id(id, "default"), 1u) << names[id - 1];
  }
  EXPECT_EQ(reg.experiment_id("atlas"), 2u);
  EXPECT_EQ(reg.experiment_id("cms"), 3u);
  EXPECT_EQ(reg.activity_id(2, "perfSONAR"), 2u);
  EXPECT_EQ(reg.activity_id(3, "perfSONAR"), 2u);
  EXPECT_EQ(reg.activity_name(2, 2), "perfSONAR");
  EXPECT_EQ(reg.activity_name(2, 26), "Data Challenge");
  EXPECT_EQ(&Registry::builtin(), &reg);  // parsed once
}

TEST(RegistryBuiltin, NamesAndIdsMapBothWays) {
  const Registry& reg = Registry::builtin();
  for (const Experiment& exp : reg.experiments()) {
    EXPECT_EQ(reg.find_experiment(exp.id), &exp);
    EXPECT_EQ(reg.find_experiment(exp.name), &exp);
    EXPECT_EQ(reg.experiment_id(exp.name), exp.id);
    EXPECT_EQ(reg.experiment_name(exp.id), exp.name);
    for (const Activity& act : exp.activities) {
      EXPECT_EQ(reg.activity_id(exp.id, act.name), act.id);
      EXPECT_EQ(reg.activity_name(exp.id, act.id), act.name);
    }
  }
}

TEST(RegistryBuiltin, LookupsAreCaseSensitiveAndMissReturnNothing) {
  const Registry& reg = Registry::builtin();
  EXPECT_EQ(reg.experiment_id("ATLAS"), std::nullopt);
  EXPECT_EQ(reg.activity_id(2, "perfsonar"), std::nullopt);
  EXPECT_EQ(reg.experiment_name(99), std::nullopt);
  EXPECT_EQ(reg.activity_name(2, 63), std::nullopt);
  EXPECT_EQ(reg.activity_name(99, 1), std::nullopt);
  EXPECT_EQ(reg.activity_id(99, "default"), std::nullopt);
  EXPECT_EQ(reg.find_experiment(0u), nullptr);
  EXPECT_EQ(reg.find_experiment(""), nullptr);
}

// ---- resolution by name or id ----------------------------------------------------------

TEST(RegistryResolve, ByNameOrDecimalId) {
  const Registry& reg = Registry::builtin();
  EXPECT_EQ(reg.resolve_experiment("atlas"), 2u);
  EXPECT_EQ(reg.resolve_experiment("2"), 2u);
  EXPECT_EQ(reg.resolve_experiment("14"), 14u);
  EXPECT_EQ(reg.resolve_activity(2, "perfSONAR"), 2u);
  EXPECT_EQ(reg.resolve_activity(2, "2"), 2u);
  EXPECT_EQ(reg.resolve_activity(2, "Upload/Download (User)"), 23u);
  EXPECT_EQ(reg.resolve_activity(2, "26"), 26u);
}

TEST(RegistryResolve, UnknownNamesListTheKnownOnes) {
  const Registry& reg = Registry::builtin();
  auto r = reg.resolve_experiment("atlsa");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_EQ(r.error().message(),
            "unknown experiment 'atlsa'; known: alice, atlas, auger, belleii, cms, default, "
            "dune, ilc, juno, lhcb, lsst, nova, ska, xenon");

  for (const char* bad : {"99", "0", "-1", "+2", "", " 2", "2 ", "99999999999999999999"}) {
    auto e = reg.resolve_experiment(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_CONTAINS(e.error().message(), fmt::format("unknown experiment '{}'", bad));
  }

  auto a = reg.resolve_activity(4, "perfsonar");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().message(),
            "unknown activity 'perfsonar' in experiment lhcb (4); known: Cache, DataChallenge, "
            "default, perfSONAR");
  EXPECT_FALSE(reg.resolve_activity(12, "2"));  // juno has only "default"

  auto x = reg.resolve_activity(99, "default");
  ASSERT_FALSE(x);
  EXPECT_CONTAINS(x.error().message(), "unknown experiment id 99; known: alice, atlas");
}

// ---- scitags ---------------------------------------------------------------------------

TEST(Scitag, CombinesAndSplits) {
  EXPECT_EQ(make_scitag(1, 1), 65u);
  EXPECT_EQ(make_scitag(2, 2), 130u);
  EXPECT_EQ(make_scitag(1023, 63), 65535u);
  EXPECT_EQ(split_scitag(65), (std::pair<std::uint32_t, std::uint32_t>{1, 1}));
  EXPECT_EQ(split_scitag(130), (std::pair<std::uint32_t, std::uint32_t>{2, 2}));
  EXPECT_EQ(split_scitag(65535), (std::pair<std::uint32_t, std::uint32_t>{1023, 63}));
}

TEST(Scitag, RejectsWhatDoesNotFit) {
  for (auto [e, a] : std::vector<std::pair<std::uint32_t, std::uint32_t>>{
           {0, 1}, {1024, 1}, {1, 0}, {1, 64}, {0xFFFFFFFF, 1}, {1, 0xFFFFFFFF}}) {
    auto r = make_scitag(e, a);
    ASSERT_FALSE(r) << e << "," << a;
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
    EXPECT_CONTAINS(r.error().message(), "out of range");
  }
  for (std::uint32_t s : {0u, 1u, 64u, 65536u, 0xFFFFFFFFu}) {
    auto r = split_scitag(s);
    ASSERT_FALSE(r) << s;
    EXPECT_CONTAINS(r.error().message(), "65..65535");
  }
  auto zero_activity = split_scitag(128);  // (2, 0)
  ASSERT_FALSE(zero_activity);
  EXPECT_CONTAINS(zero_activity.error().message(), "activity part");
}

TEST(Scitag, RoundTripsEveryValidValue) {
  for (std::uint32_t s = kMinScitag; s <= kMaxScitag; ++s) {
    auto parts = split_scitag(s);
    if ((s & 63) == 0) {
      EXPECT_FALSE(parts) << s;
      continue;
    }
    ASSERT_TRUE(parts) << s;
    EXPECT_EQ(make_scitag(parts->first, parts->second), s);
  }
}

// ---- malformed documents ---------------------------------------------------------------

struct BadDoc {
  const char* json;
  const char* message;  // expected in the error, after "t.json: "
};

TEST(RegistryParse, MalformedDocumentsNameThePath) {
  const BadDoc cases[] = {
      {"not json", "not a JSON document"},
      {"", "not a JSON document"},
      {"{\"experiments\": [", "not a JSON document"},
      {"[]", "top level: expected an object, got []"},
      {"{}", "top level: missing \"experiments\""},
      {R"({"experiments": {}})", "experiments: expected an array, got {}"},
      {R"({"experiments": []})", "experiments: empty"},
      {R"({"experiments": [3]})", "experiments[0]: expected an object, got 3"},
      {R"({"experiments": [{"expName": "a", "expId": "x", "activities": []}]})",
       "experiments[0].expId: expected a non-negative integer, got \"x\""},
      {R"({"experiments": [{"expName": "a", "expId": 2.0, "activities": []}]})",
       "experiments[0].expId: expected a non-negative integer, got 2.0"},
      {R"({"experiments": [{"expName": "a", "expId": -3, "activities": []}]})",
       "experiments[0].expId: expected a non-negative integer, got -3"},
      {R"({"experiments": [{"expName": "a", "expId": 0, "activities": []}]})",
       "experiments[0].expId: experiment id 0 is out of range: a scitag carries experiment ids "
       "1..1023"},
      {R"({"experiments": [{"expName": "a", "expId": 1024, "activities": []}]})",
       "experiments[0].expId: experiment id 1024 is out of range"},
      {R"({"experiments": [{"expName": "a", "expId": 18446744073709551615, "activities": []}]})",
       "experiments[0].expId: experiment id 18446744073709551615 is out of range"},
      {R"({"experiments": [{"expName": 5, "expId": 1, "activities": []}]})",
       "experiments[0].expName: expected a string, got 5"},
      {R"({"experiments": [{"expName": "", "expId": 1, "activities": []}]})",
       "experiments[0].expName: expected a non-empty name"},
      {R"({"experiments": [{"expName": "a\u0007b", "expId": 1, "activities": []}]})",
       "experiments[0].expName: \"a\\u0007b\" contains a control character"},
      {R"({"experiments": [{"expId": 1, "activities": []}]})",
       "experiments[0]: missing \"expName\""},
      {R"({"experiments": [{"expName": "a", "activities": []}]})",
       "experiments[0]: missing \"expId\""},
      {R"({"experiments": [{"expName": "a", "expId": 1}]})",
       "experiments[0]: missing \"activities\""},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": null}]})",
       "experiments[0].activities: expected an array, got null"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [{"activityId": 1}]}]})",
       "experiments[0].activities[0]: missing \"activityName\""},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [{"activityName": "d"}]}]})",
       "experiments[0].activities[0]: missing \"activityId\""},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [
           {"activityName": "d", "activityId": -1}]}]})",
       "experiments[0].activities[0].activityId: expected a non-negative integer, got -1"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [
           {"activityName": "d", "activityId": 64}]}]})",
       "experiments[0].activities[0].activityId: activity id 64 is out of range: a scitag "
       "carries activity ids 1..63"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": []},
                           {"expName": "b", "expId": 1, "activities": []}]})",
       "experiments[1].expId: duplicate experiment id 1 (also experiments[0])"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": []},
                           {"expName": "a", "expId": 2, "activities": []}]})",
       "experiments[1].expName: duplicate experiment name \"a\" (also experiments[0])"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [
           {"activityName": "d", "activityId": 1}, {"activityName": "e", "activityId": 1}]}]})",
       "experiments[0].activities[1].activityId: duplicate activity id 1 in experiment a (also "
       "experiments[0].activities[0])"},
      {R"({"experiments": [{"expName": "a", "expId": 1, "activities": [
           {"activityName": "d", "activityId": 1}, {"activityName": "d", "activityId": 2}]}]})",
       "experiments[0].activities[1].activityName: duplicate activity name \"d\" in experiment a"},
      {R"({"version": "1", "experiments": []})", "version: expected a positive integer, got \"1\""},
      {R"({"modified": 7, "experiments": []})", "modified: expected a string, got 7"},
  };
  for (const BadDoc& c : cases) {
    auto r = Registry::parse(c.json, "t.json");
    ASSERT_FALSE(r) << c.json;
    EXPECT_EQ(r.error().code(), Errc::kMalformed) << c.json;
    EXPECT_CONTAINS(r.error().message(), std::string("t.json: ") + c.message) << c.json;
  }
}

TEST(RegistryParse, PathOfADeepElementAsDocumented) {
  std::string doc = R"({"experiments": [)";
  for (int i = 1; i <= 3; ++i)
    doc += fmt::format(R"({{"expName": "e{}", "expId": {}, "activities": []}},)", i, i);
  doc += R"({"expName": "e4", "expId": 4, "activities": [)";
  doc += R"({"activityName": "a", "activityId": "x"}]}]})";
  auto r = Registry::parse(doc, "registry.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(),
            "registry.json: experiments[3].activities[0].activityId: expected a non-negative "
            "integer, got \"x\"");
}

TEST(RegistryParse, LongBadValuesAreCutShort) {
  const std::string long_name(500, 'x');
  auto r = Registry::parse(
      fmt::format(R"({{"experiments": [{{"expName": "a", "expId": "{}", "activities": []}}]}})",
                  long_name),
      "t");
  ASSERT_FALSE(r);
  EXPECT_LT(r.error().message().size(), 150u);
  EXPECT_CONTAINS(r.error().message(), "...");
}

TEST(RegistryParse, AcceptsAMinimalDocumentAndIgnoresUnknownKeys) {
  auto r = Registry::parse(
      R"({"experiments": [{"expName": "x", "expId": 1023, "extra": [1, 2],
           "activities": [{"activityName": "y", "activityId": 63, "note": "z"}]}],
          "version": 1, "producer": {"any": "thing"}})",
      "min");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->source(), "min");
  EXPECT_EQ(r->modified(), "");
  EXPECT_EQ(r->experiment_id("x"), 1023u);
  EXPECT_EQ(r->activity_id(1023, "y"), 63u);
  EXPECT_EQ(make_scitag(1023, *r->activity_id(1023, "y")), 65535u);
}

// ---- load ------------------------------------------------------------------------------

constexpr const char* kSmallDoc =
    R"({"experiments": [{"expName": "atlas", "expId": 2, "activities": [
         {"activityName": "default", "activityId": 1},
         {"activityName": "perfSONAR", "activityId": 2}]}],
        "version": 1, "modified": "2025-01-01T00:00:00+00:00"})";

std::string write_temp_file(const std::string& content) {
  std::string path = ::testing::TempDir() + "registry_test_XXXXXX";
  const int fd = ::mkstemp(path.data());
  EXPECT_GE(fd, 0);
  UniqueFd owner(fd);
  EXPECT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  return path;
}

TEST(RegistryLoad, Builtin) {
  auto r = Registry::load("builtin");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->source(), "builtin");
  EXPECT_EQ(r->experiments().size(), Registry::builtin().experiments().size());
}

TEST(RegistryLoad, FromAFile) {
  const std::string path = write_temp_file(kSmallDoc);
  auto r = Registry::load(path);
  ::unlink(path.c_str());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->source(), path);
  EXPECT_EQ(r->modified(), "2025-01-01T00:00:00+00:00");
  EXPECT_EQ(r->activity_id(2, "perfSONAR"), 2u);
}

TEST(RegistryLoad, AMalformedFileNamesTheFile) {
  const std::string path = write_temp_file(R"({"experiments": [{"expName": 1}]})");
  auto r = Registry::load(path);
  ::unlink(path.c_str());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kMalformed);
  EXPECT_CONTAINS(r.error().message(), path + ": experiments[0]");
}

TEST(RegistryLoad, AMissingFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "no-such-registry.json";
  auto r = Registry::load(path);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::error_code(ENOENT, std::system_category()));
  EXPECT_CONTAINS(r.error().message(), path);
  EXPECT_CONTAINS(r.error().message(), "No such file or directory");
}

TEST(RegistryLoad, ADirectoryIsNotARegistry) {
  auto r = Registry::load("/");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), std::error_code(EISDIR, std::system_category()));
}

TEST(RegistryLoad, EmptyOrUnsupportedSources) {
  auto empty = Registry::load("");
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);
  auto ftp = Registry::load("ftp://example.org/api.json");
  ASSERT_FALSE(ftp);
  EXPECT_EQ(ftp.error().code(), Errc::kUnsupported);
  EXPECT_CONTAINS(ftp.error().message(), "ftp:// is not supported");
}

// A tiny HTTP server on 127.0.0.1, port 0: answers one connection per canned response, in
// order, then stops. It gives up after a few seconds without a client, so a failing test
// cannot hang.
class LocalHttpServer {
 public:
  explicit LocalHttpServer(std::vector<std::string> responses) : responses_(std::move(responses)) {
    auto listener = net::listen_tcp({*IpAddress::parse("127.0.0.1"), 0}, 4);
    EXPECT_TRUE(listener.has_value()) << listener.error().message();
    if (listener) listener_ = std::move(*listener);
    port_ = net::local_endpoint(listener_.get()).value_or(Endpoint{}).port;
    thread_ = std::thread([this] { serve(); });
  }
  ~LocalHttpServer() { join(); }

  // Waits until every response has been served (or the server gave up).
  void join() {
    if (thread_.joinable()) thread_.join();
  }

  std::string url(std::string_view path) const {
    return fmt::format("http://127.0.0.1:{}{}", port_, path);
  }
  // The request lines received ("GET /api.json HTTP/1.1"); read after join().
  const std::vector<std::string>& requests() const { return requests_; }

  static std::string response(std::string_view status, std::string_view body,
                              std::string_view extra_headers = "") {
    return fmt::format(
        "HTTP/1.1 {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Connection: close\r\n{}\r\n{}",
        status, body.size(), extra_headers, body);
  }

 private:
  static bool wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 5000) == 1;
  }

  void serve() {
    for (const std::string& reply : responses_) {
      if (!wait_readable(listener_.get())) return;
      UniqueFd conn(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!conn) return;
      std::string request;
      char buf[4096];
      while (request.find("\r\n\r\n") == std::string::npos && wait_readable(conn.get())) {
        const ssize_t n = ::read(conn.get(), buf, sizeof buf);
        if (n <= 0) break;
        request.append(buf, static_cast<std::size_t>(n));
      }
      requests_.push_back(request.substr(0, request.find("\r\n")));
      std::size_t sent = 0;
      while (sent < reply.size()) {
        const ssize_t n =
            ::send(conn.get(), reply.data() + sent, reply.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      ::shutdown(conn.get(), SHUT_WR);
      // Let the client read to the end before the socket closes.
      while (wait_readable(conn.get()) && ::read(conn.get(), buf, sizeof buf) > 0) {
      }
    }
  }

  std::vector<std::string> responses_;
  std::vector<std::string> requests_;
  UniqueFd listener_;
  std::uint16_t port_ = 0;
  std::thread thread_;
};

// A proxy from the environment must not intercept the loopback server.
void bypass_proxies() {
  ::setenv("no_proxy", "127.0.0.1,localhost", 1);
  ::setenv("NO_PROXY", "127.0.0.1,localhost", 1);
}

LoadOptions quick() {
  LoadOptions o;
  o.timeout_seconds = 5;
  return o;
}

TEST(RegistryLoad, FromAnHttpUrl) {
  bypass_proxies();
  LocalHttpServer server({LocalHttpServer::response("200 OK", kSmallDoc)});
  const std::string url = server.url("/api.json");
  auto r = Registry::load(url, quick());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->source(), url);
  EXPECT_EQ(r->experiment_id("atlas"), 2u);
  EXPECT_EQ(r->activity_id(2, "perfSONAR"), 2u);
  EXPECT_EQ(r->modified(), "2025-01-01T00:00:00+00:00");
}

TEST(RegistryLoad, FollowsARedirect) {
  bypass_proxies();
  // A relative Location: the same server answers both requests.
  LocalHttpServer server({LocalHttpServer::response("302 Found", "", "Location: /real.json\r\n"),
                          LocalHttpServer::response("200 OK", kSmallDoc)});
  auto r = Registry::load(server.url("/api.json"), quick());
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->experiment_id("atlas"), 2u);
  EXPECT_EQ(r->source(), server.url("/api.json"));
  server.join();
  ASSERT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.requests()[0], "GET /api.json HTTP/1.1");
  EXPECT_EQ(server.requests()[1], "GET /real.json HTTP/1.1");
}

TEST(RegistryLoad, AnHttpErrorStatusFails) {
  bypass_proxies();
  LocalHttpServer server({LocalHttpServer::response("404 Not Found", "{\"no\":1}")});
  const std::string url = server.url("/missing.json");
  auto r = Registry::load(url, quick());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
  EXPECT_CONTAINS(r.error().message(), url);
  EXPECT_CONTAINS(r.error().message(), "HTTP status 404");
  EXPECT_CONTAINS(r.error().message(), "--source builtin");
}

TEST(RegistryLoad, AMalformedHttpBodyNamesTheUrl) {
  bypass_proxies();
  LocalHttpServer server({LocalHttpServer::response("200 OK", "<html>oops</html>")});
  const std::string url = server.url("/api.json");
  auto r = Registry::load(url, quick());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kMalformed);
  EXPECT_CONTAINS(r.error().message(), url + ": not a JSON document");
}

TEST(RegistryLoad, AnUnreachableUrlSaysWhatToDo) {
  bypass_proxies();
  // A port that was free a moment ago: nothing listens there now.
  std::uint16_t port = 0;
  {
    auto s = net::open_tcp_socket(Family::kV4);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    ASSERT_TRUE(net::bind_to(s->get(), {*IpAddress::parse("127.0.0.1"), 0}));
    auto bound = net::local_endpoint(s->get());
    ASSERT_TRUE(bound.has_value()) << bound.error().message();
    port = bound->port;
  }
  const std::string url = fmt::format("http://127.0.0.1:{}/api.json", port);
  auto r = Registry::load(url, quick());
  ASSERT_FALSE(r);
  EXPECT_CONTAINS(r.error().message(), "cannot fetch registry " + url);
  EXPECT_CONTAINS(r.error().message(), "use --source builtin or a file");
}

}  // namespace
}  // namespace flowmark::scitags
