#include "daemon/backends/dashboard/dashboard_backend.hpp"

#include <civetweb.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "daemon/common/http_listen.hpp"
#include "flowmark/collector/record.hpp"
#include "flowmark/net/socket.hpp"

namespace flowmark::daemon {
namespace {

// The page is a handful of small files; more than this in static_dir is a wrong directory.
constexpr std::uintmax_t kMaxStaticBytes = 16u << 20;

std::string_view content_type(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  return "application/octet-stream";
}

int log_civetweb(const mg_connection*, const char* message) {
  spdlog::debug("civetweb: {}", message);
  return 1;  // handled: civetweb prints nothing itself
}

void send(mg_connection* conn, int status, std::string_view reason, std::string_view type,
          std::string_view body, bool head, std::string_view cache) {
  mg_printf(conn,
            "HTTP/1.1 %d %.*s\r\nContent-Type: %.*s\r\nContent-Length: %zu\r\n"
            "Cache-Control: %.*s\r\nX-Content-Type-Options: nosniff\r\n"
            "Connection: close\r\n\r\n",
            status, static_cast<int>(reason.size()), reason.data(), static_cast<int>(type.size()),
            type.data(), body.size(), static_cast<int>(cache.size()), cache.data());
  if (!head && !body.empty()) mg_write(conn, body.data(), body.size());
}

}  // namespace

DashboardBackend::DashboardBackend(Options options, std::string name, ServiceContext& context)
    : options_(std::move(options)),
      name_(std::move(name)),
      where_(fmt::format("[backend.{}]", name_)),
      registry_(context.registry ? std::make_shared<const scitags::Registry>(*context.registry)
                                 : nullptr),
      sites_(context.sites),
      state_(options_.limits) {
  auto& c = context.counters;
  const char* help_requests = "HTTP requests a dashboard backend answered, by outcome";
  served_ = &c.counter("flowmark_dashboard_requests_total", {{"backend", name_}, {"outcome", "ok"}},
                       help_requests);
  not_found_ = &c.counter("flowmark_dashboard_requests_total",
                          {{"backend", name_}, {"outcome", "not_found"}}, help_requests);
  refused_ = &c.counter("flowmark_dashboard_requests_total",
                        {{"backend", name_}, {"outcome", "bad_method"}}, help_requests);
  const char* help_folded =
      "Events a dashboard backend accounted past one of its bounds, by the bound reached";
  untracked_ = &c.counter("flowmark_dashboard_folded_total",
                          {{"backend", name_}, {"reason", "max_open_flows"}}, help_folded);
  folded_pairs_ = &c.counter("flowmark_dashboard_folded_total",
                             {{"backend", name_}, {"reason", "max_site_pairs"}}, help_folded);
  folded_series_ = &c.counter("flowmark_dashboard_folded_total",
                              {{"backend", name_}, {"reason", "max_experiments"}}, help_folded);
  failed_ =
      &c.counter("flowmark_dashboard_failed_total", {{"backend", name_}, {"reason", "memory"}},
                 "Events a dashboard backend could not account, by reason");
}

DashboardBackend::~DashboardBackend() { stop(); }

Result<std::unique_ptr<DashboardBackend>> DashboardBackend::from_config(Section& s,
                                                                        ServiceContext& ctx) {
  Options o;
  FM_TRY(auto listen, s.string("listen", "127.0.0.1:8750"));
  auto endpoint = parse_listen(listen);
  if (!endpoint) return s.error("listen", endpoint.error().message());
  o.listen = *endpoint;
  FM_TRY(o.static_dir, s.string("static_dir", "/usr/share/flowmark/dashboard"));
  FM_TRY(auto window, s.integer("window", 15, 1, 24 * 60));
  FM_TRY(auto bin, s.integer("bin", 10, 1, 3600));
  if (window * 60 < bin) {
    return s.error("bin", fmt::format("{} s is longer than the window ({} min): choose a bin of "
                                      "at most {} s",
                                      bin, window, window * 60));
  }
  if (window * 60 / bin > 8640) {
    return s.error("bin", fmt::format("{} s bins make {} bins in a {} min window (at most 8640): "
                                      "choose a wider bin",
                                      bin, window * 60 / bin, window));
  }
  o.limits.bin = bin * 1'000'000;
  o.limits.bins = static_cast<std::size_t>(window * 60 / bin);
  FM_TRY(auto latest, s.integer("latest", 50, 1, 1000));
  o.limits.latest = static_cast<std::size_t>(latest);
  FM_TRY(auto top, s.integer("top_pairs", 10, 1, 1000));
  o.limits.top_pairs = static_cast<std::size_t>(top);
  FM_TRY(auto open, s.integer("max_open_flows", 1'000'000, 1, 100'000'000));
  o.limits.max_open = static_cast<std::size_t>(open);
  return std::make_unique<DashboardBackend>(std::move(o), s.name(), ctx);
}

Result<void> DashboardBackend::load_files() {
  namespace fs = std::filesystem;
  const fs::path dir(options_.static_dir);
  std::error_code ec;
  if (!fs::is_regular_file(dir / "index.html", ec)) {
    return fail(Errc::kNotFound,
                fmt::format("{} static_dir: {} has no index.html — install the flowmark package "
                            "(it puts the page in /usr/share/flowmark/dashboard) or point "
                            "static_dir at a build's dashboard directory",
                            where_, options_.static_dir));
  }
  std::uintmax_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;  // no subdirectories: the page is flat
    const auto name = entry.path().filename().string();
    if (name.starts_with('.')) continue;
    total += entry.file_size(ec);
    if (total > kMaxStaticBytes) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{} static_dir: {} holds more than {} MB: is it the dashboard's "
                              "directory?",
                              where_, options_.static_dir, kMaxStaticBytes >> 20));
    }
    std::ifstream in(entry.path(), std::ios::binary);
    std::ostringstream body;
    body << in.rdbuf();
    if (!in) {
      return std::unexpected(
          Error(std::error_code(EIO, std::generic_category()),
                fmt::format("{} static_dir: cannot read {}", where_, entry.path().string())));
    }
    files_["/" + name] = File{std::string(content_type(entry.path())), std::move(body).str()};
  }
  if (ec) {
    return std::unexpected(
        Error(ec, fmt::format("{} static_dir: cannot list {}", where_, options_.static_dir)));
  }
  return {};
}

