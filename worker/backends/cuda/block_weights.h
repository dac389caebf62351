// Kernels over weights in the ggml block formats, read as stored (decoders in
// block_decode.cuh): the f16 dequantization of the matrix-product path, the
// fused decode GEMV and the embedding gather. Called through weights.h, which
// dispatches on the element type; each returns cudaErrorInvalidValue for a
// type that is not a block format or a row that is not whole blocks, and
// cudaErrorMisalignedAddress when w.data is not aligned to what the format's
// loads assume (2 bytes; 4 for q4_1 / q2_k, 8 for q5_1 / iq4_xs, 16 for
// q4_k / q5_k; any for mxfp4), which segment and device allocations always
// are.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// out: [w.rows, w.cols] f16 (16-byte aligned), the decoded values rounded.
CudaError LaunchBlockDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream);

// out[i * ldo + r] = x[i, :] . w[r, :] (+ bias[r]) for i < n, 1 <= n <= 8;
// x 16-byte aligned. cudaErrorNotSupported when n or x do not fit.
CudaError LaunchBlockGemv(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                          int64_t ldo, cudaStream_t stream);

// One product of a grouped GEMV: a matrix of the launch's type and shape,
// its x [n, cols] (16-byte aligned), out (row i at out + i * ldo) and bias
// [rows] or null.
struct GemvTask {
  const void* w;
  const float* bias;
  const float* x;
  float* out;
};
inline constexpr int kMaxGroupedTasks = 65535;  // per launch (grid.y); more: several

// The alignment the grouped GEMV needs of each task's w (the format's
// loads), or 0 where it cannot read `type` with `cols` columns: the block
// formats (whole blocks a row) and f16 / bf16 (cols a multiple of 16).
int GroupedGemvAlign(ElemType type, int64_t cols);

// LaunchBlockGemv's product for each of n_tasks tasks (`tasks`: device
// memory), all [rows, cols] of `type` with n (1..8) token rows, in one launch
// (the routed experts of a layer). cudaErrorInvalidValue where
// GroupedGemvAlign is 0, cudaErrorNotSupported for n outside 1..8.
CudaError LaunchGroupedGemv(ElemType type, int64_t rows, int64_t cols, const GemvTask* tasks,
                            int n_tasks, int n, int64_t ldo, cudaStream_t stream);

// out[i, :] = table[ids[i], :] decoded to f32, bit for bit DequantizeRow's.
CudaError LaunchBlockEmbedding(const MatrixView& table, const int32_t* ids, int n, float* out,
                               cudaStream_t stream);

}  // namespace paged::cuda
