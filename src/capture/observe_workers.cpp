#include "observe_workers.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

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

}  // namespace

Result<void> observe_with_workers(Capture& src, std::span<observe::Observer* const> workers,
                                  const std::function<void(std::size_t)>& done,
                                  const std::function<void(std::uint64_t)>& progress,
                                  WorkerFeedStats& stats) {
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
    if ((++batches & 0xFF) == 0 && progress) progress(total);
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
