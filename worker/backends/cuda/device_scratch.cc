#include "worker/backends/cuda/device_scratch.h"

#include <algorithm>
#include <atomic>

#include "worker/backends/cuda/cuda_check.h"

namespace paged::cuda {

namespace {
std::atomic<uint64_t> growths{0};
}  // namespace

uint64_t DeviceScratch::Growths() { return growths.load(std::memory_order_relaxed); }

DeviceScratch::~DeviceScratch() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

absl::StatusOr<void*> DeviceScratch::Get(uint64_t bytes, cudaStream_t stream) {
  if (bytes <= capacity_ && ptr_ != nullptr) return ptr_;
  // Grow by half again at least, in whole 2 MiB, so a slowly growing demand
  // reallocates rarely.
  constexpr uint64_t kGranule = 2ull << 20;
  uint64_t want = std::max<uint64_t>({bytes, capacity_ + capacity_ / 2, 1});
  want = (want + kGranule - 1) / kGranule * kGranule;
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture != cudaStreamCaptureStatusNone)
    return absl::FailedPreconditionError("cuda backend: scratch grows while a graph is recorded");
  growths.fetch_add(1, std::memory_order_relaxed);
  if (ptr_ != nullptr) {
    CUDA_CHECK(cudaFreeAsync(ptr_, stream));
    ptr_ = nullptr;
    capacity_ = 0;
  }
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, want, stream);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it
    return absl::ResourceExhaustedError(absl::StrCat("cuda backend: cannot allocate ", want,
                                                     " bytes of scratch: ", cudaGetErrorString(e)));
  }
  if (zero_on_growth_) CUDA_CHECK(cudaMemsetAsync(p, 0, want, stream));
  ptr_ = p;
  capacity_ = want;
  return ptr_;
}

}  // namespace paged::cuda
