// The decode GEMV on 16-byte weight loads (gemv_wide.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstring>

#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/gemv_wide.h"

namespace paged::cuda {
namespace {

constexpr int kWarps = 4;  // rows per block, one warp each

// Values in one 16-byte load of a row.
constexpr int ChunkValues(ElemType t) {
  return t == ElemType::kI4 ? 32 : t == ElemType::kI8 ? 16 : 8;
}

// The 16 bytes of a row at chunk granularity as f32 (int8 / int4 without
// their scale): f16 / bf16 pairs per word; int8 byte j of word i is value
// 4i + j; int4 nibble j of word i (low nibble first) is value 8i + j, as
// common/quant.h packs them.
template <ElemType kType>
__device__ __forceinline__ void DecodeChunk(const uint4 raw, float* v) {
  const uint32_t word[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kType == ElemType::kF16) {
      __half2 h;
      memcpy(&h, &word[i], 4);
      const float2 f = __half22float2(h);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    } else if constexpr (kType == ElemType::kBF16) {
      __nv_bfloat162 h;
      memcpy(&h, &word[i], 4);
      const float2 f = __bfloat1622float2(h);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    } else if constexpr (kType == ElemType::kI8) {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[4 * i + j] = float(int8_t(word[i] >> (8 * j)));
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[8 * i + j] = float(int((word[i] >> (4 * j)) & 0xfu) - 8);
    }
  }
}

// One warp per output row. A lane loads U chunks of 16 bytes before it uses
// any (so a warp has U * 512 bytes in flight), decodes each and dots it with
// the N token rows of x (f32, through the read-only cache); the warp sums
// its lanes. Chunk c of a row holds values [c * E, c * E + E).
template <ElemType kType, int N, int U>
__global__ void __launch_bounds__(kWarps * 32)
    GemvWideKernel(const uint8_t* __restrict__ data, const __half* __restrict__ scales,
                   int64_t rows, int64_t cols, int group, const float* __restrict__ x,
                   const float* __restrict__ bias, float* __restrict__ out, int64_t ldo) {
  constexpr int E = ChunkValues(kType);
  constexpr bool kScaled = kType == ElemType::kI8 || kType == ElemType::kI4;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t r = int64_t(blockIdx.x) * kWarps + warp;
  if (r >= rows) return;
  const int64_t chunks = cols / E;
  const int64_t row_bytes = chunks * 16;
  const uint4* w = reinterpret_cast<const uint4*>(data + r * row_bytes);
  const int64_t groups = kScaled ? (cols + group - 1) / group : 0;
  float acc[N];
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t] = 0.f;
  for (int64_t base = lane; base < chunks; base += 32 * U) {
    uint4 raw[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + 32 * u;
      raw[u] = c < chunks ? __ldg(w + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + 32 * u;
      if (c >= chunks) break;
      float v[E];
      DecodeChunk<kType>(raw[u], v);
      float s = 1.f;
      if constexpr (kScaled) s = __half2float(scales[r * groups + c * E / group]);
#pragma unroll
      for (int t = 0; t < N; ++t) {
        const float4* xr = reinterpret_cast<const float4*>(x + int64_t(t) * cols + c * E);
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < E / 4; ++i) {
          const float4 a = __ldg(xr + i);
          d += v[4 * i] * a.x + v[4 * i + 1] * a.y + v[4 * i + 2] * a.z + v[4 * i + 3] * a.w;
        }
        acc[t] += s * d;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t] = WarpSum(acc[t]);
  if (lane == 0) {
    const float b = bias != nullptr ? bias[r] : 0.f;
#pragma unroll
    for (int t = 0; t < N; ++t) out[int64_t(t) * ldo + r] = acc[t] + b;
  }
}

// One token row, four 16-byte loads in flight per lane.
template <ElemType kType>
CudaError LaunchOf(const MatrixView& w, const float* x, const float* bias, float* out, int64_t ldo,
                   cudaStream_t stream) {
  const unsigned grid = unsigned((w.rows + kWarps - 1) / kWarps);
  GemvWideKernel<kType, 1, 4><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const uint8_t*>(w.data), static_cast<const __half*>(w.scales), w.rows, w.cols,
      w.group, x, bias, out, ldo);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

bool Fits(const MatrixView& w, const float* x, int n) {
  if (n < 1 || n > kGemvWideMaxRows || w.rows <= 0 || w.cols <= 0) return false;
  if (w.type != ElemType::kF16 && w.type != ElemType::kBF16 && w.type != ElemType::kI8 &&
      w.type != ElemType::kI4)
    return false;
  const int e = ChunkValues(w.type);
  if (w.cols % e != 0) return false;
  if ((w.type == ElemType::kI8 || w.type == ElemType::kI4) &&
      (w.scales == nullptr || w.group <= 0 || w.group % e != 0))
    return false;
  return reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

}  // namespace

CudaError LaunchGemvWide(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                         int64_t ldo, cudaStream_t stream) {
  if (!Fits(w, x, n)) return int(cudaErrorNotSupported);
  switch (w.type) {
    case ElemType::kF16:
      return LaunchOf<ElemType::kF16>(w, x, bias, out, ldo, stream);
    case ElemType::kBF16:
      return LaunchOf<ElemType::kBF16>(w, x, bias, out, ldo, stream);
    case ElemType::kI8:
      return LaunchOf<ElemType::kI8>(w, x, bias, out, ldo, stream);
    case ElemType::kI4:
      return LaunchOf<ElemType::kI4>(w, x, bias, out, ldo, stream);
    default:
      return int(cudaErrorNotSupported);
  }
}

}  // namespace paged::cuda
