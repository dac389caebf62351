// A small persistent thread pool for the CPU backend. ParallelFor splits a
// range into chunks that the calling thread and the workers claim from an
// atomic counter; workers sleep on a condition variable between calls, so no
// thread is created per op.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace paged {

class ThreadPool {
 public:
  // threads: how many threads share a ParallelFor, the caller included
  // (threads - 1 workers are started); <= 0 means hardware concurrency.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }

  using RangeFn = std::function<void(int64_t lo, int64_t hi)>;
  // Calls fn on disjoint chunks [lo, hi) that cover [begin, end), each of at
  // least `grain` items but the last, and returns when every call is done.
  // Runs fn(begin, end) inline when that is one chunk, when the pool has no
  // workers, or when called from inside a ParallelFor (no nesting). Calls
  // from several threads are serialized.
  void ParallelFor(int64_t begin, int64_t end, int64_t grain, const RangeFn& fn);

 private:
  void WorkerLoop();
  void RunChunks();

  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one ParallelFor at a time
  std::mutex mu_;       // guards everything below but next_
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  uint64_t generation_ = 0;  // advanced once per job
  int busy_ = 0;             // workers not yet done with the current job
  bool stop_ = false;
  // The current job: set under mu_ before generation_ advances, read by the
  // workers after they see the new generation.
  const RangeFn* fn_ = nullptr;
  int64_t end_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};  // first item of the next unclaimed chunk
};

}  // namespace paged
