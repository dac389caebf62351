// Internal: the per-format entry points behind MatMul (matmul.cc), one per
// matmul_<format>.cc. Each runs on the calling thread and dispatches to the
// best Highway target of the CPU. No Highway types here.
#pragma once

#include <cstdint>

#include "worker/engine/types.h"

namespace paged::cpu_exec {

// Activations quantized to 8 bits (matmul_q8.cc), token row i of x:
//   x[i, c] ~ d[i, c / kQ8Block] * q[i, c], q in [-127, 127],
//   s16[i, g] = sum of q[i, 16 g .. 16 g + 15], s32 likewise over 32.
inline constexpr int64_t kQ8Block = 256;
struct Q8Rows {
  const int8_t* q = nullptr;     // [n, cols]
  const float* d = nullptr;      // [n, cols / kQ8Block]
  const int16_t* s16 = nullptr;  // [n, cols / 16]
  const int16_t* s32 = nullptr;  // [n, cols / 32]
};

// One MatMul call, as every kernel sees it (shapes as in matmul.h).
struct RowsArgs {
  const float* x = nullptr;  // [n, w->cols]
  int n = 0;
  const WeightRef* w = nullptr;
  int64_t r0 = 0;               // out column 0 is row r0
  const float* bias = nullptr;  // [w->rows] or null
  float* out = nullptr;         // [n, ldo]
  int64_t ldo = 0;
  const Q8Rows* q8 = nullptr;  // the Q8 kernels' x (x is then unused)
};

// Computes rows [ra, rb) (r0 <= ra <= rb <= r1) of the product for all n
// token rows.
using RowsFn = void (*)(const RowsArgs& a, int64_t ra, int64_t rb);

void MatMulRowsF32(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsF16(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsBF16(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsInt8(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsInt4(const RowsArgs& a, int64_t ra, int64_t rb);
// The ggml block formats (common/block_quant.h), one matmul_<format>.cc each.
void MatMulRowsQ4_0(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ4_1(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ5_0(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ5_1(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ8_0(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ2_K(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ3_K(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ4_K(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ5_K(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsQ6_K(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsIQ4_NL(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsIQ4_XS(const RowsArgs& a, int64_t ra, int64_t rb);
void MatMulRowsMXFP4(const RowsArgs& a, int64_t ra, int64_t rb);

// The products with 8-bit activations (matmul_q8.cc): x quantized per
// row into q [n, cols], d [n, cols / kQ8Block], s16 [n, cols / 16] (cols a
// multiple of kQ8Block) and s32 [n, cols / 32], and the integer kernels that read a.q8, where the
// CPU has them (HasQ8Kernels(): AVX-512 or AVX2).
void QuantizeQ8(const float* x, int n, int64_t cols, int8_t* q, float* d, int16_t* s16,
                int16_t* s32);
bool HasQ8Kernels();
// The formats with integer kernels, and the kernel (any of them, by a.w's
// dtype; a.q8 set).
inline bool IsQ8Format(DType t) {
  return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K;
}
void MatMulRowsQ8(const RowsArgs& a, int64_t ra, int64_t rb);

// Rows per tile block: every ParallelFor chunk but the last holds a multiple
// of this many rows (matmul-inl.h's kRowBlock).
inline constexpr int64_t kRowBlock = 4;

// Weight rows a tile reads at once when there is one token row (decode), for
// the formats whose decoders do not ask for 4 (kInterleaveRows): 1, 2 or 4
// sequential streams (and FMA chains) per thread, far apart in the thread's
// chunk of rows (matmul-inl.h's DecodeRows). PAGED_CPU_EXEC_DECODE_ROWS
// overrides the default (README.md has the measurements). Any value gives
// the same bits (matmul-inl.h's determinism rule).
int DecodeRowsPerTile();

}  // namespace paged::cpu_exec
