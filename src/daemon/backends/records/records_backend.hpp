// The `records` backend: an audit trail, one JSON line per event appended to a file (the
// firefly JSON document, schema v1, without the syslog header, so the tools that read
// fireflies read these too). Reopened on SIGHUP for log rotation.
//
// [backend.audit]
// type = "records"
// path = "/var/log/flowmark/events.jsonl"   # "-": standard output
// flush = "batch"                           # "batch": after each batch; "event": each line
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_records_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
