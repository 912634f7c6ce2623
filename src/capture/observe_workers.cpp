#include "observe_workers.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>

#include "flowmark/capture/file_parser.hpp"
#include "flowmark/observe/flow_hash.hpp"

namespace flowmark::capture {
namespace {

double thread_cpu_seconds() noexcept {
  timespec ts{};
  (void)clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

constexpr std::size_t kBatch = 1024;
constexpr std::size_t kBatchesPerWorker = 6;  // the queue's bound (and the pool's size)

struct Batch {
  observe::LinkType link = observe::LinkType::kEthernet;
  std::size_t n = 0;
  observe::Nanos clock = 0;  // the capture's clock when handed over
  bool end = false;          // the last message: advance to `clock`, finish
  std::array<observe::FrameRef, kBatch> frames;
  std::vector<std::byte> bytes;          // copies, when the capture's frames do not outlive a batch
  std::array<std::size_t, kBatch> at{};  // offsets of the copies in bytes
};

// A bounded single-producer single-consumer hand-over of batches, and the way back of the
// empty ones.
class Channel {
 public:
  void push(Batch* b) {
    std::unique_lock lock(mu_);
    ++pushed_;
    full_.push_back(b);
    if (waiting_) cv_.notify_all();
  }
  Batch* pop_full() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.wait(lock, [&] { return !full_.empty(); });
    --waiting_;
    Batch* b = full_.front();
    full_.pop_front();
    return b;
  }
  // After the worker is through with a batch it popped (or for a new one, into the pool).
  void give_back(Batch* b, bool done = false) {
    std::unique_lock lock(mu_);
    if (done) ++done_;
    free_.push_back(b);
    if (waiting_) cv_.notify_all();
  }
  // Until the worker has observed every batch pushed (it then waits for the next): its
  // Observer may be used from this thread until the next push.
  void wait_drained() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.wait(lock, [&] { return done_ == pushed_; });
    --waiting_;
  }
  Batch* take_free() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.wait(lock, [&] { return !free_.empty(); });
    --waiting_;
    Batch* b = free_.back();
    free_.pop_back();
    return b;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch*> full_;
  std::vector<Batch*> free_;
  std::uint64_t pushed_ = 0, done_ = 0;
  int waiting_ = 0;  // threads in a wait: only then is there someone to wake
};

// --- Shared reading (a pcap file read with pread(2)): no reader thread -------------------
// The file is cut into chunks of kChunk bytes. A chunk is indexed by whichever worker is free
// (chunks in order, at most kSlotsPerWorker × N ahead of the slowest worker): it reads the
// chunk with pread(2) into the buffer of its slot in the ring (kPiece bytes at a time, each
// walked while it is in the cache; the buffers are reused, so their pages are touched once),
// walks the records that start in it (CaptureParser::set_window, set_range), hashes each
// frame and lists it, by pointer into the buffer, for its worker. The slot, and so its
// buffer, is free again once every worker has observed the chunk. A record that runs past
// the chunk's end is read on (kMargin, then more); if the buffer must move for that, the
// chunk is walked again. Its first record is a guess (the first plausible record header in
// it, as the parser's look-ahead lanes find theirs); the chunks are then checked in order: a
// chunk is taken when its guess is where the chain of records before it ends, else it is
// indexed again from there (time lost, never a frame). Each worker observes its frames chunk
// by chunk, in capture order, and then moves its clock to the capture's at the chunk's end.
// An ICMP error whose quoted flow and own addresses hash to two workers is listed with both:
// the quoted flow's worker, once it has observed every frame before, decides (its observer
// holds that flow or not) and the other waits for the decision.

// 1 MiB: two workers at 10,000 flows (one A/B batch, wall) took 0.58 s with 1 MiB chunks,
// 0.67 s with 4 MiB (a ring of larger buffers, colder for the copy) and 0.62 s with 256 KiB.
constexpr std::size_t kChunk = 1u << 20;
constexpr std::size_t kPiece = 256u << 10;  // read, then walked while in the cache
constexpr std::size_t kMargin = 64u << 10;  // read past the chunk's end with its last piece
// FLOWMARK_OBSERVE_CHUNK_BYTES (tests: many chunks from a small capture): a power of two from
// 4096 up, else kChunk.
std::size_t chunk_bytes() noexcept {
  const char* v = std::getenv("FLOWMARK_OBSERVE_CHUNK_BYTES");
  if (v == nullptr) return kChunk;
  char* end = nullptr;
  const unsigned long long b = std::strtoull(v, &end, 10);
  if (end == v || *end != '\0' || b < 4096 || b > (1ull << 30) || (b & (b - 1)) != 0) return kChunk;
  return static_cast<std::size_t>(b);
}
constexpr std::size_t kSlotsPerWorker = 4;
constexpr std::size_t kNone = ~std::size_t{0};

struct Entry {
  const std::byte* data;
  std::uint32_t len;
  enum Kind : std::uint8_t { kFrame, kDecide, kAwait } kind;
  bool late;               // stamped before an earlier frame of the chunk
  std::uint32_t decision;  // kDecide / kAwait: the index in Chunk::decisions
  observe::Nanos ts;       // the chunk's clock at this frame (largest time so far in it)
};

struct Chunk {
  enum State { kFree, kIndexing, kIndexed, kVerified } state = kFree;
  std::size_t index = kNone;
  std::size_t guess = 0;       // the first record's place the walk started from
  std::size_t next = 0;        // where the walk stopped: the first record at/after the chunk's end
  std::optional<Error> error;  // the walk met a corrupt record there (or a read error)
  observe::Nanos max_ts = std::numeric_limits<observe::Nanos>::min() / 2;
  observe::Nanos clock_in = 0;  // the capture's clock before the chunk (set when verified)
  std::vector<std::vector<Entry>> lists;  // per worker
  std::vector<std::uint8_t> decisions;    // 0 undecided, 1 quoted flow's worker, 2 other
  std::size_t consumed = 0;               // workers through with it
  std::uint64_t frames = 0;
  // The file's bytes [lo(held), lo(held) + filled): the listed frames point here.
  // Not zeroed when allocated (pread fills it): its pages are first touched by the kernel's copy.
  std::unique_ptr<std::byte[]> buf;
  std::size_t cap = 0;  // buf's size
  std::size_t held = kNone;
  std::size_t filled = 0;
  bool last = false;  // buf reaches the end of the file
};

Result<void> observe_shared_reading(
    const Capture::SharedFile& file, Capture& src, std::span<observe::Observer* const> workers,
    const std::function<void(std::size_t)>& done,
    const std::function<void(std::uint64_t, std::uint64_t)>& progress, WorkerFeedStats& stats) {
  const CaptureParser& whole = *file.parser;
  const std::size_t n = workers.size();
  const std::size_t size = file.size;
  const std::size_t first = whole.offset();
  const std::size_t chunk = chunk_bytes();
  const std::size_t chunks = size <= first ? 0 : (size + chunk - 1) / chunk;
  auto lo = [&](std::size_t k) { return k == 0 ? first : k * chunk; };
  auto hi = [&](std::size_t k) { return std::min(size, (k + 1) * chunk); };

  const std::size_t slots = kSlotsPerWorker * n;
  std::vector<Chunk> ring(slots);
  for (auto& c : ring) c.lists.resize(n);
  std::mutex mu;
  std::condition_variable cv;
  std::size_t next_index = 0;      // the next chunk to index
  std::size_t verified = 0;        // chunks [0, verified) checked
  std::size_t freed = 0;           // chunks [0, freed) observed by every worker
  std::size_t end_chunk = chunks;  // no chunk from here on is observed
  std::size_t chain = first;       // where the records of the verified chunks end
  observe::Nanos clock = std::numeric_limits<observe::Nanos>::min() / 2;
  std::optional<Error> error;
  std::uint64_t frames_done = 0;
  const observe::LinkType link = whole.first_link();

  stats.late_packets.assign(n, 0);
  stats.frames.assign(n, 0);
  stats.active.assign(n, 0);
  stats.cpu_seconds.assign(n, 0);
  stats.shared_reading = true;

  // Makes c.buf hold the file's bytes from lo(k) up to `want` (at most the end of the file).
  auto fill = [&](Chunk& c, std::size_t k, std::size_t want) -> std::optional<Error> {
    if (c.held != k) {
      c.held = k;
      c.filled = 0;
      c.last = false;
    }
    const std::size_t from = lo(k);
    want = std::min(want, size);
    if (want <= from + c.filled) return std::nullopt;
    if (c.cap < want - from) {  // moves the bytes read: the caller walks the chunk again
      const std::size_t cap = std::max(want - from, chunk + kMargin);
      auto bigger = std::make_unique_for_overwrite<std::byte[]>(cap);
      if (c.filled != 0) std::memcpy(bigger.get(), c.buf.get(), c.filled);
      c.buf = std::move(bigger);
      c.cap = cap;
    }
    while (from + c.filled < want) {
      const ssize_t got = ::pread(file.fd, c.buf.get() + c.filled, want - from - c.filled,
                                  static_cast<off_t>(from + c.filled));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        return fail(Errc::kRefused,
                    got < 0 ? fmt::format("{}: cannot read at byte offset {}: {}", src.name(),
                                          from + c.filled, std::strerror(errno))
                            : fmt::format("{}: the file ends at byte offset {}, before its size "
                                          "when opened ({} bytes)",
                                          src.name(), from + c.filled, size))
            .error();
      }
      c.filled += static_cast<std::size_t>(got);
    }
    c.last = from + c.filled >= size;
    return std::nullopt;
  };

