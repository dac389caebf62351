// Internal: the per-format entry points behind MatMul (matmul.cc), one per
// matmul_<format>.cc. Each runs on the calling thread and dispatches to the
// best Highway target of the CPU. No Highway types here.
#pragma once

#include <cstdint>

#include "worker/engine/types.h"

namespace paged::cpu_exec {

// Activations quantized to 8 bits (matmul_q8.cc) in blocks of `block`
// columns, token row i of x:
//   x[i, c] ~ d[i, c / block] * q[i, c], q in [-127, 127],
//   s16[i, g] = sum of q[i, 16 g .. 16 g + 15], s32 likewise over 32.
// Blocks of 256 for the K formats (llama.cpp's q8_K), of 32 for the formats
// of 32-column blocks and groups (its q8_0, whose d is rounded to f16 once q
// is computed from the f32 d: so is ours): Q8BlockOf.
inline constexpr int64_t kQ8Block = 256;
inline constexpr int64_t kQ8ChunkBlock = 32;
struct Q8Rows {
  const int8_t* q = nullptr;     // [n, cols]
  const float* d = nullptr;      // [n, cols / block]
  const int16_t* s16 = nullptr;  // [n, cols / 16]
  const int16_t* s32 = nullptr;  // [n, cols / 32]
  int64_t block = kQ8Block;
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
// row into q [n, cols], d [n, cols / block], s16 [n, cols / 16] and s32 [n,
// cols / 32] (cols a multiple of block), and the integer kernels that read
// a.q8, where the CPU has them for w (HasQ8Kernels: the K formats on AVX-512
// and AVX2, the formats of 32-column chunks on AVX2).
void QuantizeQ8(const float* x, int n, int64_t cols, int64_t block, int8_t* q, float* d,
                int16_t* s16, int16_t* s32);
bool HasQ8Kernels(const WeightRef& w);
// The matrices whose products take 8-bit activations when asked: the K
// formats, in blocks of 256; q8_0 and q4_0 (blocks of 32), int8 and int4
// with groups of a multiple of 32 on rows of a multiple of 32, in blocks of
// 32. And the kernel (any of them, by a.w's dtype; a.q8 set). For int4,
// a.q8->q holds each 32-column chunk's even columns first, then its odd
// ones, as the chunk's 16 bytes hold them in their low and high nibbles
// (s16 unused).
inline bool IsKFormat(DType t) {
  return t == DType::kQ4_K || t == DType::kQ5_K || t == DType::kQ6_K;
}
inline bool IsQ8Format(const WeightRef& w) {
  if (IsKFormat(w.dtype)) return true;
  switch (w.dtype) {
    case DType::kQ8_0:
    case DType::kQ4_0:
      return true;
    case DType::kI8:
    case DType::kI4:
      return w.cols % kQ8ChunkBlock == 0 && w.group > 0 && w.group % kQ8ChunkBlock == 0;
    default:
      return false;
  }
}
inline int64_t Q8BlockOf(DType t) { return IsKFormat(t) ? kQ8Block : kQ8ChunkBlock; }
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
