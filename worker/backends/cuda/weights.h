// Kernels that read weight matrices in their stored formats (common/quant.h,
// and the ggml block formats of common/block_quant.h through
// block_weights.h): dequantization to f16 for the matrix-product path, the
// fused decode GEMV, and the embedding gather.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// out: [rows, cols] f16 = s * q of an int8 or int4 matrix, or the decoded
// values of a block-format matrix (whole blocks per row), rounded to f16.
CudaError LaunchDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream);

// Decode products reading the stored weights (the dequantization fused in):
// out[i * ldo + r] = x[i, :] . W[r, :] (+ bias[r]) for i < n <= 8, r <
// w.rows, reading each weight row once, f32 accumulation. f16, bf16, int8
// and int4 at one token row where their rows allow 16-byte loads:
// gemv_wide.h. Other int8 / int4 products: one warp per row, cols and group
// multiples of 8. Block
// formats: one warp per 4 rows (n = 1) or 2, lanes over the row's blocks
// (block_weights.h). x 16-byte aligned. Returns cudaErrorNotSupported where
// it does not apply (the caller takes cuBLAS, quantized weights dequantized
// first).
//
// On by default (its GPU tests pass on the H100, and it took int4 paged
// decode from 75% to 87% of its bound: docs/BENCHMARKS.md);
// PAGED_CUDA_FUSED_GEMV=0 in the environment turns it off, so every
// product takes the cuBLAS path. The variable is read once, at the first
// call; ReadFusedGemvEnv() reads it again (tests switch paths in-process).
inline constexpr int kFusedGemvMaxRows = 8;
CudaError LaunchGemv(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                     int64_t ldo, cudaStream_t stream);
bool FusedGemvEnabled();
void ReadFusedGemvEnv();

// out[i, :] = f32(table[ids[i], :]) for any stored type (block formats bit
// for bit DequantizeRow's values); ids: [n] device, out: [n, table.cols].
CudaError LaunchEmbedding(const MatrixView& table, const int32_t* ids, int n, float* out,
                          cudaStream_t stream);

}  // namespace paged::cuda
