// The block-format kernels: one template per operation over the format
// traits of block_decode.cuh.
#include <cstring>
#include <type_traits>

#include "worker/backends/cuda/block_decode.cuh"
#include "worker/backends/cuda/block_weights.h"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"

namespace paged::cuda {
namespace {

using blockq::Codebook;
using blockq::kRunValues;

constexpr int kThreads = 128;
constexpr int kGemvWarps = kThreads / 32;

// Rows per warp of the GEMV: each x load (a run of 16 values of one token,
// through the read-only cache) serves this many weight rows.
constexpr int GemvRowsPerWarp(int n) { return n == 1 ? 4 : 2; }

// Stores a decoded run of 16 floats (dst 16-byte aligned when kVec).
template <bool kVec>
__device__ __forceinline__ void StoreRun(float* dst, const float (&q)[kRunValues]) {
  if constexpr (kVec) {
#pragma unroll
    for (int i = 0; i < kRunValues / 4; ++i) {
      reinterpret_cast<float4*>(dst)[i] =
          make_float4(q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kRunValues; ++i) dst[i] = q[i];
  }
}

// The f16 dequantization: blocks stride over rows, threads over the units
// of a row; each run leaves as two 16-byte stores.
template <class F>
__global__ void __launch_bounds__(kThreads)
    BlockDequantKernel(const uint8_t* __restrict__ w, int64_t rows, int64_t row_bytes, int units,
                       int64_t cols, __half* __restrict__ out) {
  const Codebook cb = blockq::LoadBook<F::kBook>();
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const uint8_t* row = w + r * row_bytes;
    __half* o = out + r * cols;
    for (int u = threadIdx.x; u < units; u += blockDim.x) {
      const int b = u / F::kSlices, s = u % F::kSlices;
      const typename F::Raw raw = F::Load(row + int64_t(b) * F::kBytes, s);
#pragma unroll
      for (int run = 0; run < F::kRuns; ++run) {
        float q[kRunValues], scale, offset;
        F::Decode(raw, s, run, cb, q, scale, offset);
        blockq::Exact<F>(q, scale, offset);
        uint4 v[2];
        __half2 h[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) h[i] = __floats2half2_rn(q[2 * i], q[2 * i + 1]);
        memcpy(v, h, sizeof(v));
        uint4* dst = reinterpret_cast<uint4*>(o + int64_t(b) * F::kValues + F::RunCol(s, run));
        dst[0] = v[0];
        dst[1] = v[1];
      }
    }
  }
}

// One block per id, threads over the units of the row.
template <class F, bool kVec>
__global__ void __launch_bounds__(kThreads)
    BlockEmbeddingKernel(const uint8_t* __restrict__ table, int64_t row_bytes, int units,
                         int64_t cols, const int32_t* __restrict__ ids, float* __restrict__ out) {
  const Codebook cb = blockq::LoadBook<F::kBook>();
  const uint8_t* row = table + int64_t(ids[blockIdx.x]) * row_bytes;
  float* o = out + int64_t(blockIdx.x) * cols;
  for (int u = threadIdx.x; u < units; u += blockDim.x) {
    const int b = u / F::kSlices, s = u % F::kSlices;
    const typename F::Raw raw = F::Load(row + int64_t(b) * F::kBytes, s);
#pragma unroll
    for (int run = 0; run < F::kRuns; ++run) {
      float q[kRunValues], scale, offset;
      F::Decode(raw, s, run, cb, q, scale, offset);
      blockq::Exact<F>(q, scale, offset);
      StoreRun<kVec>(o + int64_t(b) * F::kValues + F::RunCol(s, run), q);
    }
  }
}

// Decode products: each warp takes R consecutive rows, its lanes stride over
// the units of the row (consecutive lanes, consecutive bytes), loading the R
// rows' units before decoding any (R independent loads in flight per lane).
// Per run of 16 values and token, x comes once through the read-only cache
// (four 16-byte loads) and serves the R rows. Formats without a min sum
// scale * (q . x) per run; with a min, fma(scale, q, offset) . x. f32
// throughout; the warp sums its lanes at the end.
template <class F, int N, int R>
__device__ __forceinline__ void GemvRows(const uint8_t* __restrict__ w, int64_t rows,
                                         int64_t row_bytes, int units, const float* __restrict__ x,
                                         int64_t cols, const float* __restrict__ bias,
                                         float* __restrict__ out, int64_t ldo) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t r0 = (int64_t(blockIdx.x) * kGemvWarps + int(threadIdx.x) / 32) * R;
  if (r0 >= rows) return;
  const Codebook cb = blockq::LoadBook<F::kBook>();
  const uint8_t* row[R];
#pragma unroll
  for (int i = 0; i < R; ++i) row[i] = w + (r0 + i < rows ? r0 + i : rows - 1) * row_bytes;
  float acc[R][N];
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < N; ++t) acc[i][t] = 0.f;
  }
