// Host -> device copies of pageable host data without stalling the stream.
//
// cudaMemcpyAsync from pageable memory may synchronise with the stream. Small
// copies therefore go through a pinned buffer in two halves: the data is
// copied into the current half on the host and the DMA is enqueued from
// there. When a half is full the other one is taken, after waiting (on the
// host) for the copies last enqueued from it, which have normally long
// finished. Copies larger than a half go straight from the caller's memory.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/backends/cuda/kernel_types.h"

typedef struct CUevent_st* cudaEvent_t;

namespace paged::cuda {

class HostStager {
 public:
  static constexpr uint64_t kHalfBytes = 4ull << 20;
  // Staged copies up to this size are read from the pinned buffer by a
  // kernel (LaunchCopyFromHost2D) rather than a DMA, so that they do not
  // wait behind the pager's layer copies on the host-to-device copy engine
  // (the hybrid step's host rows, a step's metadata): on the H100 a split
  // f16 decode step went from 121 ms to 77-83 ms, its wait for inputs from
  // 57 ms to 6 ms (scripts/device/upload_ab.sh, docs/BENCHMARKS.md).
  // PAGED_CUDA_KERNEL_UPLOAD=0: every staged copy by DMA, as before.
  static constexpr uint64_t kKernelBytes = 1ull << 20;

  HostStager() = default;
  ~HostStager();
  HostStager(const HostStager&) = delete;
  HostStager& operator=(const HostStager&) = delete;

  absl::Status Init();
  // While set, Copy and Copy2D fail (FAILED_PRECONDITION): a graph being
  // recorded would replay a copy from a buffer reused since.
  void set_refuse(bool refuse) { refuse_ = refuse; }
  // Enqueues dst <- src on `stream`; src may be reused as soon as this returns.
  absl::Status Copy(void* dst, const void* src, uint64_t bytes, cudaStream_t stream);
  // Enqueues dst + i * dst_pitch <- src + i * src_pitch (`width` bytes) for
  // i < rows: packed into the pinned buffer, then one 2-D DMA.
  absl::Status Copy2D(void* dst, uint64_t dst_pitch, const void* src, uint64_t src_pitch,
                      uint64_t width, uint64_t rows, cudaStream_t stream);

 private:
  uint8_t* buf_ = nullptr;      // pinned, 2 * kHalfBytes
  uint8_t* buf_dev_ = nullptr;  // buf_ as the device sees it
  bool kernel_copies_ = true;
  bool refuse_ = false;
  // dst <- the staged rows at `slot`, by kernel or DMA as above.
  absl::Status Enqueue2D(void* dst, uint64_t dst_pitch, const uint8_t* slot, uint64_t width,
                         uint64_t rows, cudaStream_t stream);
  cudaEvent_t done_[2] = {nullptr, nullptr};
  bool recorded_[2] = {false, false};
  // Room for `bytes` in the current half (switching halves when full).
  absl::StatusOr<uint8_t*> Take(uint64_t bytes, cudaStream_t stream);
  int cur_ = 0;
  uint64_t off_ = 0;
};

}  // namespace paged::cuda
