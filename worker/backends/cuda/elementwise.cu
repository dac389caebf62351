#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/elementwise.h"

namespace paged::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void AddKernel(float* __restrict__ x, const float* __restrict__ y, int64_t count) {
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void SwiGluKernel(const float* __restrict__ gate, const float* __restrict__ up,
                             int64_t count, float* __restrict__ out) {
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    // The CPU reference's operation order: (g * (1 / (1 + e^-g))) * up.
    const float g = gate[i];
    const float s = 1.f / (1.f + expf(-g));
    out[i] = __fmul_rn(__fmul_rn(g, s), up[i]);
  }
}

__global__ void SwiGluOaiKernel(const float* __restrict__ gate, const float* __restrict__ up,
                                int64_t count, float alpha, float limit, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    // The CPU reference's operation order: (u + 1) * (g * (1 / (1 + e^-(g * alpha)))).
    const float g = fminf(gate[i], limit);
    const float u = fminf(fmaxf(up[i], -limit), limit);
    const float s = 1.f / (1.f + expf(-__fmul_rn(g, alpha)));
    out[i] = __fmul_rn(__fadd_rn(u, 1.f), __fmul_rn(g, s));
  }
}

__global__ void GeGluKernel(const float* __restrict__ gate, const float* __restrict__ up,
                            int64_t count, float* __restrict__ out) {
  // The CPU reference's operation order (torch's gelu(approximate="tanh")).
  const float beta = 0.7978845608028654f, kappa = 0.044715f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float x = gate[i];
    const float inner =
        __fmul_rn(beta, __fadd_rn(x, __fmul_rn(kappa, __fmul_rn(__fmul_rn(x, x), x))));
    const float g = __fmul_rn(__fmul_rn(0.5f, x), __fadd_rn(1.f, tanhf(inner)));
    out[i] = __fmul_rn(g, up[i]);
  }
}

__global__ void ScaleKernel(float* __restrict__ x, int64_t count, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] = __fmul_rn(x[i], s);
  }
}

__global__ void SoftCapKernel(float* __restrict__ x, int64_t count, float cap) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    x[i] = __fmul_rn(tanhf(__fdiv_rn(x[i], cap)), cap);
  }
}

// One block per output row.
__global__ void GatherRowsKernel(const float* __restrict__ x, const int32_t* __restrict__ rows,
                                 int dim, float* __restrict__ out) {
  const int64_t src = rows[blockIdx.x];
  const float* in = x + src * dim;
  float* o = out + int64_t(blockIdx.x) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = in[j];
}

// One block per input row; the rows of one launch are distinct.
__global__ void ScatterAddRowsKernel(const float* __restrict__ y, const int32_t* __restrict__ rows,
                                     const float* __restrict__ w, int dim,
                                     float* __restrict__ out) {
  const float wi = w[blockIdx.x];
  const float* in = y + int64_t(blockIdx.x) * dim;
  float* o = out + int64_t(rows[blockIdx.x]) * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) o[j] = __fadd_rn(o[j], __fmul_rn(wi, in[j]));
}

// One block per token: its rows of y added in order, each sum rounded as
// ScatterAddRowsKernel rounds it (one launch per expert gives the same bits).
__global__ void CombineRowsKernel(const float* __restrict__ y, const float* __restrict__ w,
                                  const int32_t* __restrict__ tokens,
                                  const int32_t* __restrict__ begin,
                                  const int32_t* __restrict__ pos, int dim,
                                  float* __restrict__ out) {
  float* o = out + int64_t(tokens[blockIdx.x]) * dim;
  const int32_t k0 = begin[blockIdx.x], k1 = begin[blockIdx.x + 1];
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    float acc = o[j];
    for (int32_t k = k0; k < k1; ++k) {
      const int32_t p = pos[k];
      acc = __fadd_rn(acc, __fmul_rn(w[p], y[int64_t(p) * dim + j]));
    }
    o[j] = acc;
  }
}

__global__ void AddBiasKernel(float* __restrict__ out, const float* __restrict__ bias,
                              int64_t count, int64_t rows, int64_t ldo) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[(i / rows) * ldo + i % rows] += bias[i % rows];
  }
}

template <typename T>
__global__ void CastKernel(const float* __restrict__ src, int64_t count, T* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x) {
    dst[i] = FromF32<T>(src[i]);
  }
}

}  // namespace

CudaError LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return 0;
  PAGED_CUDA_TRY(LaunchPdl(AddKernel, GridFor(count, kThreads), kThreads, 0, stream, x, y, count));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchSwiGlu(const float* gate, const float* up, int64_t n, int64_t dim, float* out,
                       cudaStream_t stream) {
  const int64_t count = n * dim;
  if (count <= 0) return 0;
  PAGED_CUDA_TRY(
      LaunchPdl(SwiGluKernel, GridFor(count, kThreads), kThreads, 0, stream, gate, up, count, out));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchSwiGluOai(const float* gate, const float* up, int64_t n, int64_t dim, float alpha,
                          float limit, float* out, cudaStream_t stream) {
  const int64_t count = n * dim;
  if (count <= 0) return 0;
  SwiGluOaiKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, count, alpha, limit,
                                                                     out);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchGeGlu(const float* gate, const float* up, int64_t n, int64_t dim, float* out,
                      cudaStream_t stream) {
  const int64_t count = n * dim;
  if (count <= 0) return 0;
  GeGluKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, count, out);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchScale(float* x, int64_t count, float s, cudaStream_t stream) {
  if (count <= 0) return 0;
  ScaleKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(x, count, s);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchSoftCap(float* x, int64_t count, float cap, cudaStream_t stream) {
  if (count <= 0) return 0;
  if (!(cap > 0.f)) return int(cudaErrorInvalidValue);
  SoftCapKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(x, count, cap);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchGatherRows(const float* x, const int32_t* rows, int n, int dim, float* out,
                           cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return 0;
  GatherRowsKernel<<<unsigned(n), kThreads, 0, stream>>>(x, rows, dim, out);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                               float* out, cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return 0;
  ScatterAddRowsKernel<<<unsigned(n), kThreads, 0, stream>>>(y, rows, w, dim, out);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchCombineRows(const float* y, const float* w, const int32_t* tokens,
                            const int32_t* begin, const int32_t* pos, int n_tokens, int dim,
                            float* out, cudaStream_t stream) {
  if (n_tokens <= 0 || dim <= 0) return 0;
  CombineRowsKernel<<<unsigned(n_tokens), kThreads, 0, stream>>>(y, w, tokens, begin, pos, dim,
                                                                 out);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchAddBias(float* out, const float* bias, int64_t n, int64_t rows, int64_t ldo,
                        cudaStream_t stream) {
  const int64_t count = n * rows;
  if (count <= 0) return 0;
  AddBiasKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(out, bias, count, rows, ldo);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchCastF32(const float* src, int64_t count, ElemType to, void* dst,
                        cudaStream_t stream) {
  if (count <= 0) return 0;
  if (to == ElemType::kF16) {
    CastKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(src, count,
                                                                  static_cast<__half*>(dst));
  } else if (to == ElemType::kBF16) {
    CastKernel<<<GridFor(count, kThreads), kThreads, 0, stream>>>(src, count,
                                                                  static_cast<__nv_bfloat16*>(dst));
  } else {
    return int(cudaErrorInvalidValue);
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace paged::cuda
