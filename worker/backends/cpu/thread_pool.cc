#include "worker/backends/cpu/thread_pool.h"

#include <algorithm>
#include <utility>

namespace paged {
namespace {

// True on pool workers and on a caller while it runs its own chunks: a
// ParallelFor from there runs inline instead of waiting on itself.
thread_local bool t_inside_pool = false;

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  workers_.reserve(size_t(threads - 1));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::ThreadPool(Runner runner) : runner_(std::move(runner)) {}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lk(&mu_);
    stop_ = true;
  }
  start_cv_.SignalAll();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t begin, int64_t end, int64_t grain, const RangeFn& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  if (runner_) {
    runner_(begin, end, grain, fn);
    return;
  }
  const int64_t total = end - begin;
  if (workers_.empty() || total <= grain || t_inside_pool) {
    fn(begin, end);
    return;
  }
  // A few chunks per thread, so that uneven chunks still balance.
  const int64_t per = int64_t(size()) * 4;
  const int64_t chunk = std::max(grain, (total + per - 1) / per);

  absl::MutexLock call(&call_mu_);
  {
    absl::MutexLock lk(&mu_);
    fn_ = &fn;
    end_ = end;
    chunk_ = chunk;
    next_.store(begin, std::memory_order_relaxed);
    busy_ = int(workers_.size());
    ++generation_;
  }
  start_cv_.SignalAll();
  t_inside_pool = true;
  RunChunks(fn, end, chunk);
  t_inside_pool = false;
  absl::MutexLock lk(&mu_);
  while (busy_ != 0) done_cv_.Wait(&mu_);
  fn_ = nullptr;
}

void ThreadPool::RunChunks(const RangeFn& fn, int64_t end, int64_t chunk) {
  for (;;) {
    const int64_t lo = next_.fetch_add(chunk, std::memory_order_relaxed);
    if (lo >= end) return;
    fn(lo, std::min(end, lo + chunk));
  }
}

void ThreadPool::WorkerLoop() {
  t_inside_pool = true;
  uint64_t seen = 0;
  absl::MutexLock lk(&mu_);
  for (;;) {
    while (!stop_ && generation_ == seen) start_cv_.Wait(&mu_);
    if (stop_) return;
    seen = generation_;
    // The job, read under mu_: ParallelFor keeps it until busy_ reaches 0.
    const RangeFn& fn = *fn_;
    const int64_t end = end_;
    const int64_t chunk = chunk_;
    mu_.Unlock();
    RunChunks(fn, end, chunk);
    mu_.Lock();
    if (--busy_ == 0) done_cv_.Signal();
  }
}

}  // namespace paged