  // Reads and walks chunk k from `from` (kNone: from a guess) into c (its lists emptied first).
  auto index = [&](CaptureParser& p, Chunk& c, std::size_t k, std::size_t from) {
    auto reset = [&] {
      for (auto& l : c.lists) l.clear();
      c.decisions.clear();
      c.error.reset();
      c.frames = 0;
      c.max_ts = std::numeric_limits<observe::Nanos>::min() / 2;
    };
    reset();
    auto read = [&](std::size_t want) {
      if (auto e = fill(c, k, want)) {
        c.error = std::move(e);
        return false;
      }
      p.set_window(c.buf.get(), lo(k), c.filled, c.last);
      return true;
    };
    if (!read(std::min(hi(k) + kMargin, lo(k) + kPiece))) {
      c.guess = from == kNone ? lo(k) : from;
      c.next = c.guess;
      return;
    }
    if (from == kNone) from = k == 0 ? first : p.first_record(lo(k), hi(k));
    c.guess = from;
    if (from >= hi(k)) {
      c.next = from;
      return;
    }
    p.set_range(from, hi(k));
    std::array<observe::FrameRef, 256> in;
    observe::LinkType l = link;
    observe::Nanos m = c.max_ts;
    for (;;) {
      auto got = p.next_batch(in, l);
      if (!got) {
        c.error = std::move(got).error();
        break;
      }
      if (*got == 0) {
        const std::size_t at = p.offset(), end = lo(k) + c.filled;
        if (at >= hi(k) || p.last_window()) break;
        // A record runs past the bytes read: read on (a piece; past the chunk's end, as much
        // again as the record has).
        const std::byte* was = c.buf.get();
        const std::size_t want = end < hi(k) + kMargin ? std::min(end + kPiece, hi(k) + kMargin)
                                                       : end + std::max(end - at, kMargin);
        if (!read(want)) break;
        if (c.buf.get() != was) {  // the frames listed point into the old buffer
          reset();
          m = c.max_ts;
          p.set_range(from, hi(k));
        }
        continue;
      }
      for (std::size_t i = 0; i < *got; ++i) {
        if (i + 16 < *got) __builtin_prefetch(in[i + 16].frame.data() + 26);
        const observe::FrameRef& f = in[i];
        const bool late = f.ts_ns < m;
        if (!late) m = f.ts_ns;
        // The entry is written in place, field by field, and the hash kept in a register: an
        // Entry or FlowHash built on the stack and copied was read back across narrower
        // stores (a store-to-load forwarding that fails and waits for the store buffer to
        // drain; most of this loop's time).
        std::size_t w = 0;
        Entry::Kind kind = Entry::kFrame;
        std::uint32_t decision = 0;
        if (n > 1) {
          if (const std::uint64_t q = observe::detail::quick_flow_hash(l, f.frame); q != 0)
              [[likely]] {
            w = static_cast<std::uint32_t>(q) % n;
          } else {
            const observe::FlowHash h = observe::detail::full_flow_hash(l, f.frame);
            w = h.hash % n;
            if (h.quotes && h.own % n != w) {
              decision = static_cast<std::uint32_t>(c.decisions.size());
              c.decisions.push_back(0);
              c.lists[h.own % n].push_back(Entry{f.frame.data(),
                                                 static_cast<std::uint32_t>(f.frame.size()),
                                                 Entry::kAwait, late, decision, m});
              kind = Entry::kDecide;
            }
          }
        }
        Entry& e = c.lists[w].emplace_back();
        e.data = f.frame.data();
        e.len = static_cast<std::uint32_t>(f.frame.size());
        e.kind = kind;
        e.late = late;
        e.decision = decision;
        e.ts = m;
      }
      c.frames += *got;
    }
    c.max_ts = m;
    c.next = c.error ? std::max(p.offset(), from) : p.offset();
  };

