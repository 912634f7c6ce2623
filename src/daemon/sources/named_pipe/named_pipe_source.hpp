// The `named-pipe` source (flowd's np_api): one flow event per line written to a FIFO.
//
// [source.pipe]
// type = "named-pipe"
// path = "/run/flowmark/flowmark.pipe"   # flowd's default when read from a flowd config
// mode = "0660"                          # never world-writable unless asked
// group = "flowmark"                     # group allowed to write ("" keeps the process's)
// max_line = 4096                        # longer lines are rejected
//
// The FIFO is opened for reading only, non-blocking, and reopened (new reader first, then
// the old closed, so writers never find it without a reader) when its last writer goes
// away: that is how a writer that died mid-line is noticed — its partial line is rejected
// ("incomplete_line") instead of being glued to the next writer's line. Lines split
// across reads are reassembled. Blank lines are skipped (writers may use one as a probe).
#pragma once

#include "flowmark/daemon/factory.hpp"

namespace flowmark::daemon {

Result<void> register_named_pipe_source(SourceFactories& factories);

}  // namespace flowmark::daemon
