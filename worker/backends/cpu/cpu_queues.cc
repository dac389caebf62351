#include "worker/backends/cpu/cpu_queues.h"

namespace paged::cpu {

CopyQueues::CopyQueues() {
  for (Queue& q : queues_) q.thread = std::thread([this, &q] { Run(&q); });
}

CopyQueues::~CopyQueues() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (Queue& q : queues_) q.thread.join();
}

void CopyQueues::Run(Queue* q) {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !q->work.empty(); });
    if (q->work.empty()) return;  // stop_ and drained
    std::function<void()> fn = std::move(q->work.front());
    q->work.pop_front();
    l.unlock();
    fn();
    l.lock();
    cv_.notify_all();
  }
}

void CopyQueues::Enqueue(int q, std::function<void()> fn) {
  if (q == kCompute) {
    fn();
    return;
  }
  {
    std::lock_guard<std::mutex> l(mu_);
    queues_[q - 1].work.push_back(std::move(fn));
  }
  cv_.notify_all();
}

int CopyQueues::NewEvent() {
  std::lock_guard<std::mutex> l(mu_);
  events_.push_back(Event{});
  return int(events_.size()) - 1;
}

void CopyQueues::Record(int q, int event) {
  uint64_t target;
  {
    std::lock_guard<std::mutex> l(mu_);
    target = ++events_[size_t(event)].recorded;
  }
  Enqueue(q, [this, event, target] {
    std::lock_guard<std::mutex> l(mu_);
    Event& e = events_[size_t(event)];
    if (e.completed < target) e.completed = target;
    cv_.notify_all();
  });
}

void CopyQueues::WaitFor(int event, uint64_t target) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return events_[size_t(event)].completed >= target; });
}

void CopyQueues::Wait(int q, int event) {
  uint64_t target;
  {
    std::lock_guard<std::mutex> l(mu_);
    target = events_[size_t(event)].recorded;
  }
  Enqueue(q, [this, event, target] { WaitFor(event, target); });
}

void CopyQueues::HostWait(int event) {
  uint64_t target;
  {
    std::lock_guard<std::mutex> l(mu_);
    target = events_[size_t(event)].recorded;
  }
  WaitFor(event, target);
}

}  // namespace paged::cpu
