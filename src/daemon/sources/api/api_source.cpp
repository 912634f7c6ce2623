#include "daemon/sources/api/api_source.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <civetweb.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/http_listen.hpp"
#include "daemon/sources/api/flow_request.hpp"
#include "flowmark/core/fd.hpp"
#include "flowmark/core/json.hpp"
#include "flowmark/core/log_limit.hpp"

namespace flowmark::daemon {
namespace {

using api::FlowRequest;
using api::RequestReject;

struct ApiOptions {
  Endpoint listen;
  std::string token;
  std::size_t max_body = 65536;
  int threads = 8;
};

// Every request's outcome, as counted (flowmark_api_requests_total{outcome}).
enum class Outcome : std::uint8_t {
  kOk,
  kBadJson,
  kUnknownState,
  kBadField,
  kMissingField,
  kBadMethod,
  kBadContentType,
  kTooLarge,
  kNotFound,
  kUnauthorized,
  kBusy,
};
constexpr std::size_t kOutcomes = static_cast<std::size_t>(Outcome::kBusy) + 1;

std::string_view to_string(Outcome o) noexcept {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kBadJson: return "bad_json";
    case Outcome::kUnknownState: return "unknown_state";
    case Outcome::kBadField: return "bad_field";
    case Outcome::kMissingField: return "missing_field";
    case Outcome::kBadMethod: return "bad_method";
    case Outcome::kBadContentType: return "bad_content_type";
    case Outcome::kTooLarge: return "too_large";
    case Outcome::kNotFound: return "not_found";
    case Outcome::kUnauthorized: return "unauthorized";
    case Outcome::kBusy: return "busy";
  }
  return "unknown";
}

Outcome outcome_of(RequestReject r) noexcept {
  switch (r) {
    case RequestReject::kBadJson: return Outcome::kBadJson;
    case RequestReject::kUnknownState: return Outcome::kUnknownState;
    case RequestReject::kBadField: return Outcome::kBadField;
    case RequestReject::kMissingField: return Outcome::kMissingField;
  }
  return Outcome::kBadField;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

int log_civetweb(const mg_connection*, const char* message) {
  spdlog::debug("civetweb: {}", message);
  return 1;  // handled: civetweb prints nothing itself
}

bool iequals_prefix(std::string_view text, std::string_view prefix) noexcept {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
  }
  return true;
}

// "application/json", with parameters ("; charset=utf-8") and in any case.
bool is_json_type(const char* header) noexcept {
  if (!header) return false;
  std::string_view t(header);
  while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
  if (!iequals_prefix(t, "application/json")) return false;
  t.remove_prefix(16);
  return t.empty() || t.front() == ';' || t.front() == ' ';
}

// Equal without an early exit: the time taken says nothing of where a guess went wrong.
bool same_secret(std::string_view a, std::string_view b) noexcept {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= unsigned(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

struct Route {
  std::string_view method, path, name;
};
constexpr std::array<Route, 4> kRoutes{{
    {"GET", "/", "the routes (this list)"},
    {"GET", "/dummy/start", "start a fixed test flow (TCP [::1]:2345 -> [::1]:5777)"},
    {"GET", "/dummy/end", "end the fixed test flow"},
    {"POST", "/flow", "a flow event (JSON: flowd-go's flow event or a firefly document)"},
}};

class ApiSource final : public Source {
 public:
  // Events parsed on civetweb's threads and not yet pushed on the loop: beyond this a request
  // waits for room (kRoomWait at most, then 503) rather than the queue growing.
  static constexpr std::size_t kHandOverLimit = 4096;
  static constexpr auto kRoomWait = std::chrono::seconds(10);

  ApiSource(std::string name, ApiOptions o, ServiceContext& ctx)
      : name_(std::move(name)),
        where_(fmt::format("[source.{}]", name_)),
        o_(std::move(o)),
        // A copy: civetweb's threads resolve names while a reload may replace the service's.
        registry_(ctx.registry ? *ctx.registry : scitags::Registry::builtin()) {
    for (std::size_t i = 0; i < kOutcomes; ++i) {
      outcomes_[i] = &ctx.counters.counter(
          "flowmark_api_requests_total",
          {{"source", name_}, {"outcome", std::string(to_string(static_cast<Outcome>(i)))}},
          "HTTP requests an api source answered, by outcome");
    }
  }
  ~ApiSource() override { stop(); }

  Result<void> start(EventLoop& loop, FlowSink& sink) override {
    if (server_) return {};
    sink_ = &sink;
    FM_TRY_VOID(check_civetweb_family(where_, o_.listen));
    wake_fd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    if (!wake_fd_) return fail_errno(where_ + ": eventfd");
    FM_TRY_VOID(loop.add_fd(wake_fd_.get(), EPOLLIN, [this](std::uint32_t) {
      std::uint64_t n;
      [[maybe_unused]] auto got = ::read(wake_fd_.get(), &n, sizeof n);
      take_handed_over();
    }));
    loop_ = &loop;
    stopping_.store(false);
    const std::string address = o_.listen.to_string();
    const std::string threads = std::to_string(o_.threads);
    mg_callbacks callbacks{};
    callbacks.begin_request = &ApiSource::on_request;
    callbacks.log_message = &log_civetweb;
    // No document_root: civetweb serves nothing itself. One request per connection (no
    // keep-alive), and a client that sends nothing for 10 s is cut off: a worker thread is
    // never held by an idle or slow client for long.
    const char* options[] = {"listening_ports",
                             address.c_str(),
                             "num_threads",
                             threads.c_str(),
                             "request_timeout_ms",
                             "10000",
                             "enable_keep_alive",
                             "no",
                             nullptr};
    server_ = mg_start(&callbacks, this, options);
    if (!server_) {
      loop.remove_fd(wake_fd_.get());
      loop_ = nullptr;
      return std::unexpected(listen_error(where_, o_.listen, "the HTTP server did not start"));
    }
    mg_server_port ports[4]{};
    const int n = mg_get_server_ports(server_, 4, ports);
    port_ = n > 0 ? static_cast<std::uint16_t>(ports[0].port) : o_.listen.port;
    spdlog::info("source {}: REST API on http://{}/ ({} threads{})", name_,
                 Endpoint{o_.listen.address, port_}.to_string(), o_.threads,
                 o_.token.empty() ? "" : ", bearer token required");
    return {};
  }

  void stop() noexcept override {
    if (!server_) return;
    {
      std::lock_guard lock(mutex_);
      stopping_.store(true);
    }
    room_.notify_all();                                   // requests waiting for room give up (503)
    stop_http_server(server_, o_.listen, port_, where_);  // joins civetweb's threads
    server_ = nullptr;
    if (loop_) {
      loop_->remove_fd(wake_fd_.get());
      if (wait_id_) {
        sink_->cancel_room_wait(wait_id_);
        wait_id_ = 0;
      }
      take_handed_over();  // what was accepted (answered 200) is not lost
    }
    loop_ = nullptr;
    std::lock_guard lock(log_mutex_);
    log_.flush();
  }

 private:
  static int on_request(mg_connection* conn) {
    auto* self = static_cast<ApiSource*>(mg_get_user_data(mg_get_context(conn)));
    try {
      return self->serve(conn);
    } catch (const std::exception& ex) {  // allocation failure
      spdlog::warn("source {}: request failed: {}", self->name_, ex.what());
      mg_printf(conn,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n");
      return 500;
    }
  }

  int serve(mg_connection* conn) {
    const mg_request_info* req = mg_get_request_info(conn);
    const std::string_view method = req->request_method ? req->request_method : "";
    const std::string_view path = req->local_uri ? req->local_uri : "/";
    if (!o_.token.empty()) {
      const char* auth = mg_get_header(conn, "Authorization");
      std::string_view given = auth ? auth : "";
      if (!iequals_prefix(given, "bearer ") || !same_secret(given.substr(7), o_.token)) {
        return refuse(conn, 401, Outcome::kUnauthorized,
                      auth ? "wrong bearer token" : "an Authorization: Bearer header is needed",
                      "WWW-Authenticate: Bearer realm=\"flowmark\"\r\n");
      }
    }
    const Route* route = nullptr;
    std::string allow;
    for (const auto& r : kRoutes) {
      if (r.path != path) continue;
      if (r.method == method || (method == "HEAD" && r.path == "/")) route = &r;
      allow += allow.empty() ? std::string(r.method) : ", " + std::string(r.method);
    }
    if (!route) {
      if (allow.empty()) {
        return refuse(conn, 404, Outcome::kNotFound,
                      fmt::format("no route {} (GET / lists them)", path));
      }
      return refuse(conn, 405, Outcome::kBadMethod,
                    fmt::format("{} {}: use {}", method, path, allow),
                    fmt::format("Allow: {}\r\n", allow));
    }
    if (route->path == "/") return answer(conn, 200, Outcome::kOk, routes_json(), method == "HEAD");
    if (route->path == "/flow") return post_flow(conn, *req);
    // The fixed test flow, as flowd-go's: its start now, its end now.
    FlowRequest dummy;
    auto& e = dummy.event;
    e.protocol = scitags::Protocol::kTcp;
    e.src = {IpAddress::parse("::1").value_or(IpAddress()), 2345};
    e.dst = {e.src.address, 5777};
    e.experiment = 1;  // default / default
    e.activity = 1;
    if (route->path == "/dummy/start") {
      e.state = scitags::FlowState::kStart;
      e.start_time = now_micros();
    } else {
      e.state = scitags::FlowState::kEnd;
      e.end_time = now_micros();
    }
    dummy.application = "flowmark";
    return submit(conn, dummy);
  }

  int post_flow(mg_connection* conn, const mg_request_info& req) {
    if (!is_json_type(mg_get_header(conn, "Content-Type"))) {
      const char* type = mg_get_header(conn, "Content-Type");
      discard_body(conn, req.content_length);
      return refuse(conn, 415, Outcome::kBadContentType,
                    fmt::format("Content-Type {}: send application/json",
                                type ? fmt::format("'{}'", type) : std::string("missing")));
    }
    if (req.content_length > static_cast<long long>(o_.max_body)) {
      discard_body(conn, req.content_length);
      return refuse(conn, 413, Outcome::kTooLarge,
                    fmt::format("a body of {} bytes: at most {} (max_body)", req.content_length,
                                o_.max_body));
    }
    // The body: Content-Length bytes, or (chunked) up to one byte past max_body.
    std::string body;
    body.resize(o_.max_body + 1);
    std::size_t got = 0;
    while (got < body.size()) {
      const int n = mg_read(conn, body.data() + got, body.size() - got);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got > o_.max_body) {
      discard_body(conn, -1);
      return refuse(conn, 413, Outcome::kTooLarge,
                    fmt::format("a body of more than {} bytes (max_body)", o_.max_body));
    }
    body.resize(got);
    thread_local api::FlowRequestParser parser;  // one per civetweb thread
    auto parsed = parser.parse(body, registry_);
    if (!parsed) {
      return refuse(conn, 400, outcome_of(parsed.error().reason), parsed.error().message);
    }
    return submit(conn, *parsed);
  }

  // Reads and drops what is left of the body (so that the answer reaches a client still
  // sending, rather than a reset), up to a bound: past it the connection is closed.
  void discard_body(mg_connection* conn, long long length) const {
    const std::size_t bound = std::max<std::size_t>(std::size_t{4} << 20, 4 * o_.max_body);
    if (length > static_cast<long long>(bound)) return;
    char sink[16384];
    std::size_t total = 0;
    while (total <= bound) {
      const int n = mg_read(conn, sink, sizeof sink);
      if (n <= 0) break;
      total += static_cast<std::size_t>(n);
    }
  }

  int submit(mg_connection* conn, const FlowRequest& r) {
    if (!hand_over(r.event)) {
      return refuse(conn, 503, Outcome::kBusy,
                    stopping_.load() ? "the service is stopping"
                                     : "the service's queue stayed full: try again later");
    }
    return answer(conn, 200, Outcome::kOk, api::flowd_go_json(r.event, r.application), false);
  }

  int refuse(mg_connection* conn, int status, Outcome outcome, std::string_view message,
             std::string_view extra_headers = {}) {
    std::string body = R"({"outcome":")";
    body += to_string(outcome);
    body += R"(","message":)";
    append_json_string(body, is_valid_utf8(message) ? message : "(not UTF-8)");
    body += "}\n";
    {
      std::lock_guard lock(log_mutex_);
      log_.log(spdlog::level::warn, "source {}: refused ({}): {}", name_, to_string(outcome),
               message);
    }
    return answer(conn, status, outcome, body, false, extra_headers);
  }

  int answer(mg_connection* conn, int status, Outcome outcome, std::string_view body, bool head,
             std::string_view extra_headers = {}) {
    outcomes_[static_cast<std::size_t>(outcome)]->fetch_add(1, std::memory_order_relaxed);
    const std::string_view reason = reason_phrase(status);
    const std::string head_text = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
        "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n{}"
        "Connection: close\r\n\r\n",
        status, reason, body.size(), extra_headers);
    mg_write(conn, head_text.data(), head_text.size());
    if (!head && !body.empty()) mg_write(conn, body.data(), body.size());
    return status;
  }

  static std::string routes_json() {
    std::string out = R"({"ApiRoutes":[)";
    for (const auto& r : kRoutes) {
      if (out.back() == '}') out += ',';
      out += R"({"method":)";
      append_json_string(out, r.method);
      out += R"(,"path":)";
      append_json_string(out, r.path);
      out += R"(,"name":)";
      append_json_string(out, r.name);
      out += '}';
    }
    out += "]}\n";
    return out;
  }

  // From a civetweb thread: the event joins the queue for the loop (waiting while it is
  // full). False: stopping, or no room within kRoomWait.
  bool hand_over(const FlowEvent& e) {
    bool first = false;
    {
      std::unique_lock lock(mutex_);
      const bool room = room_.wait_for(lock, kRoomWait, [&] {
        return handed_.size() < kHandOverLimit || stopping_.load(std::memory_order_relaxed);
      });
      if (!room || stopping_.load(std::memory_order_relaxed)) return false;
      first = handed_.empty();
      handed_.push_back(e);
    }
    if (first) wake();
    return true;
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto put = ::write(wake_fd_.get(), &one, sizeof one);
  }

  // On the loop: pushes what the HTTP threads handed over.
  void take_handed_over() {
    // Back-pressure: an HTTP client is a lossless source (it can be slowed). Events are taken
    // from handed_ only while every backend's queue has room; the rest stay there, so the HTTP
    // threads wait on room_ (up to kRoomWait, then 503) and clients are slowed, not dropped.
    // The pipeline calls back when there is room again. In stop() everything is pushed.
    const bool all = stopping_.load(std::memory_order_relaxed);
    bool more = false;
    {
      std::lock_guard lock(mutex_);
      std::size_t n = handed_.size();
      if (!all && !sink_->has_room()) n = 0;
      // At most a queue's worth past has_room(): queues exceed their capacity by that at most.
      n = std::min(n, kTakeAtOnce);
      taking_.assign(std::make_move_iterator(handed_.begin()),
                     std::make_move_iterator(handed_.begin() + static_cast<std::ptrdiff_t>(n)));
      handed_.erase(handed_.begin(), handed_.begin() + static_cast<std::ptrdiff_t>(n));
      more = !handed_.empty();
    }
    if (!taking_.empty()) room_.notify_all();
    for (const auto& e : taking_) sink_->push_lossless(e);
    taking_.clear();
    if (!more) return;
    if (all) return take_handed_over();
    // The eventfd fires only when handed_ goes from empty to non-empty: come back ourselves,
    // at once if there is room (after the loop's other work), or when the pipeline has room.
    if (wait_id_ == 0) {
      wait_id_ = sink_->when_room([this] {
        wait_id_ = 0;
        wake();  // through the eventfd: never take_handed_over() inside when_room()
      });
    }
  }

  static constexpr std::size_t kTakeAtOnce = 1024;
  std::uint64_t wait_id_ = 0;

  std::string name_;
  std::string where_;
  ApiOptions o_;
  scitags::Registry registry_;
  EventLoop* loop_ = nullptr;
  FlowSink* sink_ = nullptr;
  mg_context* server_ = nullptr;
  std::uint16_t port_ = 0;
  UniqueFd wake_fd_;
  std::mutex mutex_;
  std::condition_variable room_;
  std::vector<FlowEvent> handed_, taking_;
  std::atomic<bool> stopping_{false};
  std::array<std::atomic<std::uint64_t>*, kOutcomes> outcomes_{};
  std::mutex log_mutex_;
  // At most 10 refused requests a second on stderr.
  LogLimiter log_{10, std::chrono::seconds(1), LogLimiter::Report::kLine, [this](std::uint64_t n) {
                    return fmt::format("source {}: {} more refused request(s) not shown", name_, n);
                  }};
};

}  // namespace

