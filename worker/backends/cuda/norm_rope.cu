#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/norm_rope.h"

namespace paged::cuda {
namespace {

// One block per row. out may be x (each element is read before it is
// written, by the same thread, after the sum), so neither is __restrict__.
__global__ void RmsNormKernel(const float* x, const float* __restrict__ w, int dim, float eps,
                              float* out) {
  __shared__ float scratch[33];
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();

  const float* xr = x + int64_t(blockIdx.x) * dim;
  float* o = out + int64_t(blockIdx.x) * dim;
  float ss = 0.f;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) ss += xr[j] * xr[j];
  ss = BlockSum(ss, scratch);
  // The CPU reference's operation order, without FMA contraction.
  const float scale = 1.f / sqrtf(__fadd_rn(ss / float(dim), eps));
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    o[j] = __fmul_rn(w[j], __fmul_rn(scale, xr[j]));
  }
}

// One thread per (row, head of q then k, pair i).
__global__ void RopeKernel(float* __restrict__ q, float* __restrict__ k,
                           const int32_t* __restrict__ pos, int n, int n_heads, int n_kv_heads,
                           int head_dim, const float* __restrict__ inv_freq, float attn_factor) {
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  const int half = head_dim / 2;
  const int heads = n_heads + n_kv_heads;
  const int64_t total = int64_t(n) * heads * half;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(t % half);
    const int64_t rh = t / half;
    const int h = int(rh % heads);
    const int64_t r = rh / heads;
    float* v = h < n_heads ? q + (r * n_heads + h) * head_dim
                           : k + (r * n_kv_heads + (h - n_heads)) * head_dim;
    const float angle = float(pos[r]) * inv_freq[i];
    float s, c;
    sincosf(angle, &s, &c);
    // As the CPU reference: cos and sin times the attention factor (yarn, longrope).
    s = __fmul_rn(s, attn_factor);
    c = __fmul_rn(c, attn_factor);
    const float x0 = v[i], x1 = v[i + half];
    // The CPU reference's operation order, without FMA contraction.
    v[i] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    v[i + half] = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
  }
}

}  // namespace

CudaError LaunchRmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out,
                        cudaStream_t stream) {
  if (n <= 0 || dim <= 0) return 0;
  const int threads = dim >= 4096 ? 1024 : dim >= 1024 ? 512 : 256;
  PAGED_CUDA_TRY(LaunchPdl(RmsNormKernel, unsigned(n), threads, 0, stream, x, w, dim, eps, out));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

CudaError LaunchRope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
                     int head_dim, const float* inv_freq, float attn_factor, cudaStream_t stream) {
  const int64_t total = int64_t(n) * (n_heads + n_kv_heads) * (head_dim / 2);
  if (total <= 0) return 0;
  PAGED_CUDA_TRY(LaunchPdl(RopeKernel, GridFor(total, 256), 256, 0, stream, q, k, pos, n, n_heads,
                           n_kv_heads, head_dim, inv_freq, attn_factor));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace paged::cuda
