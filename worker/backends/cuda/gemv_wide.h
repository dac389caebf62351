// The decode GEMV of 16-bit and group-quantized weights read 16 bytes at a
// time: out[r] = x . W[r, :] (+ bias[r]) for one token row (n = 1), r <
// w.rows, f32 x and accumulation, each weight row read once. A warp takes
// 1, 2 or 4 consecutive rows (int8 / int4: 4; f16 / bf16: 4 where that
// leaves every SM four blocks, else 1, or 4 with the rows split between a
// block's warps, GemvSplitMode: gemv_wide.cu has the measurements);
// a lane keeps eight 16-byte loads in flight, which is what HBM needs at
// one token row, and reads each x value once for the warp's rows (x is
// f32: at one row a warp the x reads from L1, 2x the weight bytes at f16,
// 4x / 8x at int8 / int4, set the pace). On the H100 at 14336 x 4096:
// f16 2723 GB/s against cuBLAS's 1835 on x cast to f16, int8 1974, int4
// 1073 (455 at one row a warp). At 8 token rows it was several
// times slower than cuBLAS, hence n = 1 only
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

CudaError LaunchGemvWide(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                         cudaStream_t stream);

// Several products of the same x in one launch (a layer's q, k and v; gate
// and up): out_j = x . W_j^T (+ bias_j) for one token row, every W_j of one
// type, cols and group, each fitting as above; the grid is cut between the
// jobs by their rows. cudaErrorNotSupported where they do not all fit
// (nothing launched: the caller runs them one by one).
inline constexpr int kGemvWideMaxJobs = 4;
struct GemvWideJob {
  MatrixView w;
  const float* bias = nullptr;
  float* out = nullptr;
  // Or null: the product (+ bias) is added to add_to[r] instead, and out is
  // not written (the residual stream's add in the same launch).
  float* add_to = nullptr;
};
// With norm_w, x is first RMS-normed as RmsNorm does (x / sqrt(mean(x^2) +
// eps) * norm_w): the kernel scales each x value by norm_w as it reads it,
// sums the squares of x on the way (every warp reads all of x) and scales
// each dot by 1 / rms at the end, so the norm needs no launch of its own.
// f16 / bf16 weights only (int8 / int4: cudaErrorNotSupported; their GEMV
// is bound by its instructions, and the norm's cost more than the launch).
CudaError LaunchGemvWideMany(const GemvWideJob* jobs, int count, const float* x,
                             cudaStream_t stream, const float* norm_w = nullptr, float eps = 0.f);

// The GEMV is launched by LaunchPdl (pdl.h): launched as a programmatic
// dependent, its blocks prefetch their rows' first chunks into L2 before
// they wait for x.

// Rows per warp for every later launch: 1, 2 or 4; anything else returns to
// the automatic choice. PAGED_CUDA_GEMV_ROWS in the environment sets it at
// the first launch (for measuring; tests call this to cover each).
void SetGemvWideRowsPerWarp(int rows);

// Whether CudaBackend::MatMulMany adds a job's product to its add_to in the
// GEMV (else: the GEMV, then an Add). On (checked on the H100: the
// GEMV takes no longer and the Add's launch goes); PAGED_CUDA_GEMV_ADD=0 in
// the environment turns it off at the first call, SetGemvFusedAdd for the
// tests.
bool GemvFusedAdd();
void SetGemvFusedAdd(bool on);

// Whether a block's rows are split between its four warps by columns
// (each warp a quarter of every row, summed in shared memory) rather than
// one warp a row group: four times the blocks, each a quarter as long, a
// warp's chain of loads a quarter as long. By shape (the default): f16 /
// bf16 always, int8 / int4 where rows are 8192 values or longer (gemv_wide.cu
// has the measurements). PAGED_CUDA_GEMV_SPLIT=0 / 1 (read at the first
// launch) makes it never / always, for measuring; SetGemvSplitMode for the
// tests.
inline constexpr int kGemvSplitNever = 0;
inline constexpr int kGemvSplitAlways = 1;
inline constexpr int kGemvSplitByShape = 2;
int GemvSplitMode();
void SetGemvSplitMode(int mode);

}  // namespace paged::cuda
