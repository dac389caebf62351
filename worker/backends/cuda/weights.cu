#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
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

CudaError LaunchEmbedding(const MatrixView& t, const int32_t* ids, int n, float* out,
                          cudaStream_t stream) {
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
