// flowmark::capture — one capture read by this thread and observed by N worker threads
// (`flowmark observe --workers N`), each with its own Observer (flow table, timers).
//
// The reader hands each frame to worker flow_hash(frame) % N (both directions of a flow, its
// fragments and the ICMP errors quoting it go to one worker), in batches of up to 1024 frames
// through a bounded queue per worker (a fixed pool of batches, no allocation per frame).
// Frames of a mapped file go by pointer; others are copied into the batch's buffer.
// The packet clock stays the whole capture's: a frame stamped before the largest time seen
// so far is handed over at that time (counted in late_packets here, as the observer would),
// and with every batch each worker gets the capture's clock (Observer::advance_clock), so
// timers fire as they would with one observer. At the end every worker's clock is moved to
// the capture's last time, then the observer finishes, then done(i) runs in its thread.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <span>
#include <vector>

#include "flowmark/capture/capture.hpp"
#include "flowmark/core/result.hpp"
#include "flowmark/observe/observer.hpp"

namespace flowmark::capture {

struct WorkerFeedStats {
  std::vector<std::uint64_t> late_packets;  // per worker: frames handed over at the clock
  std::vector<std::uint64_t> frames;        // per worker: frames handed over
  std::vector<std::size_t> active;          // per worker: flows held before finish()
  std::vector<double> cpu_seconds;          // per worker: its thread's CPU time
  double reader_cpu_seconds = 0;            // the reading thread's (reading, hashing)
  bool shared_reading = false;              // no reader thread: the workers read the file
  std::uint64_t chunks = 0;                 // shared reading: chunks taken
  std::uint64_t chunks_read_again = 0;      // of which the first record was guessed wrong
};

// Reads `src` to its end (or break_loop()), observing with `workers` (one thread each).
// progress(frames so far, bytes read) is called from this thread now and then. A read error ends
// the input: the frames before it are still observed, and the error is returned after the workers
// have finished.
Result<void> observe_with_workers(Capture& src, std::span<observe::Observer* const> workers,
                                  const std::function<void(std::size_t)>& done,
                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress,
                                  WorkerFeedStats& stats);

}  // namespace flowmark::capture
