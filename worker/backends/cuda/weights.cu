#include <cstring>

#include "worker/backends/cuda/block_weights.h"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/env_setting.h"
#include "worker/backends/cuda/gemv_wide.h"
#include "worker/backends/cuda/weights.h"

namespace paged::cuda {
namespace {

// Element c of row `row` as f32, for every stored type.
template <ElemType kType>
__device__ __forceinline__ float LoadElem(const void* data, const __half* scales, int64_t row,
                                          int64_t cols, int64_t groups, int group, int64_t c) {
  if constexpr (kType == ElemType::kF32) {
    return static_cast<const float*>(data)[row * cols + c];
  } else if constexpr (kType == ElemType::kF16) {
    return __half2float(static_cast<const __half*>(data)[row * cols + c]);
  } else if constexpr (kType == ElemType::kBF16) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[row * cols + c]);
  } else if constexpr (kType == ElemType::kI8) {
    const float s = __half2float(scales[row * groups + c / group]);
    return s * float(static_cast<const int8_t*>(data)[row * cols + c]);
  } else {
    const uint8_t b = static_cast<const uint8_t*>(data)[row * ((cols + 1) / 2) + c / 2];
    const int nib = (c & 1) ? (b >> 4) : (b & 0x0f);
    const float s = __half2float(scales[row * groups + c / group]);
    return s * float(nib - 8);
  }
}

// Blocks stride over rows, threads over columns.
template <ElemType kType>
__global__ void DequantizeKernel(const void* __restrict__ data, const __half* __restrict__ scales,
                                 int64_t rows, int64_t cols, int group, __half* __restrict__ out) {
  const int64_t groups = (cols + group - 1) / group;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      out[r * cols + c] = __float2half_rn(LoadElem<kType>(data, scales, r, cols, groups, group, c));
    }
  }
}

// Eight columns per thread (cols and group multiples of 8, so the eight share
// one scale): one 8-byte (int8) or 4-byte (int4) load, one 16-byte store.
template <ElemType kType>
__global__ void Dequantize8Kernel(const void* __restrict__ data, const __half* __restrict__ scales,
                                  int64_t rows, int64_t cols, int group, __half* __restrict__ out) {
  const int64_t groups = (cols + group - 1) / group;  // the last group may be short
  const int64_t vecs = cols / 8;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t v = threadIdx.x; v < vecs; v += blockDim.x) {
      const int64_t c = v * 8;
      const float s = __half2float(scales[r * groups + c / group]);
      float x[8];
      if constexpr (kType == ElemType::kI8) {
        const uint2 raw =
            *reinterpret_cast<const uint2*>(static_cast<const int8_t*>(data) + r * cols + c);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          x[i] = s * float(int8_t(raw.x >> (8 * i)));
          x[i + 4] = s * float(int8_t(raw.y >> (8 * i)));
        }
      } else {
        const uint32_t raw = *reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(data) +
                                                                r * (cols / 2) + c / 2);
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = s * float(int((raw >> (4 * i)) & 0xfu) - 8);
      }
      uint4 o;
      __half2 h[4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        h[i] = __halves2half2(__float2half_rn(x[2 * i]), __float2half_rn(x[2 * i + 1]));
      memcpy(&o, h, sizeof(o));
      *reinterpret_cast<uint4*>(out + r * cols + c) = o;
    }
  }
}