#pragma unroll 1
  for (int u = lane; u < units; u += 32) {
    const int b = u / F::kSlices, s = u % F::kSlices;
    typename F::Raw raw[R];
#pragma unroll
    for (int i = 0; i < R; ++i) raw[i] = F::Load(row[i] + int64_t(b) * F::kBytes, s);
    const float* xb = x + int64_t(b) * F::kValues;
#pragma unroll
    for (int run = 0; run < F::kRuns; ++run) {
      float q[R][kRunValues], scale[R];
#pragma unroll
      for (int i = 0; i < R; ++i) {
        float offset;
        F::Decode(raw[i], s, run, cb, q[i], scale[i], offset);
        if constexpr (F::kHasMin) {
#pragma unroll
          for (int k = 0; k < kRunValues; ++k) q[i][k] = fmaf(scale[i], q[i][k], offset);
        }
      }
      const float* xr = xb + F::RunCol(s, run);
#pragma unroll
      for (int t = 0; t < N; ++t) {
        float xv[kRunValues];
#pragma unroll
        for (int k = 0; k < kRunValues / 4; ++k) {
          const float4 v = __ldg(reinterpret_cast<const float4*>(xr + int64_t(t) * cols) + k);
          xv[4 * k] = v.x;
          xv[4 * k + 1] = v.y;
          xv[4 * k + 2] = v.z;
          xv[4 * k + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
          float d = 0.f;
#pragma unroll
          for (int k = 0; k < kRunValues; ++k) d = fmaf(q[i][k], xv[k], d);
          acc[i][t] = F::kHasMin ? acc[i][t] + d : fmaf(scale[i], d, acc[i][t]);
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < N; ++t) acc[i][t] = WarpSum(acc[i][t]);
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      if (r0 + i >= rows) break;
      const float b = bias != nullptr ? bias[r0 + i] : 0.f;
#pragma unroll
      for (int t = 0; t < N; ++t) out[int64_t(t) * ldo + r0 + i] = acc[i][t] + b;
    }
  }
}

template <class F, int N, int R>
__global__ void __launch_bounds__(kThreads)
    BlockGemvKernel(const uint8_t* __restrict__ w, int64_t rows, int64_t row_bytes, int units,
                    const float* __restrict__ x, int64_t cols, const float* __restrict__ bias,
                    float* __restrict__ out, int64_t ldo) {
  GemvRows<F, N, R>(w, rows, row_bytes, units, x, cols, bias, out, ldo);
}

// The grouped GEMV: blockIdx.y picks the task (its matrix, x, out, bias),
// blockIdx.x the rows as in BlockGemvKernel.
template <class F, int N, int R>
__global__ void __launch_bounds__(kThreads)
    GroupedGemvKernel(const GemvTask* __restrict__ tasks, int64_t rows, int64_t row_bytes,
                      int units, int64_t cols, int64_t ldo) {
  const GemvTask t = tasks[blockIdx.y];
  GemvRows<F, N, R>(static_cast<const uint8_t*>(t.w), rows, row_bytes, units, t.x, cols, t.bias,
                    t.out, ldo);
}

// Calls fn(F{}) with the traits of block format t.
template <typename Fn>
CudaError ForFormat(ElemType t, Fn&& fn) {
  switch (t) {
    case ElemType::kQ4_0:
      return fn(blockq::Q4_0{});
    case ElemType::kQ4_1:
      return fn(blockq::Q4_1{});
    case ElemType::kQ5_0:
      return fn(blockq::Q5_0{});
    case ElemType::kQ5_1:
      return fn(blockq::Q5_1{});
    case ElemType::kQ8_0:
      return fn(blockq::Q8_0{});
    case ElemType::kQ2_K:
      return fn(blockq::Q2_K{});
    case ElemType::kQ3_K:
      return fn(blockq::Q3_K{});
    case ElemType::kQ4_K:
      return fn(blockq::Q4_K{});
    case ElemType::kQ5_K:
      return fn(blockq::Q5_K{});
    case ElemType::kQ6_K:
      return fn(blockq::Q6_K{});
    case ElemType::kIQ4_NL:
      return fn(blockq::IQ4_NL{});
    case ElemType::kIQ4_XS:
      return fn(blockq::IQ4_XS{});
    case ElemType::kMXFP4:
      return fn(blockq::MXFP4{});
    default:
      return int(cudaErrorInvalidValue);
  }
}

// Calls fn(std::integral_constant<int, n>{}) for n in 1..8 (the GEMV's
// token rows, a template parameter).
template <typename Fn>
CudaError ForRows(int n, Fn&& fn) {
  switch (n) {
    case 1:
      return fn(std::integral_constant<int, 1>{});
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    case 6:
      return fn(std::integral_constant<int, 6>{});
    case 7:
      return fn(std::integral_constant<int, 7>{});
    default:
      return fn(std::integral_constant<int, 8>{});
  }
}

// ForFormat, and the plain 16-bit types the grouped GEMV reads too.
template <typename Fn>
CudaError ForGroupedFormat(ElemType t, Fn&& fn) {
  if (t == ElemType::kF16) return fn(blockq::F16Rows{});
  if (t == ElemType::kBF16) return fn(blockq::BF16Rows{});
  return ForFormat(t, fn);
}

// Whole blocks per row, data aligned as F's loads assume, units in an int.
template <class F>
CudaError CheckMatrix(const MatrixView& w) {
  if (w.cols <= 0 || w.cols % F::kValues != 0 || w.cols / F::kValues * F::kSlices > INT32_MAX)
    return int(cudaErrorInvalidValue);
  if (reinterpret_cast<uintptr_t>(w.data) % F::kAlign != 0) return int(cudaErrorMisalignedAddress);
  return 0;
}

template <class F>
int UnitsPerRow(const MatrixView& w) {
  return int(w.cols / F::kValues * F::kSlices);
}

template <class F>
int64_t RowBytes(const MatrixView& w) {
  return w.cols / F::kValues * F::kBytes;
}

template <class F, int N>
CudaError GemvN(const MatrixView& w, const float* x, const float* bias, float* out, int64_t ldo,
                cudaStream_t stream) {
  constexpr int R = GemvRowsPerWarp(N);
  const int64_t per_block = int64_t(kGemvWarps) * R;
  const int64_t grid = (w.rows + per_block - 1) / per_block;
  if (grid > kMaxGridX) return int(cudaErrorInvalidValue);
  BlockGemvKernel<F, N, R><<<unsigned(grid), kThreads, 0, stream>>>(
      static_cast<const uint8_t*>(w.data), w.rows, RowBytes<F>(w), UnitsPerRow<F>(w), x, w.cols,
      bias, out, ldo);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

template <class F, int N>
CudaError GroupedN(int64_t rows, int64_t cols, const GemvTask* tasks, int n_tasks, int64_t ldo,
                   cudaStream_t stream) {
  constexpr int R = GemvRowsPerWarp(N);
  const int64_t per_block = int64_t(kGemvWarps) * R;
  const int64_t grid = (rows + per_block - 1) / per_block;
  if (grid > kMaxGridX) return int(cudaErrorInvalidValue);
  const int64_t units = cols / F::kValues * F::kSlices, row_bytes = cols / F::kValues * F::kBytes;
  for (int t0 = 0; t0 < n_tasks; t0 += kMaxGroupedTasks) {
    const int count = n_tasks - t0 < kMaxGroupedTasks ? n_tasks - t0 : kMaxGroupedTasks;
    GroupedGemvKernel<F, N, R><<<dim3(unsigned(grid), unsigned(count)), kThreads, 0, stream>>>(
        tasks + t0, rows, row_bytes, int(units), cols, ldo);
    PAGED_CUDA_LAUNCHED();
  }
  return 0;
}

}  // namespace

int GroupedGemvAlign(ElemType type, int64_t cols) {
  int align = 0;
  ForGroupedFormat(type, [&](auto f) -> CudaError {
    using F = decltype(f);
    if (cols > 0 && cols % F::kValues == 0 && cols / F::kValues * F::kSlices <= INT32_MAX)
      align = F::kAlign;
    return 0;
  });
  return align;
}

CudaError LaunchGroupedGemv(ElemType type, int64_t rows, int64_t cols, const GemvTask* tasks,
                            int n_tasks, int n, int64_t ldo, cudaStream_t stream) {
  if (n < 1 || n > 8) return int(cudaErrorNotSupported);
  if (GroupedGemvAlign(type, cols) == 0) return int(cudaErrorInvalidValue);
  if (n_tasks <= 0 || rows <= 0) return 0;
  return ForGroupedFormat(type, [&](auto f) -> CudaError {
    using F = decltype(f);
    return ForRows(n, [&](auto rows_n) -> CudaError {
      return GroupedN<F, decltype(rows_n)::value>(rows, cols, tasks, n_tasks, ldo, stream);
    });
  });
}

CudaError LaunchBlockDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream) {
  return ForFormat(w.type, [&](auto f) -> CudaError {
    using F = decltype(f);
    PAGED_CUDA_TRY(cudaError_t(CheckMatrix<F>(w)));
    if (w.rows <= 0) return 0;
    if (reinterpret_cast<uintptr_t>(out) % 16 != 0) return int(cudaErrorMisalignedAddress);
    const unsigned grid = unsigned(w.rows < (1 << 20) ? w.rows : (1 << 20));
    BlockDequantKernel<F><<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t*>(w.data),
                                                         w.rows, RowBytes<F>(w), UnitsPerRow<F>(w),
                                                         w.cols, static_cast<__half*>(out));
    PAGED_CUDA_LAUNCHED();
    return 0;
  });
}

