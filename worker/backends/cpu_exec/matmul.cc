// MatMul's front: checks the call, picks the format's kernel and splits the
// output rows over the pool in chunks of whole row blocks.
#include "worker/backends/cpu_exec/matmul.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "common/check.h"
#include "common/quant.h"
#include "worker/backends/cpu_exec/kernels.h"

namespace paged::cpu_exec {
namespace {

// DecodeRowsPerTile()'s default.
constexpr int kDefaultDecodeRows = 4;

// Multiply-adds worth one ParallelFor chunk: below this a call runs inline.
constexpr int64_t kMinChunkWork = 64 * 1024;

// Multiply-adds worth at most one ParallelFor chunk: 64 rows of 4096 columns
// at one token row (512 KB of f16), some 30 us of a decode's product. With
// a few long chunks per thread instead (a quarter of a thread's share), the
// last chunk left one thread working alone for 120-160 us per product, 15
// products per decode step (measured on the 2-core build machine).
constexpr int64_t kMaxChunkWork = 256 * 1024;

// MaxChunk rows (at least one row block) for products of row_work
// multiply-adds per weight row.
int64_t MaxChunkRows(int64_t row_work) {
  return std::max<int64_t>(kRowBlock, kMaxChunkWork / row_work);
}

RowsFn KernelFor(DType t) {
  switch (t) {
    case DType::kF32:
      return &MatMulRowsF32;
    case DType::kF16:
      return &MatMulRowsF16;
    case DType::kBF16:
      return &MatMulRowsBF16;
    case DType::kI8:
      return &MatMulRowsInt8;
    case DType::kI4:
      return &MatMulRowsInt4;
    case DType::kQ4_0:
      return &MatMulRowsQ4_0;
    case DType::kQ4_1:
      return &MatMulRowsQ4_1;
    case DType::kQ5_0:
      return &MatMulRowsQ5_0;
    case DType::kQ5_1:
      return &MatMulRowsQ5_1;
    case DType::kQ8_0:
      return &MatMulRowsQ8_0;
    case DType::kQ2_K:
      return &MatMulRowsQ2_K;
    case DType::kQ3_K:
      return &MatMulRowsQ3_K;
    case DType::kQ4_K:
      return &MatMulRowsQ4_K;
    case DType::kQ5_K:
      return &MatMulRowsQ5_K;
    case DType::kQ6_K:
      return &MatMulRowsQ6_K;
    case DType::kIQ4_NL:
      return &MatMulRowsIQ4_NL;
    case DType::kIQ4_XS:
      return &MatMulRowsIQ4_XS;
    case DType::kMXFP4:
      return &MatMulRowsMXFP4;
  }
  return nullptr;
}

// One x quantized to 8 bits (QuantizeQ8), in the blocks each of its
// products needs (256 for the K formats, 32 for the others), each at the
// first product that needs it; and, for matrices the CPU has no integer
// kernels for, the f32 x' = d * q the f32 kernels multiply instead: the same
// product up to summation order.
class Q8Activations {
 public:
  void Prepare(const float* x, int n, int64_t cols) {
    x_ = x, n_ = n, cols_ = cols;
    for (Scheme& s : schemes_) s.quantized = s.dequantized = s.even_odd = false;
  }

  // Points a at it: a.q8 (integer kernels for a.w) or a.x (x').
  void Point(RowsArgs& a) {
    Scheme& s = schemes_[IsKFormat(a.w->dtype) ? 0 : 1];
    const int64_t block = Q8BlockOf(a.w->dtype);
    const size_t count = size_t(n_) * size_t(cols_);
    if (!s.quantized) {
      s.q.resize(count);
      s.d.resize(count / size_t(block));
      s.s16.resize(count / 16);
      s.s32.resize(count / 32);
      QuantizeQ8(x_, n_, cols_, block, s.q.data(), s.d.data(), s.s16.data(), s.s32.data());
      s.rows = Q8Rows{s.q.data(), s.d.data(), s.s16.data(), s.s32.data(), block};
      s.quantized = true;
    }
    if (!HasQ8Kernels(*a.w)) {
      if (!s.dequantized) {
        s.x.resize(count);
        for (size_t i = 0; i < count; ++i) s.x[i] = s.d[i / size_t(block)] * float(s.q[i]);
        s.dequantized = true;
      }
      a.x = s.x.data();
      return;
    }
    if (a.w->dtype != DType::kI4) {
      a.q8 = &s.rows;
      return;
    }
    if (!s.even_odd) {  // kernels.h: each chunk's even columns, then its odd ones
      s.q_even_odd.resize(count);
      for (size_t c = 0; c < count; c += 32) {
        for (size_t j = 0; j < 16; ++j) {
          s.q_even_odd[c + j] = s.q[c + 2 * j];
          s.q_even_odd[c + 16 + j] = s.q[c + 2 * j + 1];
        }
      }
      s.rows_even_odd = s.rows;
      s.rows_even_odd.q = s.q_even_odd.data();
      s.even_odd = true;
    }
    a.q8 = &s.rows_even_odd;
  }

