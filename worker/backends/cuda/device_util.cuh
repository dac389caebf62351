// Device helpers shared by the kernels: element conversions, block
// reductions, grid sizing. Included by .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "worker/backends/cuda/kernel_types.h"
#include "worker/backends/cuda/pdl.h"

namespace paged::cuda {

inline constexpr int kMaxGridX = 1 << 30;

// The two halves of a programmatic dependent launch (pdl.h), in the kernel:
// let the next kernel start, and wait for the one before. Both do nothing
// in a kernel launched plainly, and are not compiled before sm_90 (which
// has no such launch: every kernel there waits for the one before).
__device__ __forceinline__ void PdlLetNextStart() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void PdlWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches a kernel that calls PdlWait before it touches what the kernel
// before it wrote or reads: as a programmatic dependent where PdlLaunches(),
// else plainly.
template <typename... KernelArgs, typename... Args>
cudaError_t LaunchPdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  if (PdlLaunches()) {
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

// Blocks for `count` items of `per_block` each, capped (kernels grid-stride).
inline unsigned GridFor(int64_t count, int per_block, int64_t cap = 65536 * 4) {
  int64_t g = (count + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return unsigned(g);
}

// The grid of a persistent kernel (blocks loop over work items): as many
// blocks as fit on the device at once with `threads` threads and
// `smem_bytes` of dynamic shared memory (opted in above 48 KiB), at most one
// per work item. cudaErrorInvalidConfiguration when not even one block fits.
template <typename Kernel>
cudaError_t PersistentGrid(Kernel* kernel, int threads, size_t smem_bytes, int64_t work_items,
                           int num_sms, unsigned* grid) {
  if (smem_bytes > 48 * 1024) {
    const cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes));
    if (e != cudaSuccess) return e;
  }
  int per_sm = 0;
  const cudaError_t e =
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem_bytes);
  if (e != cudaSuccess) return e;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  *grid = unsigned(
      std::clamp<int64_t>(std::min<int64_t>(work_items, int64_t(per_sm) * num_sms), 1, kMaxGridX));
  return cudaSuccess;
}

__device__ __forceinline__ float ToF32(float x) { return x; }
__device__ __forceinline__ float ToF32(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToF32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromF32(float x);
template <>
__device__ __forceinline__ float FromF32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromF32<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromF32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every
// thread gets the result. `scratch` holds 33 floats of shared memory.
// Deterministic: a fixed reduction tree.
__device__ __forceinline__ float BlockSum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nwarps ? scratch[lane] : 0.f;
    t = WarpSum(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float t = lane < nwarps ? scratch[lane] : -INFINITY;
    t = WarpMax(t);
    if (lane == 0) scratch[32] = t;
  }
  __syncthreads();
  return scratch[32];
}

// Inclusive prefix sum over the block in thread order (blockDim.x a multiple
// of 32, at most 1024). `scratch`: 32 T of shared memory. *total gets the
// block's sum. Deterministic.
template <typename T>
__device__ __forceinline__ T BlockInclusiveScan(T v, T* scratch, T* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const T up = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += up;
  }
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 31) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T t = lane < nwarps ? scratch[lane] : T(0);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const T up = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += up;
    }
    if (lane < nwarps) scratch[lane] = t;
  }
  __syncthreads();
  if (warp > 0) v += scratch[warp - 1];
  *total = scratch[nwarps - 1];
  return v;
}

// The item whose units hold unit u, given BlockPrefixUnits' prefix over n
// items (prefix[i] <= u < prefix[i + 1]): a binary search.
__device__ __forceinline__ int ItemOfUnit(const int* prefix, int n, int u) {
  int lo = 0, hi = n;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (prefix[mid] <= u)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// prefix[i] = sum of units_of(j) for j < i, i in [0, n], computed by the
// whole block (each thread sums a run of items, then one block scan);
// returns the total. prefix: n + 1 ints of shared memory, scan: 32.
template <typename UnitsOf>
__device__ __forceinline__ int BlockPrefixUnits(int n, UnitsOf units_of, int* prefix, int* scan) {
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int per = (n + nthreads - 1) / nthreads;
  const int first = tid * per, last = min(first + per, n);
  int mine = 0;
  for (int i = first; i < last; ++i) {
    const int u = units_of(i);
    prefix[i + 1] = u;
    mine += u;
  }
  int total = 0;
  int run = BlockInclusiveScan(mine, scan, &total) - mine;
  for (int i = first; i < last; ++i) {
    run += prefix[i + 1];
    prefix[i + 1] = run;
  }
  if (tid == 0) prefix[0] = 0;
  __syncthreads();
  return total;
}

}  // namespace paged::cuda
