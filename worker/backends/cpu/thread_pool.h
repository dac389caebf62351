// A small persistent thread pool for the CPU backend. ParallelFor splits a
// range into chunks that the calling thread and the workers claim from an
// atomic counter; workers sleep on a condition variable between calls, so no
// thread is created per op.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace paged {

class ThreadPool {
 public:
  // threads: how many threads share a ParallelFor, the caller included
  // (threads - 1 workers are started); <= 0 means hardware concurrency.
  explicit ThreadPool(int threads);
  using RangeFn = std::function<void(int64_t lo, int64_t hi)>;
  // Runs a whole ParallelFor (the same contract) on threads someone else
  // owns.
  using Runner = std::function<void(int64_t begin, int64_t end, int64_t grain, const RangeFn& fn)>;
  // A pool that starts no threads of its own and hands every ParallelFor to
  // `runner` (the CPU executor's pool, so that a backend's ops and its
  // matrix products share one set of threads that stay awake between them).
  explicit ThreadPool(Runner runner);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  // Calls fn on disjoint chunks [lo, hi) that cover [begin, end), each of at
  // least `grain` items but the last, and returns when every call is done.
  // Runs fn(begin, end) inline when that is one chunk, when the pool has no
  // workers, or when called from inside a ParallelFor (no nesting). Calls
  // from several threads are serialized.
  void ParallelFor(int64_t begin, int64_t end, int64_t grain, const RangeFn& fn)
      ABSL_LOCKS_EXCLUDED(call_mu_, mu_);

 private:
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Claims chunks of the job [.., end) from next_ and runs fn on them until
  // none is left; without mu_.
  void RunChunks(const RangeFn& fn, int64_t end, int64_t chunk) ABSL_LOCKS_EXCLUDED(mu_);

  // Set by the constructor or empty: where every ParallelFor goes.
  const Runner runner_;
  // Started by the constructor, joined by the destructor; not under a lock.
  std::vector<std::thread> workers_;
  // Held for a whole ParallelFor: one job at a time.
  absl::Mutex call_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex mu_;
  absl::CondVar start_cv_;                        // with mu_: generation_ or stop_ changed
  absl::CondVar done_cv_;                         // with mu_: busy_ reached 0
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // advanced once per job
  int busy_ ABSL_GUARDED_BY(mu_) = 0;             // workers not yet done with the current job
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The current job: set under mu_ before generation_ advances, copied by
  // each worker under mu_ when it sees the new generation.
  const RangeFn* fn_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t end_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t chunk_ ABSL_GUARDED_BY(mu_) = 1;
  // Not guarded: claimed with fetch_add by every thread of the job; reset
  // by ParallelFor (under mu_) before the job is published.
  std::atomic<int64_t> next_{0};  // first item of the next unclaimed chunk
};

}  // namespace paged