 private:
  struct Scheme {
    std::vector<int8_t> q, q_even_odd;
    std::vector<float> d, x;
    std::vector<int16_t> s16, s32;
    Q8Rows rows, rows_even_odd;
    bool quantized = false, dequantized = false, even_odd = false;
  };
  const float* x_ = nullptr;
  int n_ = 0;
  int64_t cols_ = 0;
  Scheme schemes_[2];  // blocks of 256, of 32
};

// Whether a product takes 8-bit activations: the pool asks for them and the
// format has integer kernels (whole super-blocks: Check).
bool UseQ8(const ExecPool& pool, const WeightRef& w, int n, int64_t r0, int64_t r1) {
  return pool.q8_activations() && IsQ8Format(w) && n > 0 && r1 > r0 && w.cols > 0;
}

// The kernel of a call: the integer one where its x was quantized for it,
// else the format's.
RowsFn KernelOf(const RowsArgs& a, RowsFn f32_fn) {
  return a.q8 != nullptr ? &MatMulRowsQ8 : f32_fn;
}

RowsFn Check(const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1, float* out,
             int64_t ldo) {
  const RowsFn fn = KernelFor(w.dtype);
  PAGED_CHECK(fn != nullptr, "cpu_exec::MatMul: unsupported weight dtype ", int(w.dtype));
  PAGED_CHECK(n >= 0 && w.rows >= 0 && w.cols >= 0);
  PAGED_CHECK(0 <= r0 && r0 <= r1 && r1 <= w.rows, "cpu_exec::MatMul: rows [", r0, ", ", r1,
              ") of ", w.rows);
  PAGED_CHECK(ldo >= r1 - r0, "cpu_exec::MatMul: ldo ", ldo, " < ", r1 - r0);
  if (n == 0 || r1 == r0) return fn;
  PAGED_CHECK(out != nullptr);
  if (w.cols == 0) return fn;
  PAGED_CHECK(x != nullptr && w.data != nullptr);
  if (IsQuantized(w.dtype)) {
    PAGED_CHECK(w.scales != nullptr && w.group >= 1, "cpu_exec::MatMul: group ", w.group);
    // The kernels find a column's group in f32 arithmetic (matmul-inl.h).
    PAGED_CHECK(w.cols < (int64_t{1} << 24), "cpu_exec::MatMul: ", w.cols, " columns");
  }
  if (IsBlockFormat(w.dtype)) {
    // The decoders read whole blocks (matmul_<format>.cc).
    PAGED_CHECK(RowFits(w.dtype, w.cols), "cpu_exec::MatMul: ", w.cols, " columns are not whole ",
                std::string(DTypeName(w.dtype)), " blocks");
  }
  return fn;
}

}  // namespace

int DecodeRowsPerTile() {
  static const int rows = [] {
    const char* v = std::getenv("PAGED_CPU_EXEC_DECODE_ROWS");
    if (v == nullptr) return kDefaultDecodeRows;
    const int d = std::atoi(v);
    return d >= 4 ? 4 : d >= 2 ? 2 : 1;
  }();
  return rows;
}

void MatMul(ExecPool& pool, const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1,
            const float* bias, float* out, int64_t ldo) {
  RowsFn fn = Check(x, n, w, r0, r1, out, ldo);
  if (n == 0 || r1 == r0) return;
  RowsArgs a{x, n, &w, r0, bias, out, ldo};
  thread_local Q8Activations q8;
  if (UseQ8(pool, w, n, r0, r1)) {
    q8.Prepare(x, n, w.cols);
    q8.Point(a);
  }
  fn = KernelOf(a, fn);
  const int64_t row_work = std::max<int64_t>(w.cols, 1) * n;
  const int64_t blocks = std::max<int64_t>(1, kMinChunkWork / (kRowBlock * row_work));
  pool.ParallelFor(
      r0, r1, blocks * kRowBlock, [&](int64_t lo, int64_t hi) { fn(a, lo, hi); },
      MaxChunkRows(row_work));
}

void MatMulMany(ExecPool& pool, const MatMulJob* jobs, int count) {
  if (count <= 0) return;
  // The jobs' rows as one range: [base[k], base[k + 1]) are job k's. A
  // layer's q, k and v (or a wave's few host experts) stay off the heap.
  absl::InlinedVector<RowsFn, 16> fns(static_cast<size_t>(count));
  absl::InlinedVector<RowsArgs, 16> args(static_cast<size_t>(count));
  absl::InlinedVector<int64_t, 17> base(static_cast<size_t>(count) + 1, 0);
  int64_t row_work = 1;
  // 8-bit activations: each distinct (x, n, cols) quantized once (a layer's
  // gate and up, a wave's experts of one row).
  thread_local std::vector<Q8Activations> q8;
  if (q8.size() < size_t(count)) q8.resize(size_t(count));  // no moves once pointed at
  size_t q8_used = 0;
  absl::InlinedVector<int, 16> q8_of(static_cast<size_t>(count), -1);  // job -> its q8
  for (int k = 0; k < count; ++k) {
    const MatMulJob& j = jobs[k];
    fns[size_t(k)] = Check(j.x, j.n, *j.w, j.r0, j.r1, j.out, j.ldo);
    args[size_t(k)] = RowsArgs{j.x, j.n, j.w, j.r0, j.bias, j.out, j.ldo};
    if (UseQ8(pool, *j.w, j.n, j.r0, j.r1)) {
      // An earlier job of the same x, n and cols lends its quantized x.
      int same = 0;
      while (same < k && !(q8_of[size_t(same)] >= 0 && jobs[same].x == j.x && jobs[same].n == j.n &&
                           jobs[same].w->cols == j.w->cols)) {
        ++same;
      }
      if (same < k) {
        q8_of[size_t(k)] = q8_of[size_t(same)];
      } else {
        q8_of[size_t(k)] = int(q8_used);
        q8[q8_used++].Prepare(j.x, j.n, j.w->cols);
      }
      q8[size_t(q8_of[size_t(k)])].Point(args[size_t(k)]);
      fns[size_t(k)] = KernelOf(args[size_t(k)], fns[size_t(k)]);
    }
    base[size_t(k) + 1] = base[size_t(k)] + (j.n > 0 ? j.r1 - j.r0 : 0);
    row_work = std::max<int64_t>(row_work, std::max<int64_t>(j.w->cols, 1) * j.n);
  }
  if (base[size_t(count)] == 0) return;
  const int64_t blocks = std::max<int64_t>(1, kMinChunkWork / (kRowBlock * row_work));
  pool.ParallelFor(
      0, base[size_t(count)], blocks * kRowBlock,
      [&](int64_t lo, int64_t hi) {
        // The first job that ends after lo, then on while they start before hi.
        int k = int(std::upper_bound(base.begin(), base.end(), lo) - base.begin()) - 1;
        for (; k < count && base[size_t(k)] < hi; ++k) {
          const int64_t a = std::max(lo, base[size_t(k)]), b = std::min(hi, base[size_t(k) + 1]);
          if (a < b)
            fns[size_t(k)](args[size_t(k)], jobs[k].r0 + (a - base[size_t(k)]),
                           jobs[k].r0 + (b - base[size_t(k)]));
        }
      },
      MaxChunkRows(row_work));
}

void MatMulRows(const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1,
                const float* bias, float* out, int64_t ldo) {
  const RowsFn fn = Check(x, n, w, r0, r1, out, ldo);
  if (n == 0 || r1 == r0) return;
  const RowsArgs a{x, n, &w, r0, bias, out, ldo};
  fn(a, r0, r1);
}

bool Supports(DType t) { return KernelFor(t) != nullptr; }

}  // namespace paged::cpu_exec
