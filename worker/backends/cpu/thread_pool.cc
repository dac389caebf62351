#include "worker/backends/cpu/thread_pool.h"

#include <algorithm>

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

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ParallelFor(int64_t begin, int64_t end, int64_t grain, const RangeFn& fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t total = end - begin;
  if (workers_.empty() || total <= grain || t_inside_pool) {
    fn(begin, end);
    return;
  }
  // A few chunks per thread, so that uneven chunks still balance.
  const int64_t per = int64_t(size()) * 4;
  const int64_t chunk = std::max(grain, (total + per - 1) / per);

  std::lock_guard<std::mutex> call(call_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    end_ = end;
    chunk_ = chunk;
    next_.store(begin, std::memory_order_relaxed);
    busy_ = int(workers_.size());
    ++generation_;
  }
  start_cv_.notify_all();
  t_inside_pool = true;
  RunChunks();
  t_inside_pool = false;
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [this] { return busy_ == 0; });
  fn_ = nullptr;
}

void ThreadPool::RunChunks() {
  for (;;) {
    const int64_t lo = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (lo >= end_) return;
    (*fn_)(lo, std::min(end_, lo + chunk_));
  }
}

void ThreadPool::WorkerLoop() {
  t_inside_pool = true;
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    start_cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    lk.unlock();
    RunChunks();
    lk.lock();
    if (--busy_ == 0) done_cv_.notify_one();
  }
}

}  // namespace paged
