// The CPU executor's matrix products: out = x @ W^T (+ bias) for a range of
// output rows, reading W in place in its stored format (f32, f16, bf16 and
// the group-quantized int8 / int4 of common/quant.h), vectorized with
// Highway for the best SIMD target of the running CPU (README.md).
//
// Determinism: each out(i, r) is a dot product that accumulates over the
// columns in one fixed order of lanes and reduces the lanes in one fixed
// order, so its bits do not depend on n, on the row range, on the thread
// count or on the other token rows: a token's result does not depend on what
// it is batched with, and a product split by rows (some on the CPU, some
// elsewhere) equals the unsplit one byte for byte. Against the scalar
// reference (paged::cpu::MatMul) results differ only by f32 summation order:
// weights are dequantized exactly as DequantizeRow* does, in registers.
#pragma once

#include <cstdint>
#include <string>

#include "common/dtype.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/engine/types.h"

namespace paged::cpu_exec {

// out[i * ldo + (r - r0)] = bias[r] (if bias) + sum_c x[i * w.cols + c] * W[r, c]
// for 0 <= i < n, r0 <= r < r1.
//   x:    [n, w.cols] f32, host memory
//   w:    [w.rows, w.cols] in w.dtype (Supports(w.dtype)), host memory, read only
//   bias: [w.rows] f32 or null (indexed by the absolute row r)
//   out:  [n, ldo] f32 with ldo >= r1 - r0; only columns [0, r1 - r0) are written
// Rows are split over the pool's threads. Preconditions (checked; a violation
// aborts, as it is a caller's bug): 0 <= r0 <= r1 <= w.rows, n >= 0, a
// supported dtype, group >= 1 for quantized dtypes.
void MatMul(ExecPool& pool, const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1,
            const float* bias, float* out, int64_t ldo);

// Several products of the same x in one dispatch over the pool: the
// products' row ranges are laid end to end and split over the threads as
// one range. Bit-identical to a MatMul per product.
struct MatMulJob {
  const WeightRef* w;
  int64_t r0, r1;
  const float* bias;
  float* out;
  int64_t ldo;
  const float* x;  // [n, w->cols]
  int n;
};
void MatMulMany(ExecPool& pool, const MatMulJob* jobs, int count);

// The same on the calling thread only (for callers that split the rows over
// their own threads). Bit-identical to MatMul.
void MatMulRows(const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1,
                const float* bias, float* out, int64_t ldo);

// Whether MatMul reads weights of this dtype.
bool Supports(DType t);

// The Highway target chosen at run time for this CPU, e.g. "AVX3", "AVX2".
std::string TargetName();

// Sum of p[0, count), read at the chosen target's vector width as four
// sequential streams (the range's quarters): a streaming read like a tile's,
// for measuring memory bandwidth.
float SumFloats(const float* p, int64_t count);

}  // namespace paged::cpu_exec
