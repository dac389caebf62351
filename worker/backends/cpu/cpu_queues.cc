#include "worker/backends/cpu/cpu_queues.h"

namespace paged::cpu {

CopyQueues::CopyQueues() {
  for (int i = 0; i < 2; ++i) queues_[i].thread = std::thread([this, i] { Run(i); });
}

CopyQueues::~CopyQueues() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  for (Queue& q : queues_) q.thread.join();
}

void CopyQueues::Run(int i) {
  absl::MutexLock l(&mu_);
  while (true) {
    while (!stop_ && queues_[i].work.empty()) cv_.Wait(&mu_);
    if (queues_[i].work.empty()) return;  // stop_ and drained
    std::function<void()> fn = std::move(queues_[i].work.front());
    queues_[i].work.pop_front();
    mu_.Unlock();
    fn();
    mu_.Lock();
    cv_.SignalAll();
  }
}

void CopyQueues::Enqueue(int q, std::function<void()> fn) {
  if (q == kCompute) {
    fn();
    return;
  }
  {
    absl::MutexLock l(&mu_);
    queues_[q - 1].work.push_back(std::move(fn));
  }
  cv_.SignalAll();
}

int CopyQueues::NewEvent() {
  absl::MutexLock l(&mu_);
  events_.push_back(Event{});
  return int(events_.size()) - 1;
}

void CopyQueues::Record(int q, int event) {
  uint64_t target;
  {
    absl::MutexLock l(&mu_);
    target = ++events_[size_t(event)].recorded;
  }
  Enqueue(q, [this, event, target] {
    absl::MutexLock l(&mu_);
    Event& e = events_[size_t(event)];
    if (e.completed < target) e.completed = target;
    cv_.SignalAll();
  });
}

void CopyQueues::WaitFor(int event, uint64_t target) {
  absl::MutexLock l(&mu_);
  while (events_[size_t(event)].completed < target) cv_.Wait(&mu_);
}

void CopyQueues::Wait(int q, int event) {
  uint64_t target;
  {
    absl::MutexLock l(&mu_);
    target = events_[size_t(event)].recorded;
  }
  Enqueue(q, [this, event, target] { WaitFor(event, target); });
}

void CopyQueues::HostWait(int event) {
  uint64_t target;
  {
    absl::MutexLock l(&mu_);
    target = events_[size_t(event)].recorded;
  }
  WaitFor(event, target);
}

}  // namespace paged::cpu
