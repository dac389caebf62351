// Kernels that read weight matrices in their stored formats (common/quant.h):
// dequantization to f16 for the matrix-product path, and the embedding gather.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// out: [rows, cols] f16 = s * q of an int8 or int4 matrix.
CudaError LaunchDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream);

// Decode products of int8 / int4 weights with the dequantization fused in:
// out[i * ldo + r] = x[i, :] . (s * q)[r, :] (+ bias[r]) for i < n <= 8,
// r < w.rows, reading each weight row once (one warp per row, f32
// accumulation). Needs cols and group multiples of 8 and x 16-byte aligned;
// returns cudaErrorNotSupported otherwise (the caller dequantizes instead).
// PAGED_CUDA_NO_FUSED_GEMV=1 turns it off (the same error).
inline constexpr int kFusedGemvMaxRows = 8;
CudaError LaunchGemvQuant(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                          int64_t ldo, cudaStream_t stream);

// out[i, :] = f32(table[ids[i], :]) for any stored type; ids: [n] device,
// out: [n, table.cols].
CudaError LaunchEmbedding(const MatrixView& table, const int32_t* ids, int n, float* out,
                          cudaStream_t stream);

}  // namespace paged::cuda
