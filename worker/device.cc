#include "worker/device.h"

#ifdef PAGED_HAVE_CUDA
#include "worker/backends/cuda/cuda_device.h"
#endif

namespace paged {

#ifdef PAGED_HAVE_CUDA
bool CudaCompiledIn() { return true; }
std::vector<GpuInfo> ListGpus() { return cuda::ListDevices(); }
#else
bool CudaCompiledIn() { return false; }
std::vector<GpuInfo> ListGpus() { return {}; }
#endif

}  // namespace paged