Result<void> register_api_source(SourceFactories& factories) {
  return factories.add(
      "api", "flows started and ended by HTTP requests (flowd-go's REST API plugin)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Source>> {
        ApiOptions o;
        FM_TRY(auto listen, s.string("listen", "127.0.0.1:7777"));
        auto endpoint = parse_listen(listen);
        if (!endpoint) return s.error("listen", endpoint.error().message());
        o.listen = *endpoint;
        FM_TRY(o.token, s.string("token", ""));
        if (o.token.empty() && !o.listen.address.is_loopback()) {
          return s.error("token",
                         fmt::format("empty while listen = \"{}\" is not a loopback address: "
                                     "anyone who reaches the port could announce flows — set a "
                                     "bearer token, or listen on 127.0.0.1 / [::1]",
                                     listen));
        }
        for (char c : o.token) {
          if (c <= ' ' || c == 127) {
            return s.error("token",
                           "spaces and control characters cannot be sent in an "
                           "Authorization header");
          }
        }
        FM_TRY(auto max_body, s.integer("max_body", 65536, 256, 16 << 20));
        o.max_body = static_cast<std::size_t>(max_body);
        FM_TRY(auto threads, s.integer("threads", 8, 1, 256));
        o.threads = static_cast<int>(threads);
        return std::make_unique<ApiSource>(s.name(), std::move(o), ctx);
      });
}

}  // namespace flowmark::daemon
