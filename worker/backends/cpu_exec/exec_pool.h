// The thread pool of the CPU executor: persistent workers, optionally pinned
// to CPUs, that spin briefly after a job (so the next op of a decode step
// starts without a wake-up) and then sleep. ParallelFor hands out chunks of a
// range from an atomic counter; the calling thread runs chunks too.
//
// Unlike paged::ThreadPool (worker/backends/cpu), the callable is not a
// std::function (no allocation per call) and idle workers spin before they
// sleep: the matrix products of a decode step come microseconds apart.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace paged::cpu_exec {

struct ExecPoolOptions {
  // Threads that share a ParallelFor, the caller included (threads - 1
  // workers are started); <= 0: hardware concurrency.
  int threads = 0;
  // Empty: no pinning. Else worker k (1 <= k < threads) is pinned to
  // cpus[k % cpus.size()]. cpus[0] is meant for the calling thread, which the
  // pool does not pin (PinCurrentThread does, where the caller wants it).
  std::vector<int> cpus;
  // How long an idle worker spins waiting for the next job before it sleeps
  // (yielding the CPU between looks after the first 50 us).
  int spin_us = 200;
  // The products' activations (matmul.h): false, f32 (the reference's
  // numbers); true, quantized to 8 bits per block of 256 for the formats
  // with integer kernels (q4_k, q5_k, q6_k), as llama.cpp's CPU path does.
  bool q8_activations = false;
};

class ExecPool {
 public:
  explicit ExecPool(int threads);
  explicit ExecPool(const ExecPoolOptions& options);
  ~ExecPool();
  ExecPool(const ExecPool&) = delete;
  ExecPool& operator=(const ExecPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // True when CPUs were requested and every worker is running on its CPU.
  bool pinned() const { return pinned_; }
  // ExecPoolOptions::q8_activations.
  bool q8_activations() const { return q8_activations_; }

  // Calls fn(lo, hi) on disjoint chunks [lo, hi) that cover [begin, end) and
  // returns when every call is done. Chunk bounds lie on multiples of `grain`
  // from begin (except `end`), and a chunk holds at least `grain` items but
  // the last, so a chunk is a contiguous run of whole tiles. Runs fn(begin,
  // end) inline when that is one chunk, when the pool has no workers, or when
  // called from inside a ParallelFor. Calls from several threads are
  // serialized. max_chunk > 0 caps a chunk at that many items (rounded down
  // to whole grains, at least one grain): many short chunks keep the
  // threads finishing together, where a few long ones leave one thread
  // working alone on the last chunk.
  template <class Fn>
  void ParallelFor(int64_t begin, int64_t end, int64_t grain, const Fn& fn, int64_t max_chunk = 0) {
    Run(begin, end, grain, max_chunk, &CallFn<Fn>, &fn);
  }

  // Wakes sleeping workers to spin (spin_us) for a job about to come, so
  // that its start does not wait for the wake-ups: a caller that knows it
  // will dispatch soon (a sparse layer's host experts, once the router's
  // logits are down) calls this first. Cheap when no worker sleeps.
  void Wake();
  // Workers asleep now (waiting for a job past their spin).
  int sleeping_workers() const { return sleeping_workers_.load(); }

 private:
  using Thunk = void (*)(const void* fn, int64_t lo, int64_t hi);
  template <class Fn>
  static void CallFn(const void* fn, int64_t lo, int64_t hi) {
    (*static_cast<const Fn*>(fn))(lo, hi);
  }

  void Run(int64_t begin, int64_t end, int64_t grain, int64_t max_chunk, Thunk thunk,
           const void* fn) ABSL_LOCKS_EXCLUDED(call_mu_);
  void RunChunks();
  void WorkerLoop(int cpu);
  // Spins until done() (true) or spin_us_ have passed (false).
  template <class Done>
  bool Spin(const Done& done) const;
  // Spins, then sleeps, until gen_ differs from `seen` (a Wake without a
  // job: spins again); returns the new value.
  uint32_t WaitForJob(uint32_t seen);
  void WaitForWorkers();

  const int spin_us_;
  const bool q8_activations_;
  std::vector<std::thread> workers_;
  bool pinned_ = false;
  // Held for a whole ParallelFor: one job at a time.
  absl::Mutex call_mu_;

  // The current job: written by the caller (under call_mu_) before gen_
  // advances, read by workers after they see the new gen_, left alone until
  // pending_ is 0. Not ABSL_GUARDED_BY: the workers read it without the lock,
  // ordered by gen_ and pending_.
  Thunk thunk_ = nullptr;
  const void* fn_ = nullptr;
  int64_t end_ = 0;
  int64_t chunk_ = 1;
  std::atomic<int64_t> next_{0};  // first item of the next unclaimed chunk

  std::atomic<uint32_t> gen_{0};          // advanced once per job (and at stop)
  std::atomic<uint32_t> signal_{0};       // advanced per job and per Wake: sleepers wait on it
  std::atomic<uint32_t> pending_{0};      // workers not done with the current job
  std::atomic<int> sleeping_workers_{0};  // workers blocked in gen_.wait
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> pin_failures_{0};
};

// "none" or "" -> {} (no pinning); "all" -> the CPUs this process may run on;
// else a list such as "0-7,16,18".
absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view spec);

// Pins the calling thread to `cpu`; false when the system refuses.
bool PinCurrentThread(int cpu);

}  // namespace paged::cpu_exec
