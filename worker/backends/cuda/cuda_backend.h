// The CUDA backend (cuBLAS for matrix products, our kernels for the rest).
// No CUDA types here: everything else builds without nvcc.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"

namespace paged {

// Creates a backend on GPU `device`: its own compute stream and cuBLAS
// handle. PAGED_CUDA_SYNC=1 in the environment synchronizes after every
// launch and checks for errors (a fault is reported where it happens).
absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device);

}  // namespace paged
