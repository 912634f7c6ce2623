#include "daemon/builtin.hpp"

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "daemon/backends/dashboard/dashboard_backend.hpp"
#include "daemon/backends/firefly/firefly_backend.hpp"
#include "daemon/backends/ipfix/ipfix_backend.hpp"
#ifdef FLOWMARK_HAVE_BPF
#include "daemon/backends/flowlabel/flowlabel_backend.hpp"
#endif
#ifdef FLOWMARK_HAVE_KAFKA
#include "daemon/backends/kafka/kafka_backend.hpp"
#endif
#include "daemon/backends/prometheus/prometheus_backend.hpp"
#include "daemon/backends/records/records_backend.hpp"
#include "daemon/backends/store/store_backend.hpp"
#include "daemon/common/tcp_info_reader.hpp"
#include "daemon/sources/api/api_source.hpp"
#include "daemon/sources/firefly/firefly_source.hpp"
#ifdef FLOWMARK_HAVE_BPF
#include "daemon/sources/kernel_events/kernel_events_source.hpp"
#endif
#include "daemon/sources/named_pipe/named_pipe_source.hpp"
#include "daemon/sources/observer/observer_source.hpp"
#include "daemon/sources/sockets/sockets_source.hpp"

namespace flowmark::daemon {

void register_builtin(SourceFactories& sources, BackendFactories& backends) {
  auto must = [](Result<void> r) {
    if (!r) {
      spdlog::critical("{}", r.error().message());
      std::abort();  // a programming error in this list
    }
  };
  // One sock_diag reader for both backends that report TCP state.
  auto reader = make_tcp_info_reader();

  must(register_named_pipe_source(sources));
  must(register_firefly_source(sources));
  must(register_sockets_source(sources));
  must(register_observer_source(sources));
  must(register_api_source(sources));
  must(register_firefly_backend(backends, reader, make_tcp_detail_reader()));
  must(register_prometheus_backend(backends, reader));
  must(register_records_backend(backends));
  must(register_ipfix_backend(backends));
  must(register_dashboard_backend(backends));
#ifdef FLOWMARK_HAVE_KAFKA
  must(register_kafka_backend(backends));
#endif
  must(register_store_backend(backends));
#ifdef FLOWMARK_HAVE_BPF
  must(register_flowlabel_backend(backends));
  must(register_kernel_events_source(sources));
#endif
}

}  // namespace flowmark::daemon
