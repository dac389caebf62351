#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/kv_cache.h"

namespace paged::cuda {
namespace {

// Grid-stride over (row, column) of k and v together.
template <typename T>
__global__ void KvWriteKernel(const float* __restrict__ k, const float* __restrict__ v,
                              const int32_t* __restrict__ slots, int n, char* __restrict__ base,
                              int block_tokens, int kv_dim, uint64_t block_bytes) {
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  const int64_t total = int64_t(n) * kv_dim;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / kv_dim;
    const int c = int(t - i * kv_dim);
    const int32_t slot = slots[i];
    if (slot < 0) continue;
    const int64_t block = slot / block_tokens;
    const int row = slot % block_tokens;
    T* kb = reinterpret_cast<T*>(base + uint64_t(block) * block_bytes);
    T* vb = kb + int64_t(block_tokens) * kv_dim;
    kb[int64_t(row) * kv_dim + c] = FromF32<T>(k[t]);
    vb[int64_t(row) * kv_dim + c] = FromF32<T>(v[t]);
  }
}

}  // namespace

CudaError LaunchKvWrite(const float* k, const float* v, const int32_t* slots, int n,
                        const KvView& kv, cudaStream_t stream) {
  const int64_t total = int64_t(n) * kv.kv_dim;
  if (total <= 0) return 0;
  char* base = static_cast<char*>(kv.base);
  const unsigned grid = GridFor(total, 256);
  switch (kv.type) {
    case ElemType::kF32:
      PAGED_CUDA_TRY(LaunchPdl(KvWriteKernel<float>, grid, 256, 0, stream, k, v, slots, n, base,
                               kv.block_tokens, kv.kv_dim, kv.block_bytes));
      break;
    case ElemType::kF16:
      PAGED_CUDA_TRY(LaunchPdl(KvWriteKernel<__half>, grid, 256, 0, stream, k, v, slots, n, base,
                               kv.block_tokens, kv.kv_dim, kv.block_bytes));
      break;
    case ElemType::kBF16:
      PAGED_CUDA_TRY(LaunchPdl(KvWriteKernel<__nv_bfloat16>, grid, 256, 0, stream, k, v, slots, n,
                               base, kv.block_tokens, kv.kv_dim, kv.block_bytes));
      break;
    default:
      return int(cudaErrorInvalidValue);
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace paged::cuda
