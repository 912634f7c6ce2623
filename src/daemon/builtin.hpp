// The one explicit list of the sources and backends built into flowmarkd.
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

void register_builtin(SourceFactories& sources, BackendFactories& backends);

}  // namespace flowmark::daemon
