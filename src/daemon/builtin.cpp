#include "daemon/builtin.hpp"

#include <cstdlib>

#include <spdlog/spdlog.h>

#include "daemon/backends/firefly/firefly_backend.hpp"
#include "daemon/backends/records/records_backend.hpp"
#include "daemon/sources/firefly/firefly_source.hpp"
#include "daemon/sources/named_pipe/named_pipe_source.hpp"
#include "daemon/sources/observer/observer_source.hpp"

namespace flowmark::daemon {

void register_builtin(SourceFactories& sources, BackendFactories& backends) {
  auto must = [](Result<void> r) {
    if (!r) {
      spdlog::critical("{}", r.error().message());
      std::abort();  // a programming error in this list
    }
  };
  must(register_named_pipe_source(sources));
  must(register_firefly_source(sources));
  must(register_observer_source(sources));
  must(register_firefly_backend(backends));
  must(register_records_backend(backends));
}

}  // namespace flowmark::daemon
