// The `store` backend: every flow's record (collector::Record: the pipeline's joined start,
// ongoing and end events, with names and sites) upserted into a store — an embedded SQLite
// file or a PostgreSQL database (collector/store.hpp) — in batched transactions. A database
// that is down, full or unwritable is retried with exponential back-off while records wait
// in a bounded buffer (one per flow: a later record replaces the waiting one); past the
// bound new flows are dropped and counted.
//
// [backend.flows]
// type = "store"
// path = "/var/lib/flowmark/flows.db"   # SQLite; or: url = "postgresql://user@host/db"
// batch = 5000             # records per transaction
// flush_interval = 1000    # ms: write what waits at least this often
// buffer = 200000          # records held while the database cannot take them
// retention = 0            # days; flows that ended longer ago are deleted (0: keep all)
// retry_max = 30000        # ms: the longest wait between two attempts
//
// Counters: flowmark_store_records_total{backend,outcome} (written, coalesced,
// dropped_buffer_full, dropped_shutdown), flowmark_store_errors_total{backend,reason}
// (unavailable, full, unwritable, busy, schema, other), flowmark_store_deleted_total{backend},
// flowmark_store_buffered{backend} (gauge).
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_store_backend(BackendFactories& factories);

}  // namespace flowmark::daemon
