// Weight rows, MatMul and Embedding: each weight row is decoded to f32 once
// (per block of token rows) and dotted with the token rows, like run.c's
// matmul with the dequantization of its int8 variant (runq.c) folded in.
// ggml block formats (q4_k, q6_k, ...) decode through the reference
// dequantizer (common/block_quant.h).

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/block_quant.h"
#include "common/check.h"
#include "common/dtype.h"
#include "common/quant.h"
#include "worker/backends/cpu/cpu_kernels.h"

namespace paged::cpu {
namespace {

// Token rows that share one decoded weight row: a block of x stays in cache
// while the rows of W stream past it.
constexpr int64_t kTokenBlock = 32;

// out[i * ldo + r] = x[i, :] . wr + b for i in [i0, i1). Four token rows at a
// time share each load of wr, but every sum still runs over c in order, so
// the result is the same as the one-row loop's.
void DotRows(const float* x, int64_t i0, int64_t i1, int64_t cols, const float* wr, float b,
             int64_t ldo, int64_t r, float* out) {
  int64_t i = i0;
  for (; i + 4 <= i1; i += 4) {
    const float* x0 = x + i * cols;
    const float* x1 = x0 + cols;
    const float* x2 = x1 + cols;
    const float* x3 = x2 + cols;
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    for (int64_t c = 0; c < cols; ++c) {
      const float w = wr[c];
      s0 += x0[c] * w;
      s1 += x1[c] * w;
      s2 += x2[c] * w;
      s3 += x3[c] * w;
    }
    out[(i + 0) * ldo + r] = s0 + b;
    out[(i + 1) * ldo + r] = s1 + b;
    out[(i + 2) * ldo + r] = s2 + b;
    out[(i + 3) * ldo + r] = s3 + b;
  }
  for (; i < i1; ++i) {
    const float* xi = x + i * cols;
    float s = 0.f;
    for (int64_t c = 0; c < cols; ++c) s += xi[c] * wr[c];
    out[i * ldo + r] = s + b;
  }
}

}  // namespace

const float* HalfTable() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = HalfToFloat(uint16_t(h));
    return t;
  }();
  return table.data();
}

const float* WeightRow(const WeightRef& w, int64_t r, float* scratch) {
  const int64_t cols = w.cols;
  switch (w.dtype) {
    case DType::kF32:
      return static_cast<const float*>(w.data) + r * cols;
    case DType::kF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + r * cols;
      const float* h2f = HalfTable();
      for (int64_t c = 0; c < cols; ++c) scratch[c] = h2f[src[c]];
      return scratch;
    }
    case DType::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(w.data) + r * cols;
      for (int64_t c = 0; c < cols; ++c) scratch[c] = Bf16ToFloat(src[c]);
      return scratch;
    }
    case DType::kI8: {
      const int8_t* q = static_cast<const int8_t*>(w.data) + r * cols;
      const uint16_t* s = static_cast<const uint16_t*>(w.scales) + r * GroupsPerRow(cols, w.group);
      DequantizeRowInt8(q, s, cols, w.group, scratch);
      return scratch;
    }
    case DType::kI4: {
      const uint8_t* q = static_cast<const uint8_t*>(w.data) + r * ((cols + 1) / 2);
      const uint16_t* s = static_cast<const uint16_t*>(w.scales) + r * GroupsPerRow(cols, w.group);
      DequantizeRowInt4(q, s, cols, w.group, scratch);
      return scratch;
    }
    default:
      break;
  }
  // The ggml block formats: rows of whole blocks, decoded by the reference.
  PAGED_CHECK(IsBlockFormat(w.dtype), "unknown weight dtype ", int(w.dtype));
  const uint64_t row_bytes = PayloadBytes(w.dtype, 1, uint64_t(cols));
  DequantizeRow(w.dtype, static_cast<const uint8_t*>(w.data) + uint64_t(r) * row_bytes, cols,
                scratch);
  return scratch;
}

void Embedding(ThreadPool& pool, const WeightRef& table, const int32_t* ids, int n, float* out) {
  const int64_t cols = table.cols;
  const int64_t grain = std::max<int64_t>(1, kChunkWork / std::max<int64_t>(cols, 1));
  pool.ParallelFor(0, n, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      PAGED_CHECK(ids[i] >= 0 && ids[i] < table.rows, "token id ", ids[i]);
      float* o = out + i * cols;
      const float* row = WeightRow(table, ids[i], o);  // decodes straight into o
      if (row != o) std::memcpy(o, row, size_t(cols) * sizeof(float));
    }
  });
}

// out[n, rows] (row stride ldo) = x[n, cols] @ W^T + bias. Work items are (token block, output
// row) pairs, row-major within a token block, so a chunk is a run of rows of
// W against one block of x.
void MatMul(ThreadPool& pool, const float* x, int n, const WeightRef& w, const float* bias,
            float* out, int64_t ldo) {
  const int64_t rows = w.rows, cols = w.cols;
  if (n <= 0 || rows <= 0) return;
  if (ldo <= 0) ldo = rows;
  const int64_t n_blocks = (n + kTokenBlock - 1) / kTokenBlock;
  const int64_t item_work = std::min<int64_t>(n, kTokenBlock) * std::max<int64_t>(cols, 1);
  const int64_t grain = std::max<int64_t>(1, kChunkWork / item_work);
  pool.ParallelFor(0, n_blocks * rows, grain, [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> scratch;
    if (w.dtype != DType::kF32 && scratch.size() < size_t(cols)) scratch.resize(size_t(cols));
    for (int64_t item = lo; item < hi; ++item) {
      const int64_t blk = item / rows, r = item % rows;
      const int64_t i0 = blk * kTokenBlock, i1 = std::min<int64_t>(n, i0 + kTokenBlock);
      const float* wr = WeightRow(w, r, scratch.data());
      DotRows(x, i0, i1, cols, wr, bias ? bias[r] : 0.f, ldo, r, out);
    }
  });
}

}  // namespace paged::cpu
