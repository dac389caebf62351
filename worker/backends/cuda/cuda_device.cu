#include <cuda_runtime.h>

#include "worker/backends/cuda/cuda_device.h"

namespace paged::cuda {

std::vector<GpuInfo> ListDevices() {
  std::vector<GpuInfo> out;
  int n = 0;
  // No driver or no device is not an error here: the caller uses the CPU.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return out;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    out.push_back(GpuInfo{i, p.name, uint64_t(p.totalGlobalMem), p.major, p.minor});
  }
  return out;
}

}  // namespace paged::cuda
