// The CPU backend's copy queues: the copy-in and write-back queues each run
// their work in order on a thread of their own, and events order them against
// each other and against the compute queue (the calling thread), the way CUDA
// streams and events do. This lets the pager's pipeline run, and be tested,
// without a GPU.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace paged::cpu {

class CopyQueues {
 public:
  static constexpr int kCompute = 0;  // the calling thread: work runs at once
  CopyQueues();
  ~CopyQueues();  // drains both queues

  // Runs fn on queue q (1: copy-in, 2: write-back) after what is queued
  // there; on kCompute, now.
  void Enqueue(int q, std::function<void()> fn);
  int NewEvent();
  void Record(int q, int event);
  // q waits for the event's last Record (kCompute: the caller blocks).
  void Wait(int q, int event);
  void HostWait(int event);

 private:
  struct Queue {
    std::deque<std::function<void()>> work;
    std::thread thread;
  };
  struct Event {
    uint64_t recorded = 0;   // Records issued
    uint64_t completed = 0;  // Records that have run
  };
  void Run(Queue* q);
  void WaitFor(int event, uint64_t target);

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::vector<Event> events_;
  Queue queues_[2];
};

}  // namespace paged::cpu