// One warp per output row: each lane takes 8 columns at a time (one 8-byte
// int8 or 4-byte int4 load, one scale), dots them with the N token rows of x
// (f32, through the read-only cache) and the warp sums its lanes.
template <ElemType kType, int N>
__global__ void GemvQuantKernel(const void* __restrict__ data, const __half* __restrict__ scales,
                                int64_t rows, int64_t cols, int group, const float* __restrict__ x,
                                const float* __restrict__ bias, float* __restrict__ out,
                                int64_t ldo) {
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + warp;
  if (r >= rows) return;
  const int64_t groups = (cols + group - 1) / group;
  float acc[N];
#pragma unroll
  for (int t = 0; t < N; ++t) acc[t] = 0.f;
  for (int64_t c = int64_t(lane) * 8; c < cols; c += 32 * 8) {
    const float s = __half2float(scales[r * groups + c / group]);
    float w[8];
    if constexpr (kType == ElemType::kI8) {
      const uint2 raw =
          *reinterpret_cast<const uint2*>(static_cast<const int8_t*>(data) + r * cols + c);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        w[i] = float(int8_t(raw.x >> (8 * i)));
        w[i + 4] = float(int8_t(raw.y >> (8 * i)));
      }
    } else {
      const uint32_t raw = *reinterpret_cast<const uint32_t*>(static_cast<const uint8_t*>(data) +
                                                              r * (cols / 2) + c / 2);
#pragma unroll
      for (int i = 0; i < 8; ++i) w[i] = float(int((raw >> (4 * i)) & 0xfu) - 8);
    }
#pragma unroll
    for (int t = 0; t < N; ++t) {
      const float4 a = __ldg(reinterpret_cast<const float4*>(x + int64_t(t) * cols + c));
      const float4 b = __ldg(reinterpret_cast<const float4*>(x + int64_t(t) * cols + c + 4));
      const float d = w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y +
                      w[6] * b.z + w[7] * b.w;
      acc[t] += s * d;
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

template <ElemType kType>
CudaError LaunchGemvQuantOf(const MatrixView& w, const float* x, int n, const float* bias,
                            float* out, int64_t ldo, cudaStream_t stream) {
  constexpr int kWarps = 4;
  const unsigned grid = unsigned((w.rows + kWarps - 1) / kWarps);
  const __half* s = static_cast<const __half*>(w.scales);
#define PAGED_GEMV_CASE(N)                                                                         \
  case N:                                                                                          \
    GemvQuantKernel<kType, N>                                                                      \
        <<<grid, kWarps * 32, 0, stream>>>(w.data, s, w.rows, w.cols, w.group, x, bias, out, ldo); \
    break;
  switch (n) {
    PAGED_GEMV_CASE(1)
    PAGED_GEMV_CASE(2)
    PAGED_GEMV_CASE(3)
    PAGED_GEMV_CASE(4)
    PAGED_GEMV_CASE(5)
    PAGED_GEMV_CASE(6)
    PAGED_GEMV_CASE(7)
    PAGED_GEMV_CASE(8)
    default:
      return int(cudaErrorNotSupported);
  }
#undef PAGED_GEMV_CASE
  PAGED_CUDA_LAUNCHED();
  return 0;
}

// One block per id.
template <ElemType kType>
__global__ void EmbeddingKernel(const void* __restrict__ data, const __half* __restrict__ scales,
                                int64_t cols, int group, const int32_t* __restrict__ ids,
                                float* __restrict__ out) {
  const int64_t groups = group > 0 ? (cols + group - 1) / group : 0;
  const int64_t row = ids[blockIdx.x];
  float* o = out + int64_t(blockIdx.x) * cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    o[c] = LoadElem<kType>(data, scales, row, cols, groups, group, c);
  }
}

}  // namespace

