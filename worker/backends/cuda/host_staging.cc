#include "worker/backends/cuda/host_staging.h"

#include <cstdlib>
#include <cstring>

#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/transfer.h"

namespace paged::cuda {
namespace {

absl::Status Refused() {
  return absl::FailedPreconditionError(
      "cuda backend: a staged host copy while a step graph is recorded");
}

}  // namespace

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
  CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&buf_), 2 * kHalfBytes, cudaHostAllocMapped));
  CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&buf_dev_), buf_, 0));
  for (cudaEvent_t& e : done_) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  if (const char* v = std::getenv("PAGED_CUDA_KERNEL_UPLOAD")) kernel_copies_ = std::atoi(v) != 0;
  return absl::OkStatus();
}

absl::Status HostStager::Enqueue2D(void* dst, uint64_t dst_pitch, const uint8_t* slot,
                                   uint64_t width, uint64_t rows, cudaStream_t stream) {
  if (kernel_copies_ && width * rows <= kKernelBytes) {
    CUDA_CHECK(cudaError_t(LaunchCopyFromHost2D(dst, dst_pitch, buf_dev_ + (slot - buf_), width,
                                                width, rows, stream)));
    return absl::OkStatus();
  }
  CUDA_CHECK(
      cudaMemcpy2DAsync(dst, dst_pitch, slot, width, width, rows, cudaMemcpyHostToDevice, stream));
  return absl::OkStatus();
}

absl::Status HostStager::Copy(void* dst, const void* src, uint64_t bytes, cudaStream_t stream) {
  if (refuse_) return Refused();
  if (bytes == 0) return absl::OkStatus();
  if (bytes > kHalfBytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  }
  absl::StatusOr<uint8_t*> slot = Take(bytes, stream);
  if (!slot.ok()) return slot.status();
  std::memcpy(*slot, src, bytes);
  return Enqueue2D(dst, bytes, *slot, bytes, 1, stream);
}

absl::Status HostStager::Copy2D(void* dst, uint64_t dst_pitch, const void* src, uint64_t src_pitch,
                                uint64_t width, uint64_t rows, cudaStream_t stream) {
  if (refuse_) return Refused();
  if (width == 0 || rows == 0) return absl::OkStatus();
  const uint64_t bytes = width * rows;
  if (bytes > kHalfBytes) {  // row by row, straight from the caller's memory
    for (uint64_t i = 0; i < rows; ++i) {
      CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(dst) + i * dst_pitch,
                                 static_cast<const uint8_t*>(src) + i * src_pitch, width,
                                 cudaMemcpyHostToDevice, stream));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<uint8_t*> slot = Take(bytes, stream);
  if (!slot.ok()) return slot.status();
  for (uint64_t i = 0; i < rows; ++i) {
    std::memcpy(*slot + i * width, static_cast<const uint8_t*>(src) + i * src_pitch, width);
  }
  return Enqueue2D(dst, dst_pitch, *slot, width, rows, stream);
}

absl::StatusOr<uint8_t*> HostStager::Take(uint64_t bytes, cudaStream_t stream) {
  if (off_ + bytes > kHalfBytes) {
    CUDA_CHECK(cudaEventRecord(done_[cur_], stream));
    recorded_[cur_] = true;
    cur_ ^= 1;
    if (recorded_[cur_]) CUDA_CHECK(cudaEventSynchronize(done_[cur_]));
    off_ = 0;
  }
  uint8_t* slot = buf_ + uint64_t(cur_) * kHalfBytes + off_;
  off_ += (bytes + 63) & ~uint64_t(63);
  return slot;
}

}  // namespace paged::cuda
