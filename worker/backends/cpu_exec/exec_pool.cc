#include "worker/backends/cpu_exec/exec_pool.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <latch>
#include <string>

namespace paged::cpu_exec {
namespace {

// Chunks per thread: a few, so that a thread held up by the OS is balanced by
// the others, while each chunk stays a long contiguous run of weight rows.
constexpr int64_t kChunksPerThread = 4;

// How long a wait spins on `pause` alone; after that, until spin_us, it
// yields the CPU between looks: where another process's threads want the
// cores (more runnable threads than cores), a long spin on pause alone took
// their time (a 2-core machine with a build running beside a decode).
constexpr int kPauseOnlyUs = 50;

// True on pool workers and on a caller while it runs chunks: a ParallelFor
// from there runs inline instead of waiting on itself.
thread_local bool t_inside_pool = false;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

using Clock = std::chrono::steady_clock;

ExecPoolOptions WithThreads(int threads) {
  ExecPoolOptions o;
  o.threads = threads;
  return o;
}

bool ParseInt(std::string_view s, int* out) {
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, *out);
  return ec == std::errc() && p == end;
}

}  // namespace

ExecPool::ExecPool(int threads) : ExecPool(WithThreads(threads)) {}

ExecPool::ExecPool(const ExecPoolOptions& options)
    : spin_us_(std::max(0, options.spin_us)), q8_activations_(options.q8_activations) {
  int threads = options.threads;
  if (threads <= 0) threads = int(std::max(1u, std::thread::hardware_concurrency()));
  std::latch started(threads - 1);
  workers_.reserve(size_t(threads - 1));
  for (int k = 1; k < threads; ++k) {
    const int cpu = options.cpus.empty() ? -1 : options.cpus[size_t(k) % options.cpus.size()];
    workers_.emplace_back([this, cpu, &started] {
      if (cpu >= 0 && !PinCurrentThread(cpu)) pin_failures_.fetch_add(1);
      started.count_down();
      WorkerLoop(cpu);
    });
  }
  started.wait();
  pinned_ = !options.cpus.empty() && pin_failures_.load() == 0;
}

ExecPool::~ExecPool() {
  stop_.store(true);
  gen_.fetch_add(1);
  signal_.fetch_add(1);
  signal_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ExecPool::Wake() {
  if (sleeping_workers_.load() == 0) return;
  signal_.fetch_add(1);
  signal_.notify_all();
}

void ExecPool::Run(int64_t begin, int64_t end, int64_t grain, int64_t max_chunk, Thunk thunk,
                   const void* fn) {
  if (end <= begin) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t total = end - begin;
  if (workers_.empty() || total <= grain || t_inside_pool) {
    thunk(fn, begin, end);
    return;
  }
  const int64_t per = int64_t(size()) * kChunksPerThread;
  int64_t chunk = std::max(grain, (total + per - 1) / per);
  chunk = (chunk + grain - 1) / grain * grain;
  if (max_chunk > 0) chunk = std::min(chunk, std::max(grain, max_chunk / grain * grain));

  absl::MutexLock call(&call_mu_);
  thunk_ = thunk;
  fn_ = fn;
  end_ = end;
  chunk_ = chunk;
  next_.store(begin, std::memory_order_relaxed);
  pending_.store(uint32_t(workers_.size()), std::memory_order_relaxed);
  gen_.fetch_add(1);  // seq_cst: publishes the job, before the signal
  signal_.fetch_add(1);
  if (sleeping_workers_.load() > 0) signal_.notify_all();

  t_inside_pool = true;
  RunChunks();
  t_inside_pool = false;
  WaitForWorkers();
  thunk_ = nullptr;
  fn_ = nullptr;
}

void ExecPool::RunChunks() {
  for (;;) {
    const int64_t lo = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (lo >= end_) return;
    thunk_(fn_, lo, std::min(end_, lo + chunk_));
  }
}

template <class Done>
bool ExecPool::Spin(const Done& done) const {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::microseconds(spin_us_);
  const auto yield_from = start + std::chrono::microseconds(kPauseOnlyUs);
  for (int i = 1;; ++i) {
    if (done()) return true;
    if ((i & 255) == 0) {
      const auto now = Clock::now();
      if (now >= deadline) return false;
      if (now >= yield_from) break;
    }
    CpuRelax();
  }
  for (;;) {
    if (done()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::yield();
  }
}

void ExecPool::WaitForWorkers() {
  if (Spin([this] { return pending_.load(std::memory_order_acquire) == 0; })) return;
  caller_sleeping_.store(true);
  for (;;) {
    const uint32_t left = pending_.load();
    if (left == 0) break;
    pending_.wait(left);
  }
  caller_sleeping_.store(false);
}

uint32_t ExecPool::WaitForJob(uint32_t seen) {
  uint32_t g = seen;
  const auto job = [&] { return (g = gen_.load(std::memory_order_acquire)) != seen; };
  while (!Spin(job)) {
    // Counted before the last look at gen_: a caller that advances gen_
    // (then signal_) after that look sees the count and notifies. signal_ is
    // read before that look, so a job published after it changes signal_
    // and the wait returns at once (all seq_cst).
    sleeping_workers_.fetch_add(1);
    const uint32_t sig = signal_.load();
    const bool now = job();
    if (!now) signal_.wait(sig);
    sleeping_workers_.fetch_sub(1);
    if (now || job()) return g;
    // Woken without a job (Wake): spin again, a job is on its way.
  }
  return g;
}

void ExecPool::WorkerLoop(int /*cpu*/) {
  t_inside_pool = true;
  uint32_t seen = 0;  // gen_'s initial value: a job published before we got here is still new
  for (;;) {
    seen = WaitForJob(seen);
    if (stop_.load()) return;
    RunChunks();
    // The last worker out wakes a caller that stopped spinning; the store of
    // caller_sleeping_ precedes its load of pending_ (seq_cst), so either it
    // sees 0 or we see it sleeping.
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) pending_.notify_one();
  }
}

absl::StatusOr<std::vector<int>> ParseCpuList(std::string_view spec) {
  std::vector<int> cpus;
  if (spec.empty() || spec == "none") return cpus;
  if (spec == "all") {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) {
      return absl::InternalError("sched_getaffinity failed");
    }
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
    }
    return cpus;
  }
  size_t start = 0;
  for (;;) {
    const size_t comma = spec.find(',', start);
    const std::string_view part = spec.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    const size_t dash = part.find('-');
    int lo = 0, hi = 0;
    const bool ok = dash == std::string_view::npos ? ParseInt(part, &lo) && ParseInt(part, &hi)
                                                   : ParseInt(part.substr(0, dash), &lo) &&
                                                         ParseInt(part.substr(dash + 1), &hi);
    if (!ok || lo < 0 || hi < lo || hi >= CPU_SETSIZE) {
      return absl::InvalidArgumentError("bad CPU list \"" + std::string(spec) +
                                        "\": want none, all or a list such as 0-7,16 (CPUs below " +
                                        std::to_string(CPU_SETSIZE) + ")");
    }
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return cpus;
}

bool PinCurrentThread(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

}  // namespace paged::cpu_exec