CudaError LaunchBlockGemv(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                          int64_t ldo, cudaStream_t stream) {
  if (n < 1 || n > 8 || reinterpret_cast<uintptr_t>(x) % 16 != 0) return int(cudaErrorNotSupported);
  return ForFormat(w.type, [&](auto f) -> CudaError {
    using F = decltype(f);
    PAGED_CUDA_TRY(cudaError_t(CheckMatrix<F>(w)));
    if (w.rows <= 0) return 0;
    return ForRows(n, [&](auto rows_n) -> CudaError {
      return GemvN<F, decltype(rows_n)::value>(w, x, bias, out, ldo, stream);
    });
  });
}

CudaError LaunchBlockEmbedding(const MatrixView& t, const int32_t* ids, int n, float* out,
                               cudaStream_t stream) {
  return ForFormat(t.type, [&](auto f) -> CudaError {
    using F = decltype(f);
    PAGED_CUDA_TRY(cudaError_t(CheckMatrix<F>(t)));
    if (n <= 0) return 0;
    const uint8_t* data = static_cast<const uint8_t*>(t.data);
    if (reinterpret_cast<uintptr_t>(out) % 16 == 0) {
      BlockEmbeddingKernel<F, true><<<unsigned(n), kThreads, 0, stream>>>(
          data, RowBytes<F>(t), UnitsPerRow<F>(t), t.cols, ids, out);
    } else {
      BlockEmbeddingKernel<F, false><<<unsigned(n), kThreads, 0, stream>>>(
          data, RowBytes<F>(t), UnitsPerRow<F>(t), t.cols, ids, out);
    }
    PAGED_CUDA_LAUNCHED();
    return 0;
  });
}

}  // namespace paged::cuda
