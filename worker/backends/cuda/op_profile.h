// PAGED_CUDA_PROFILE=1: the GPU time of every op the CUDA backend enqueues on
// its main stream, summed by op and shape, printed when the backend goes.
// The device has no profiler installed, so the backend measures itself:
// a pair of events around each op. Ops are timed one by one (step graphs
// are off while it is on), and the first op after each host wait is held
// back by a spin kernel (PAGED_CUDA_PROFILE_HOLD_MS, 30) so that the host
// queues the step's ops ahead of the GPU: an event pair then times the
// kernel back to back with its neighbours, as in a graph, not the host's
// launch gap. A measuring tool, never on by default: throughput with it on
// means nothing.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "worker/backends/cuda/kernel_types.h"

typedef struct CUevent_st* cudaEvent_t;

namespace paged::cuda {

class OpProfile {
 public:
  OpProfile();  // reads PAGED_CUDA_PROFILE and PAGED_CUDA_PROFILE_HOLD_MS
  ~OpProfile();
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;

  bool on() const { return on_; }
  // Marks the start of an op (a later Begin before End replaces it).
  void Begin(cudaStream_t s);
  // Ends the op begun last under `key` ("GEMV f16 4096x4096", ...).
  void End(cudaStream_t s, const std::string& key);
  // After the stream was synchronized: adds the finished pairs up and arms
  // the hold for the next op.
  void Collect();
  // One line per key, largest total first, and the windows' wall time.
  std::string Report() const;

 private:
  struct Pending {
    cudaEvent_t start, stop;
    std::string key;
  };
  struct Sum {
    double ms = 0;
    int64_t count = 0;
  };
  cudaEvent_t Take();

  bool on_ = false;
  double hold_ms_ = 30;
  bool armed_ = true;
  cudaEvent_t begin_ = nullptr;         // the current op's start, once Begin ran
  cudaEvent_t window_start_ = nullptr;  // after the hold: the window's first op
  cudaEvent_t window_stop_ = nullptr;   // the window's last End
  std::vector<cudaEvent_t> free_;
  std::vector<cudaEvent_t> all_;
  std::vector<Pending> pending_;
  std::map<std::string, Sum> sums_;
  double window_ms_ = 0;
  int64_t windows_ = 0;
};

// Launches a kernel that spins for `ns` nanoseconds on the GPU's clock.
CudaError LaunchSpin(uint64_t ns, cudaStream_t stream);

}  // namespace paged::cuda
