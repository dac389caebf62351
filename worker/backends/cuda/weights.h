// Kernels that read weight matrices in their stored formats (common/quant.h):
// dequantization to f16 for the matrix-product path, and the embedding gather.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// out: [rows, cols] f16 = s * q of an int8 or int4 matrix.
CudaError LaunchDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream);

// out[i, :] = f32(table[ids[i], :]) for any stored type; ids: [n] device,
// out: [n, table.cols].
CudaError LaunchEmbedding(const MatrixView& table, const int32_t* ids, int n, float* out,
                          cudaStream_t stream);

}  // namespace paged::cuda
