// Which accelerators this process can use. Host code asks here; the CUDA
// runtime is only touched inside worker/backends/cuda/.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace paged {

struct GpuInfo {
  int index = 0;
  std::string name;
  uint64_t total_bytes = 0;
  int cc_major = 0, cc_minor = 0;
};

// True when this build has the CUDA backend compiled in.
bool CudaCompiledIn();
// The visible GPUs; empty without the CUDA backend, without a driver or
// without a device (never an error: callers fall back to the CPU).
std::vector<GpuInfo> ListGpus();

}  // namespace paged
