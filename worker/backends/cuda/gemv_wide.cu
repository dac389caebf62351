// The decode GEMV on 16-byte weight loads (gemv_wide.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "worker/backends/cuda/cuda_check.h"
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
      v[2 * i] = __half2float(__ushort_as_half(uint16_t(word[i] & 0xffffu)));
      v[2 * i + 1] = __half2float(__ushort_as_half(uint16_t(word[i] >> 16)));
    } else if constexpr (kType == ElemType::kBF16) {
      v[2 * i] = __uint_as_float(word[i] << 16);
      v[2 * i + 1] = __uint_as_float(word[i] & 0xffff0000u);
    } else if constexpr (kType == ElemType::kI8) {
#pragma unroll
      for (int j = 0; j < 4; ++j) v[4 * i + j] = float(int8_t(word[i] >> (8 * j)));
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[8 * i + j] = float(int((word[i] >> (4 * j)) & 0xfu) - 8);
    }
  }
}

// One warp per R output rows. A lane loads U chunks of 16 bytes of each of
// its R rows before it uses any (so a warp has R * U * 512 bytes in
// flight), reads the matching values of the N token rows of x once (f32,
// through the read-only cache) and dots them with each row's decoded
// chunk; the warp sums its lanes. Chunk c of a row holds values
// [c * E, c * E + E). R > 1 divides the reads of x per weight byte by R,
// which at one token row are otherwise twice the weight bytes (f16) and
// would bound the kernel by the L1 rather than by HBM.
template <ElemType kType, int N, int U, int R>
__global__ void __launch_bounds__(kWarps * 32)
    GemvWideKernel(const uint8_t* __restrict__ data, const __half* __restrict__ scales,
                   int64_t rows, int64_t cols, int group, const float* __restrict__ x,
                   const float* __restrict__ bias, float* __restrict__ out, int64_t ldo) {
  constexpr int E = ChunkValues(kType);
  constexpr bool kScaled = kType == ElemType::kI8 || kType == ElemType::kI4;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t r0 = (int64_t(blockIdx.x) * kWarps + warp) * R;
  if (r0 >= rows) return;
  const int nr = int(min(int64_t(R), rows - r0));
  const int64_t chunks = cols / E;
  const int64_t row_bytes = chunks * 16;
  const int64_t groups = kScaled ? (cols + group - 1) / group : 0;
  float acc[R][N];
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < N; ++t) acc[i][t] = 0.f;
  }
  for (int64_t base = lane; base < chunks; base += 32 * U) {
    uint4 raw[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + 32 * u;
#pragma unroll
      for (int i = 0; i < R; ++i) {
        raw[u][i] = c < chunks && i < nr
                        ? __ldg(reinterpret_cast<const uint4*>(data + (r0 + i) * row_bytes) + c)
                        : make_uint4(0, 0, 0, 0);
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + 32 * u;
      if (c >= chunks) continue;
      float xv[N][E];
#pragma unroll
      for (int t = 0; t < N; ++t) {
        const float4* xr = reinterpret_cast<const float4*>(x + int64_t(t) * cols + c * E);
#pragma unroll
        for (int j = 0; j < E / 4; ++j) {
          const float4 a = __ldg(xr + j);
          xv[t][4 * j] = a.x, xv[t][4 * j + 1] = a.y, xv[t][4 * j + 2] = a.z,
                    xv[t][4 * j + 3] = a.w;
        }
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        float v[E];
        DecodeChunk<kType>(raw[u][i], v);
        float s = 1.f;
        if constexpr (kScaled) {
          if (i < nr) s = __half2float(scales[(r0 + i) * groups + c * E / group]);
        }
#pragma unroll
        for (int t = 0; t < N; ++t) {
          float d = 0.f;
#pragma unroll
          for (int j = 0; j < E; ++j) d += v[j] * xv[t][j];
          acc[i][t] += s * d;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; ++i) {
#pragma unroll
    for (int t = 0; t < N; ++t) {
#pragma unroll
      for (int off = 16; off > 0; off /= 2)
        acc[i][t] += __shfl_xor_sync(0xffffffffu, acc[i][t], off);
    }
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      if (i >= nr) break;
      const float b = bias != nullptr ? bias[r0 + i] : 0.f;
#pragma unroll
      for (int t = 0; t < N; ++t) out[int64_t(t) * ldo + r0 + i] = acc[i][t] + b;
    }
  }
}

// Rows per warp and loads in flight per row: more rows where x's values
// take few registers.
template <ElemType kType, int N>
void Launch(const MatrixView& w, const float* x, const float* bias, float* out, int64_t ldo,
            cudaStream_t stream) {
  constexpr int R = N == 1 ? 4 : 2;
  constexpr int U = 2;
  const unsigned grid = unsigned((w.rows + kWarps * R - 1) / (kWarps * R));
  GemvWideKernel<kType, N, U, R><<<grid, kWarps * 32, 0, stream>>>(
      static_cast<const uint8_t*>(w.data), static_cast<const __half*>(w.scales), w.rows, w.cols,
      w.group, x, bias, out, ldo);
}

template <ElemType kType>
CudaError LaunchOf(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                   int64_t ldo, cudaStream_t stream) {
  switch (n) {
    case 1:
      Launch<kType, 1>(w, x, bias, out, ldo, stream);
      break;
    case 2:
      Launch<kType, 2>(w, x, bias, out, ldo, stream);
      break;
    default:
      return int(cudaErrorNotSupported);
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace

bool GemvWideFits(const MatrixView& w, const float* x, int n) {
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

CudaError LaunchGemvWide(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                         int64_t ldo, cudaStream_t stream) {
  if (!GemvWideFits(w, x, n)) return int(cudaErrorNotSupported);
  switch (w.type) {
    case ElemType::kF16:
      return LaunchOf<ElemType::kF16>(w, x, n, bias, out, ldo, stream);
    case ElemType::kBF16:
      return LaunchOf<ElemType::kBF16>(w, x, n, bias, out, ldo, stream);
    case ElemType::kI8:
      return LaunchOf<ElemType::kI8>(w, x, n, bias, out, ldo, stream);
    case ElemType::kI4:
      return LaunchOf<ElemType::kI4>(w, x, n, bias, out, ldo, stream);
    default:
      return int(cudaErrorNotSupported);
  }
}

}  // namespace paged::cuda
