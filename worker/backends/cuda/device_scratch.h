// A device buffer that grows on demand, stream-ordered (cudaMallocAsync /
// cudaFreeAsync on the owner's stream), so that growing it never waits for
// the device: work already enqueued keeps the old buffer until it is done.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

class DeviceScratch {
 public:
  // zero_on_growth: a new buffer starts as zero bytes (enqueued memset).
  explicit DeviceScratch(bool zero_on_growth = false) : zero_on_growth_(zero_on_growth) {}
  ~DeviceScratch();  // the owner synchronises its stream first
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  // At least `bytes` bytes, valid for work enqueued on `stream` from now on.
  // Growing while `stream` records a graph is FAILED_PRECONDITION (the
  // recording would name a buffer allocated inside it).
  absl::StatusOr<void*> Get(uint64_t bytes, cudaStream_t stream);
  uint64_t capacity() const { return capacity_; }
  // How many times any scratch of the process has grown: a recorded graph
  // made before the last growth may name a freed buffer.
  static uint64_t Growths();

 private:
  bool zero_on_growth_;
  void* ptr_ = nullptr;
  uint64_t capacity_ = 0;
};

}  // namespace paged::cuda