Result<void> DashboardBackend::start() {
  if (server_) return {};
  FM_TRY_VOID(load_files());
  const auto& listen = options_.listen;
  const std::string address = listen.to_string();
  FM_TRY_VOID(check_civetweb_family(where_, listen));
  mg_callbacks callbacks{};
  callbacks.begin_request = &DashboardBackend::on_request;
  callbacks.log_message = &log_civetweb;
  // No document_root: civetweb serves nothing from disk itself (no CGI, no directory
  // listings); every request goes to on_request.
  const char* options[] = {"listening_ports",    address.c_str(), "num_threads", "2",
                           "request_timeout_ms", "10000",         nullptr};
  server_ = mg_start(&callbacks, this, options);
  if (!server_) {
    return std::unexpected(listen_error(where_, listen, "the HTTP server did not start"));
  }
  mg_server_port ports[4]{};
  int n = mg_get_server_ports(server_, 4, ports);
  port_ = n > 0 ? static_cast<std::uint16_t>(ports[0].port) : listen.port;
  spdlog::info("{}: dashboard on http://{}/", where_, Endpoint{listen.address, port_}.to_string());
  return {};
}

int DashboardBackend::on_request(mg_connection* conn) {
  auto* self = static_cast<DashboardBackend*>(mg_get_user_data(mg_get_context(conn)));
  try {
    return self->serve(conn);
  } catch (const std::exception& ex) {
    spdlog::warn("{}: request failed: {}", self->where_, ex.what());
    send(conn, 500, "Internal Server Error", "text/plain", "internal error\n", false, "no-store");
    return 500;
  }
}

int DashboardBackend::serve(mg_connection* conn) {
  const mg_request_info* req = mg_get_request_info(conn);
  const std::string_view method = req->request_method ? req->request_method : "";
  std::string_view path = req->local_uri ? req->local_uri : "/";
  const bool head = method == "HEAD";
  if (method != "GET" && !head) {
    refused_->fetch_add(1, std::memory_order_relaxed);
    send(conn, 405, "Method Not Allowed", "text/plain", "only GET and HEAD\n", head, "no-store");
    return 405;
  }
  if (path == "/api/summary") {
    const std::string body = state_.summary_json(options_.clock());
    served_->fetch_add(1, std::memory_order_relaxed);
    send(conn, 200, "OK", "application/json", body, head, "no-store");
    return 200;
  }
  if (path == "/") path = "/index.html";
  auto it = files_.find(path);
  if (it == files_.end()) {
    not_found_->fetch_add(1, std::memory_order_relaxed);
    send(conn, 404, "Not Found", "text/plain", "not found\n", head, "no-store");
    return 404;
  }
  served_->fetch_add(1, std::memory_order_relaxed);
  send(conn, 200, "OK", it->second.type, it->second.body, head, "no-cache");
  return 200;
}

void DashboardBackend::on_event(const FlowEvent& e) noexcept {
  try {
    auto sites = sites_ ? sites_->get() : nullptr;
    collector::Record r = collector::make_record(e, registry_.get(), sites.get());
    const std::uint64_t volume = r.volume();
    const std::uint64_t added = volume > e.previous_volume ? volume - e.previous_volume : 0;
    state_.add(r, added, e.state == scitags::FlowState::kEnd, options_.clock());
  } catch (const std::exception& ex) {  // allocation failure: the event is not accounted
    failed_->fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("{}: event not accounted: {}", where_, ex.what());
  }
}

void DashboardBackend::on_tick() noexcept {
  untracked_->store(state_.untracked(), std::memory_order_relaxed);
  folded_pairs_->store(state_.folded_pairs(), std::memory_order_relaxed);
  folded_series_->store(state_.folded_series(), std::memory_order_relaxed);
}

void DashboardBackend::stop() noexcept {
  if (!server_) return;
  on_tick();
  // Knocks on the port while civetweb stops (milliseconds, not its 2 s poll), joins its
  // threads: no request runs after this.
  stop_http_server(server_, options_.listen, port_, where_);
  server_ = nullptr;
}

Result<void> register_dashboard_backend(BackendFactories& factories) {
  return factories.add(
      "dashboard",
      "a live web page of the flows received: throughput by experiment, top site pairs, latest "
      "flows (HTTP, loopback by default)",
      [](Section& s, ServiceContext& ctx) -> Result<std::unique_ptr<Backend>> {
        FM_TRY(auto b, DashboardBackend::from_config(s, ctx));
        return std::unique_ptr<Backend>(std::move(b));
      });
}

}  // namespace flowmark::daemon
