// The decode GEMV of 16-bit and group-quantized weights read 16 bytes at a
// time: out[r] = x . W[r, :] (+ bias[r]) for one token row (n = 1), r <
// w.rows, f32 x and accumulation, each weight row read once. One warp per
// row; a lane keeps several 16-byte loads in flight, which is what HBM
// needs at one token row. On the H100, 14336 x 4096 f16: 2281 GB/s against
// cuBLAS's 1835 on x cast to f16. At 8 token rows it was several times
// slower than cuBLAS (each lane reads its x values from L1 for every row:
// twice the weight bytes at f16, more for int8 / int4), hence n = 1 only
// (larger n: cuBLAS for 16-bit weights, the kernel of weights.cu for int8 /
// int4). Applies to f16 and bf16 (cols a multiple of 8), int8 (16, and a
// group a multiple of 16) and int4 (32, group a multiple of 32), weights
// and x 16-byte aligned; elsewhere LaunchGemvWide returns
// cudaErrorNotSupported and the caller takes another path. The int8 / int4
// values are s * q as in LaunchDequantizeF16, but summed in f32 without the
// f16 rounding of the dequantized matrix.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

inline constexpr int kGemvWideMaxRows = 1;
CudaError LaunchGemvWide(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                         int64_t ldo, cudaStream_t stream);

}  // namespace paged::cuda