CudaError LaunchDequantizeF16(const MatrixView& w, void* out, cudaStream_t stream) {
  if (IsBlockElem(w.type)) return LaunchBlockDequantizeF16(w, out, stream);
  if (w.rows <= 0 || w.cols <= 0) return 0;
  if (w.group <= 0) return int(cudaErrorInvalidValue);
  const unsigned grid = unsigned(w.rows < (1 << 20) ? w.rows : (1 << 20));
  const __half* scales = static_cast<const __half*>(w.scales);
  __half* o = static_cast<__half*>(out);
  const uintptr_t need = w.type == ElemType::kI8 ? 8 : 4;
  const bool vec8 = w.cols % 8 == 0 && w.group % 8 == 0 &&
                    reinterpret_cast<uintptr_t>(w.data) % need == 0 &&
                    reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec8) {
    if (w.type == ElemType::kI8) {
      Dequantize8Kernel<ElemType::kI8>
          <<<grid, 256, 0, stream>>>(w.data, scales, w.rows, w.cols, w.group, o);
    } else if (w.type == ElemType::kI4) {
      Dequantize8Kernel<ElemType::kI4>
          <<<grid, 256, 0, stream>>>(w.data, scales, w.rows, w.cols, w.group, o);
    } else {
      return int(cudaErrorInvalidValue);
    }
  } else if (w.type == ElemType::kI8) {
    DequantizeKernel<ElemType::kI8>
        <<<grid, 256, 0, stream>>>(w.data, scales, w.rows, w.cols, w.group, o);
  } else if (w.type == ElemType::kI4) {
    DequantizeKernel<ElemType::kI4>
        <<<grid, 256, 0, stream>>>(w.data, scales, w.rows, w.cols, w.group, o);
  } else {
    return int(cudaErrorInvalidValue);
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

namespace {

EnvSetting fused_gemv("PAGED_CUDA_FUSED_GEMV", OnUnless0);

}  // namespace

void ReadFusedGemvEnv() { fused_gemv.Reread(); }

bool FusedGemvEnabled() { return fused_gemv.on(); }

CudaError LaunchGemv(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                     int64_t ldo, cudaStream_t stream) {
  if (!FusedGemvEnabled()) return int(cudaErrorNotSupported);
  if (IsBlockElem(w.type)) return LaunchBlockGemv(w, x, n, bias, out, ldo, stream);
  if (const CudaError e = LaunchGemvWide(w, x, n, bias, out, stream);
      e != int(cudaErrorNotSupported))
    return e;
  if (n < 1 || n > kFusedGemvMaxRows || w.rows <= 0 || w.cols <= 0 || w.cols % 8 != 0 ||
      w.group <= 0 || w.group % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.data) % (w.type == ElemType::kI8 ? 8 : 4) != 0)
    return int(cudaErrorNotSupported);
  if (w.type == ElemType::kI8)
    return LaunchGemvQuantOf<ElemType::kI8>(w, x, n, bias, out, ldo, stream);
  if (w.type == ElemType::kI4)
    return LaunchGemvQuantOf<ElemType::kI4>(w, x, n, bias, out, ldo, stream);
  return int(cudaErrorNotSupported);
}

CudaError LaunchEmbedding(const MatrixView& t, const int32_t* ids, int n, float* out,
                          cudaStream_t stream) {
  if (IsBlockElem(t.type)) return LaunchBlockEmbedding(t, ids, n, out, stream);
  if (n <= 0 || t.cols <= 0) return 0;
  const __half* scales = static_cast<const __half*>(t.scales);
  const int threads = t.cols >= 1024 ? 256 : 128;
  switch (t.type) {
    case ElemType::kF32:
      EmbeddingKernel<ElemType::kF32>
          <<<unsigned(n), threads, 0, stream>>>(t.data, scales, t.cols, t.group, ids, out);
      break;
    case ElemType::kF16:
      EmbeddingKernel<ElemType::kF16>
          <<<unsigned(n), threads, 0, stream>>>(t.data, scales, t.cols, t.group, ids, out);
      break;
    case ElemType::kBF16:
      EmbeddingKernel<ElemType::kBF16>
          <<<unsigned(n), threads, 0, stream>>>(t.data, scales, t.cols, t.group, ids, out);
      break;
    case ElemType::kI8:
      if (t.group <= 0) return int(cudaErrorInvalidValue);
      EmbeddingKernel<ElemType::kI8>
          <<<unsigned(n), threads, 0, stream>>>(t.data, scales, t.cols, t.group, ids, out);
      break;
    case ElemType::kI4:
      if (t.group <= 0) return int(cudaErrorInvalidValue);
      EmbeddingKernel<ElemType::kI4>
          <<<unsigned(n), threads, 0, stream>>>(t.data, scales, t.cols, t.group, ids, out);
      break;
    default:
      return int(cudaErrorInvalidValue);
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace paged::cuda