  // Under the lock: checks the indexed chunks in order (indexing one again when its guess was
  // wrong, the lock released meanwhile).
  auto verify = [&](std::unique_lock<std::mutex>& lock, CaptureParser& p) {
    while (verified < end_chunk) {
      Chunk& c = ring[verified % slots];
      if (c.index != verified || c.state != Chunk::kIndexed) return;
      const std::size_t k = verified;
      if (k != 0 && c.guess != chain && !(chain >= hi(k) && c.guess >= hi(k))) {
        c.state = Chunk::kIndexing;
        ++stats.chunks_read_again;
        lock.unlock();
        index(p, c, k, chain);
        lock.lock();
        c.state = Chunk::kIndexed;
      }
      if (c.guess >= hi(k)) c.next = std::max(c.next, chain);  // no record starts in it
      c.clock_in = clock;
      clock = std::max(clock, c.max_ts);
      c.state = Chunk::kVerified;
      chain = c.next;
      ++verified;
      ++stats.chunks;
      if (c.error) {
        error = c.error;
        end_chunk = verified;
      } else if (chain >= size || src.stopping()) {
        end_chunk = verified;
      }
      cv.notify_all();
    }
  };

  auto work = [&](std::size_t w) {
    observe::Observer& obs = *workers[w];
    CaptureParser p = whole.split();
    std::size_t mine = 0;  // the next chunk this worker observes
    std::array<observe::FrameRef, 256> batch;
    std::size_t nb = 0;
    auto flush = [&] {
      if (nb != 0) obs.on_packets(link, std::span(batch).first(nb));
      nb = 0;
    };
    std::unique_lock lock(mu);
    for (;;) {
      if (mine >= end_chunk) break;
      Chunk& c = ring[mine % slots];
      if (c.index == mine && c.state == Chunk::kVerified) {
        lock.unlock();
        const observe::Nanos in = c.clock_in;
        std::uint64_t late = 0, taken = 0;
        for (const Entry& e : c.lists[w]) {
          const observe::Nanos ts = std::max(in, e.ts);
          const bool is_late = e.late || e.ts < in;
          if (e.kind != Entry::kFrame) {
            flush();
            const std::span<const std::byte> frame(e.data, e.len);
            bool mine_too;
            if (e.kind == Entry::kDecide) {
              mine_too = obs.quotes_held_flow(link, frame, ts);
              std::lock_guard g(mu);
              c.decisions[e.decision] = mine_too ? 1 : 2;
              cv.notify_all();
            } else {
              std::unique_lock g(mu);
              cv.wait(g, [&] { return c.decisions[e.decision] != 0; });
              mine_too = c.decisions[e.decision] == 2;
            }
            if (!mine_too) continue;
          }
          // Most of these lines were walked on the other core: asked for a batch ahead of
          // the observer (~4 % at 10,000 flows).
          __builtin_prefetch(e.data + 14);
          batch[nb++] = observe::FrameRef{ts, std::span(e.data, e.len)};
          late += is_late;
          ++taken;
          if (nb == batch.size()) flush();
        }
        flush();
        obs.advance_clock(std::max(in, c.max_ts));
        stats.late_packets[w] += late;
        stats.frames[w] += taken;
        lock.lock();
        ++mine;
        if (++c.consumed == n) {
          frames_done += c.frames;
          c.state = Chunk::kFree;
          ++freed;
          cv.notify_all();
          if (w == 0 && progress) {
            const std::uint64_t f = frames_done, at = c.next;
            lock.unlock();
            progress(f, at);
            lock.lock();
          }
        }
        continue;
      }
      if (next_index < end_chunk && next_index < freed + slots &&
          ring[next_index % slots].state == Chunk::kFree) {
        const std::size_t k = next_index++;
        Chunk& t = ring[k % slots];
        t.index = k;
        t.state = Chunk::kIndexing;
        t.consumed = 0;
        lock.unlock();
        index(p, t, k, kNone);
        lock.lock();
        t.state = Chunk::kIndexed;
        verify(lock, p);
        continue;
      }
      cv.wait(lock);
    }
    lock.unlock();
    flush();
    // The end: the capture's clock, as one observer would have it.
    observe::Nanos last;
    {
      std::lock_guard g(mu);
      last = clock;
    }
    obs.advance_clock(last);
    stats.active[w] = obs.active_flows();
    obs.finish();
    done(w);
    stats.cpu_seconds[w] = thread_cpu_seconds();
  };

