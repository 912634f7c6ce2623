// prom_driver — runs the real PrometheusBackend on one real loopback TCP connection, for
// tests/integration/test_prometheus.py (until flowmarkd itself can be pointed at it).
//
//   prom_driver [LISTEN] [EXP] [ACT]      (LISTEN defaults to 127.0.0.1:0)
//
// Prints, one line each:  "listening PORT", then
// "flow SRC_ADDR SRC_PORT DST_ADDR DST_PORT" once the start event (with the connection's
// TCP_INFO from getsockopt) has been pushed. Then reads commands from stdin:
//   end   push the end event for the flow; prints "ended"
//   quit  (or end of input) stop the backend and exit 0
// Every poll interval (1 s) it sends a few KiB over the connection and refreshes the
// flow's values through the backend's reader, which calls getsockopt(TCP_INFO) too: real
// kernel numbers, no sock_diag.
#include <fmt/format.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "daemon/backends/prometheus/prometheus_backend.hpp"
#include "flowmark/core/log.hpp"
#include "flowmark/net/socket.hpp"
#include "flowmark/netclient/sock_diag.hpp"

namespace {

using flowmark::Endpoint;
using flowmark::IpAddress;
using flowmark::UniqueFd;
namespace net = flowmark::net;
using flowmark::daemon::Counters;
using flowmark::daemon::PrometheusBackend;
using flowmark::scitags::FlowEvent;
using flowmark::scitags::FlowState;
using flowmark::scitags::TcpInfo;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "prom_driver: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

std::optional<TcpInfo> read_tcp_info(int fd) {
  tcp_info k{};
  socklen_t len = sizeof k;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &k, &len) != 0) return std::nullopt;
  return flowmark::netclient::tcp_info_from_bytes(&k, len);
}

// `r`'s value, or exit 1 with its error.
template <typename T>
T or_die(flowmark::Result<T> r) {
  if (!r) {
    std::fprintf(stderr, "prom_driver: %s\n", r.error().message().c_str());
    std::exit(1);
  }
  return std::move(*r);
}

// Sends a little and drains what arrived, so that the counters move between scrapes.
void exchange(int client, int server) {
  std::vector<char> buf(16384, 'x');
  if (::send(client, buf.data(), 4096, MSG_DONTWAIT) < 0 && errno != EAGAIN) die("send");
  if (::send(server, buf.data(), 1024, MSG_DONTWAIT) < 0 && errno != EAGAIN) die("send");
  while (::recv(server, buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
  }
  while (::recv(client, buf.data(), buf.size(), MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  flowmark::init_logging("prom_driver", flowmark::LogLevel::kInfo);  // stderr: stdout is ours
  std::string listen = argc > 1 ? argv[1] : "127.0.0.1:0";
  std::uint32_t exp = argc > 2 ? static_cast<std::uint32_t>(std::stoul(argv[2])) : 2;
  std::uint32_t act = argc > 3 ? static_cast<std::uint32_t>(std::stoul(argv[3])) : 17;

  // The connection: a listener on loopback, a client connected to it, the accepted end.
  UniqueFd listener = or_die(net::listen_tcp({*IpAddress::parse("127.0.0.1"), 0}, 1));
  const Endpoint server_end = or_die(net::local_endpoint(listener.get()));
  UniqueFd client_fd = or_die(net::connect_tcp(server_end));
  UniqueFd server_fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server_fd) die("accept");
  const int client = client_fd.get();
  const int server = server_fd.get();
  exchange(client, server);

  Counters counters;
  auto& events = counters.counter("flowmark_source_events_total", {{"source", "driver"}},
                                  "Flow events pushed by a source");
  PrometheusBackend::Options o;
  auto endpoint = PrometheusBackend::parse_listen(listen);
  if (!endpoint) {
    std::fprintf(stderr, "prom_driver: %s\n", endpoint.error().message().c_str());
    return 2;
  }
  o.listen = *endpoint;
  o.poll_interval = std::chrono::seconds(1);
  o.counters = &counters;
  // The reader seam, with getsockopt instead of sock_diag: this process owns the socket.
  o.reader = [client](const FlowEvent&) { return read_tcp_info(client); };
  PrometheusBackend backend(std::move(o), "[backend.prometheus]");
  if (auto r = backend.start(); !r) {
    std::fprintf(stderr, "prom_driver: %s\n", r.error().message().c_str());
    return 1;
  }
  std::cout << "listening " << backend.port() << std::endl;

  FlowEvent e;
  e.state = FlowState::kStart;
  e.src = or_die(net::local_endpoint(client));
  e.dst = server_end;
  e.experiment = exp;
  e.activity = act;
  e.tcp = read_tcp_info(client);
  backend.on_event(e);
  events.fetch_add(1);
  std::cout << fmt::format("flow {} {} {} {}", e.src.address.to_string(), e.src.port,
                           e.dst.address.to_string(), e.dst.port)
            << std::endl;

  // This thread plays the backend's worker: events and ticks, one at a time.
  const int tick_ms = static_cast<int>(backend.tick_interval().count());
  std::string input;  // read() ourselves: std::cin's buffer would hide lines from poll()
  for (bool running = true; running;) {
    pollfd p{STDIN_FILENO, POLLIN, 0};
    int n = ::poll(&p, 1, tick_ms);
    if (n < 0 && errno != EINTR) die("poll");
    if (n <= 0) {
      exchange(client, server);
      backend.on_tick();
      continue;
    }
    char buf[256];
    ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
    if (got <= 0) break;  // end of input
    input.append(buf, static_cast<std::size_t>(got));
    for (std::size_t nl; running && (nl = input.find('\n')) != std::string::npos;) {
      std::string command = input.substr(0, nl);
      input.erase(0, nl + 1);
      if (command == "quit") {
        running = false;
      } else if (command == "end") {
        FlowEvent end = e;
        end.state = FlowState::kEnd;
        end.tcp = read_tcp_info(client);
        backend.on_event(end);
        events.fetch_add(1);
        std::cout << "ended" << std::endl;
      } else {
        std::fprintf(stderr, "prom_driver: unknown command '%s' (end, quit)\n", command.c_str());
      }
    }
  }
  backend.stop();
  return 0;
}
