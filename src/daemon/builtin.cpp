#include "daemon/builtin.hpp"

#include <cstdlib>
#include <mutex>

#include <spdlog/spdlog.h>

#include "daemon/backends/firefly/firefly_backend.hpp"
#ifdef FLOWMARK_HAVE_BPF
#include "daemon/backends/flowlabel/flowlabel_backend.hpp"
#endif
#include "daemon/backends/prometheus/prometheus_backend.hpp"
#include "daemon/backends/records/records_backend.hpp"
#include "daemon/sources/firefly/firefly_source.hpp"
#ifdef FLOWMARK_HAVE_BPF
#include "daemon/sources/kernel_events/kernel_events_source.hpp"
#endif
#include "daemon/sources/named_pipe/named_pipe_source.hpp"
#include "daemon/sources/observer/observer_source.hpp"
#include "daemon/sources/sockets/sockets_source.hpp"
#include "flowmark/daemon/sock_diag.hpp"

namespace flowmark::daemon {
namespace {

// The TCP state of a live flow from netlink sock_diag (INET_DIAG_INFO), for the backends
// that report it (Prometheus flow_tcp_*, `ongoing` fireflies). One netlink socket per
// reader, opened on first use; calls from several backend threads are serialised.
class NetlinkTcpInfo {
 public:
  std::optional<scitags::TcpInfo> operator()(const FlowEvent& e) {
    if (e.protocol != scitags::Protocol::kTcp) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (!diag_) {
      auto d = SockDiag::open();
      if (!d) {
        if (!warned_) spdlog::warn("TCP information unavailable: {}", d.error().message());
        warned_ = true;
        return std::nullopt;
      }
      diag_.emplace(std::move(*d));
    }
    // The flow's source is usually this host; a flow announced from the other side is
    // found the other way round.
    for (int side = 0; side < 2; ++side) {
      auto r = side == 0 ? diag_->tcp_info(e.src, e.dst) : diag_->tcp_info(e.dst, e.src);
      if (r && r->has_value()) return *r;  // Result<optional<TcpInfo>>
    }
    return std::nullopt;
  }

 private:
  std::mutex mutex_;
  std::optional<SockDiag> diag_;
  bool warned_ = false;
};

}  // namespace

void register_builtin(SourceFactories& sources, BackendFactories& backends) {
  auto must = [](Result<void> r) {
    if (!r) {
      spdlog::critical("{}", r.error().message());
      std::abort();  // a programming error in this list
    }
  };
  auto tcp_info = std::make_shared<NetlinkTcpInfo>();
  auto reader = [tcp_info](const FlowEvent& e) { return (*tcp_info)(e); };

  must(register_named_pipe_source(sources));
  must(register_firefly_source(sources));
  must(register_sockets_source(sources));
  must(register_observer_source(sources));
  must(register_firefly_backend(backends, reader));
  must(register_prometheus_backend(backends, reader));
  must(register_records_backend(backends));
#ifdef FLOWMARK_HAVE_BPF
  must(register_flowlabel_backend(backends));
  must(register_kernel_events_source(sources));
#endif
}

}  // namespace flowmark::daemon