  std::vector<std::thread> threads;
  threads.reserve(n);
  for (std::size_t w = 1; w < n; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  if (error) return std::unexpected(std::move(*error));
  return {};
}

}  // namespace

Result<void> observe_with_workers(Capture& src, std::span<observe::Observer* const> workers,
                                  const std::function<void(std::size_t)>& done,
                                  const std::function<void(std::uint64_t, std::uint64_t)>& progress,
                                  WorkerFeedStats& stats) {
  if (const Capture::SharedFile file = src.file_to_share(); file.parser != nullptr)
    return observe_shared_reading(file, src, workers, done, progress, stats);
  const std::size_t n = workers.size();
  const bool copy = !src.frames_outlive_batch();
  std::vector<std::unique_ptr<Batch>> pool;
  std::vector<Channel> channels(n);
  for (std::size_t w = 0; w < n; ++w) {
    for (std::size_t i = 0; i < kBatchesPerWorker; ++i) {
      pool.push_back(std::make_unique<Batch>());
      if (copy) pool.back()->bytes.reserve(kBatch * 2048);
      channels[w].give_back(pool.back().get());
    }
  }
  stats.late_packets.assign(n, 0);
  stats.frames.assign(n, 0);
  stats.active.assign(n, 0);
  stats.cpu_seconds.assign(n, 0);

  std::vector<std::thread> threads;
  threads.reserve(n);
  for (std::size_t w = 0; w < n; ++w) {
    threads.emplace_back([&, w] {
      observe::Observer& obs = *workers[w];
      for (;;) {
        Batch* b = channels[w].pop_full();
        if (b->n != 0) obs.on_packets(b->link, std::span(b->frames).first(b->n));
        obs.advance_clock(b->clock);
        const bool end = b->end;
        if (end) {
          stats.active[w] = obs.active_flows();
          obs.finish();
          done(w);
          stats.cpu_seconds[w] = thread_cpu_seconds();
        }
        channels[w].give_back(b, true);
        if (end) break;
      }
    });
  }

  observe::Nanos clock = std::numeric_limits<observe::Nanos>::min() / 2;
  std::vector<Batch*> open(n, nullptr);
  // The clock each worker was last given: a worker that has had no batch for a second of
  // packet time gets what it has (maybe nothing) with the clock, so that its timers fire.
  constexpr observe::Nanos kTellEvery = 1'000'000'000;
  std::vector<observe::Nanos> told(n, std::numeric_limits<observe::Nanos>::min() / 2);
  auto hand_over = [&](std::size_t w) {
    Batch* b = open[w];
    if (copy) {
      for (std::size_t i = 0; i < b->n; ++i)
        b->frames[i].frame = {b->bytes.data() + b->at[i], b->frames[i].frame.size()};
    }
    b->clock = clock;
    told[w] = clock;
    channels[w].push(b);
    open[w] = nullptr;
  };
  std::array<observe::FrameRef, 256> in;
  observe::LinkType link = observe::LinkType::kEthernet;
  std::uint64_t total = 0, batches = 0;
  Result<void> result;
  for (;;) {
    auto got = src.next_batch(in, link);
    if (!got) {
      result = std::unexpected(std::move(got).error());
      break;
    }
    if (*got == 0) break;
    for (std::size_t i = 0; i < *got; ++i) {
      if (i + 16 < *got) __builtin_prefetch(in[i + 16].frame.data() + 26);  // its IP addresses
      observe::FrameRef f = in[i];
      std::size_t w = 0;
      bool late = false;
      if (f.ts_ns < clock) {
        f.ts_ns = clock;
        late = true;
      } else {
        clock = f.ts_ns;
      }
      if (n > 1) {
        const observe::FlowHash h = observe::flow_hash(link, f.frame);
        w = h.hash % n;
        if (h.quotes && h.own % n != w) {
          // An ICMP error: on the quoted flow when its worker holds it, else in a flow of its
          // own addresses. Asked of that worker once it has observed every frame before this.
          const std::size_t q = w;
          if (open[q] != nullptr) hand_over(q);
          channels[q].wait_drained();
          if (!workers[q]->quotes_held_flow(link, f.frame, f.ts_ns)) w = h.own % n;
        }
      }
      if (late) ++stats.late_packets[w];
      if (open[w] != nullptr && (open[w]->link != link || open[w]->n == kBatch)) hand_over(w);
      if (open[w] == nullptr) {
        open[w] = channels[w].take_free();
        open[w]->link = link;
        open[w]->n = 0;
        open[w]->bytes.clear();
      }
      Batch& b = *open[w];
      if (copy) {
        b.at[b.n] = b.bytes.size();
        b.bytes.insert(b.bytes.end(), f.frame.begin(), f.frame.end());
      }
      b.frames[b.n++] = f;
      ++stats.frames[w];
    }
    for (std::size_t w = 0; w < n; ++w) {
      if (clock - told[w] < kTellEvery || told[w] == clock) continue;
      if (open[w] == nullptr) {
        open[w] = channels[w].take_free();
        open[w]->link = link;
        open[w]->n = 0;
      }
      hand_over(w);
    }
    total += *got;
    if ((++batches & 0xFF) == 0 && progress) progress(total, src.offset());
  }
  for (std::size_t w = 0; w < n; ++w) {
    if (open[w] == nullptr) {
      open[w] = channels[w].take_free();
      open[w]->n = 0;
    }
    open[w]->end = true;
    hand_over(w);
  }
  stats.reader_cpu_seconds = thread_cpu_seconds();
  for (auto& t : threads) t.join();
  return result;
}

}  // namespace flowmark::capture
