#include "worker/backends/cuda/host_staging.h"

#include <cstring>

#include "worker/backends/cuda/cuda_check.h"

namespace paged::cuda {

HostStager::~HostStager() {
  for (cudaEvent_t& e : done_) {
    if (e != nullptr) {
      cudaEventSynchronize(e);
      cudaEventDestroy(e);
    }
  }
  if (buf_ != nullptr) cudaFreeHost(buf_);
}

absl::Status HostStager::Init() {
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&buf_), 2 * kHalfBytes));
  for (cudaEvent_t& e : done_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  return absl::OkStatus();
}

absl::Status HostStager::Copy(void* dst, const void* src, uint64_t bytes, cudaStream_t stream) {
  if (bytes == 0) return absl::OkStatus();
  if (bytes > kHalfBytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  }
  if (off_ + bytes > kHalfBytes) {
    CUDA_CHECK(cudaEventRecord(done_[cur_], stream));
    recorded_[cur_] = true;
    cur_ ^= 1;
    if (recorded_[cur_]) CUDA_CHECK(cudaEventSynchronize(done_[cur_]));
    off_ = 0;
  }
  uint8_t* slot = buf_ + uint64_t(cur_) * kHalfBytes + off_;
  std::memcpy(slot, src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, slot, bytes, cudaMemcpyHostToDevice, stream));
  off_ += (bytes + 63) & ~uint64_t(63);
  return absl::OkStatus();
}

}  // namespace paged::cuda
