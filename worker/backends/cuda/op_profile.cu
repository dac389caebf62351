#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/op_profile.h"

namespace paged::cuda {
namespace {

__global__ void SpinKernel(uint64_t ns) {
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

}  // namespace

CudaError LaunchSpin(uint64_t ns, cudaStream_t stream) {
  SpinKernel<<<1, 1, 0, stream>>>(ns);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

OpProfile::OpProfile() {
  const char* on = std::getenv("PAGED_CUDA_PROFILE");
  on_ = on != nullptr && std::strcmp(on, "1") == 0;
  if (const char* hold = std::getenv("PAGED_CUDA_PROFILE_HOLD_MS")) hold_ms_ = std::atof(hold);
}

OpProfile::~OpProfile() {
  for (cudaEvent_t e : all_) cudaEventDestroy(e);
}

cudaEvent_t OpProfile::Take() {
  if (free_.empty()) {
    cudaEvent_t e = nullptr;
    if (cudaEventCreate(&e) != cudaSuccess) return nullptr;
    all_.push_back(e);
    return e;
  }
  cudaEvent_t e = free_.back();
  free_.pop_back();
  return e;
}

void OpProfile::Begin(cudaStream_t s) {
  if (!on_) return;
  if (armed_) {
    armed_ = false;
    if (hold_ms_ > 0) LaunchSpin(uint64_t(hold_ms_ * 1e6), s);
    window_start_ = Take();
    if (window_start_ != nullptr) cudaEventRecord(window_start_, s);
  }
  if (begin_ == nullptr) begin_ = Take();
  if (begin_ != nullptr) cudaEventRecord(begin_, s);
}

void OpProfile::End(cudaStream_t s, const std::string& key) {
  if (!on_ || begin_ == nullptr) return;
  cudaEvent_t stop = Take();
  if (stop == nullptr) return;
  cudaEventRecord(stop, s);
  pending_.push_back({begin_, stop, key});
  begin_ = nullptr;
  window_stop_ = stop;
}

void OpProfile::Collect() {
  if (!on_) return;
  for (const Pending& p : pending_) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, p.start, p.stop) == cudaSuccess) {
      Sum& s = sums_[p.key];
      s.ms += ms;
      ++s.count;
    }
  }
  if (window_start_ != nullptr && window_stop_ != nullptr) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, window_start_, window_stop_) == cudaSuccess) {
      window_ms_ += ms;
      ++windows_;
    }
  }
  // Every event but the one Begin may hold goes back to the pool.
  for (const Pending& p : pending_) {
    free_.push_back(p.start);
    free_.push_back(p.stop);
  }
  if (window_start_ != nullptr) free_.push_back(window_start_);
  pending_.clear();
  window_start_ = window_stop_ = nullptr;
  cudaGetLastError();  // an unrecorded pair's error is not the stream's
  armed_ = true;
}

std::string OpProfile::Report() const {
  std::vector<std::pair<std::string, Sum>> rows(sums_.begin(), sums_.end());
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (const auto& r : rows) total += r.second.ms;
  std::string out = "cuda op profile (PAGED_CUDA_PROFILE=1): GPU ms by op, over " +
                    std::to_string(windows_) + " windows\n";
  char line[256];
  std::snprintf(line, sizeof line, "%7s %10s %8s %9s  %s\n", "share", "total ms", "calls",
                "mean us", "op");
  out += line;
  for (const auto& [key, s] : rows) {
    std::snprintf(line, sizeof line, "%6.1f%% %10.3f %8lld %9.2f  %s\n",
                  total > 0 ? 100 * s.ms / total : 0.0, s.ms, static_cast<long long>(s.count),
                  s.count > 0 ? 1e3 * s.ms / double(s.count) : 0.0, key.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line,
                "ops %.3f ms; windows (first op to last, back to back) %.3f ms: %.1f%% in ops\n",
                total, window_ms_, window_ms_ > 0 ? 100 * total / window_ms_ : 0.0);
  out += line;
  return out;
}

}  // namespace paged::cuda
