// CUDA device queries. No CUDA types in this header.
#pragma once

#include <vector>

#include "worker/device.h"

namespace paged::cuda {

std::vector<GpuInfo> ListDevices();

}  // namespace paged::cuda
