// The CPU backend's copy queues: the copy-in and write-back queues each run
// their work in order on a thread of their own, and events order them against
// each other and against the compute queue (the calling thread), the way CUDA
// streams and events do. This lets the pager's pipeline run, and be tested,
// without a GPU.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace paged::cpu {

class CopyQueues {
 public:
  static constexpr int kCompute = 0;  // the calling thread: work runs at once
  CopyQueues();
  ~CopyQueues();  // drains both queues

  // Runs fn on queue q (1: copy-in, 2: write-back) after what is queued
  // there; on kCompute, now.
  void Enqueue(int q, std::function<void()> fn) ABSL_LOCKS_EXCLUDED(mu_);
  int NewEvent() ABSL_LOCKS_EXCLUDED(mu_);
  void Record(int q, int event) ABSL_LOCKS_EXCLUDED(mu_);
  // q waits for the event's last Record (kCompute: the caller blocks).
  void Wait(int q, int event) ABSL_LOCKS_EXCLUDED(mu_);
  void HostWait(int event) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Queue {
    std::deque<std::function<void()>> work;  // under mu_ (queues_ is guarded)
    // Started by the constructor, joined by the destructor; not under mu_.
    std::thread thread;
  };
  struct Event {
    uint64_t recorded = 0;   // Records issued
    uint64_t completed = 0;  // Records that have run
  };
  // Queue i's thread: runs its work in order until stop_ and drained.
  void Run(int i) ABSL_LOCKS_EXCLUDED(mu_);
  void WaitFor(int event, uint64_t target) ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  absl::CondVar cv_;  // with mu_: work queued, an event completed, stop_
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Event> events_ ABSL_GUARDED_BY(mu_);
  // Reached only as queues_[i], so the analysis checks each `work` against
  // mu_; each `thread` is not under mu_ (see Queue).
  Queue queues_[2] ABSL_GUARDED_BY(mu_);
};

}  // namespace paged::cpu
