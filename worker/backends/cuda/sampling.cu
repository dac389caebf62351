#include <climits>

#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/sampling.h"

namespace paged::cuda {
namespace {

constexpr int kThreads = 1024;
// Rows of at most this many probabilities keep them in shared memory.
constexpr int kSmemVocab = 40 * 1024;
constexpr uint32_t kInfBits = 0x7f800000u;

// Device copies of worker/engine/sampling.h's SplitMix64 / SampleUniform.
__device__ __forceinline__ uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

__device__ __forceinline__ float SampleUniform(uint64_t seed, int32_t pos) {
  const uint64_t r = SplitMix64(seed ^ SplitMix64(uint64_t(uint32_t(pos))));
  return float(r >> 40) * (1.0f / 16777216.0f);
}

// Better candidate for argmax: larger value, then lower id.
__device__ __forceinline__ bool Better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

__device__ int BlockArgmax(const float* x, int n, float* fs, int* is) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    if (Better(x[i], i, bv, bi)) bv = x[i], bi = i;
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (Better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) fs[warp] = bv, is[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < nwarps ? fs[lane] : -INFINITY;
    bi = lane < nwarps ? is[lane] : INT_MAX;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (Better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) is[32] = bi;
  }
  __syncthreads();
  return is[32] == INT_MAX ? 0 : is[32];
}

__device__ __forceinline__ float MassAtLeast(const float* pr, int n, float t, float* fs) {
  float m = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) m += pr[i] >= t ? pr[i] : 0.f;
  return BlockSum(m, fs);
}

// Candidates per pass of the threshold search: each pass over the row tests
// kWays - 1 thresholds at once and narrows the range kWays times, so a search
// over the 31 bits of a non-negative float takes 8 passes, not 31.
constexpr int kWays = 16;

// The largest bit pattern t in [lo, hi) with f(t) >= goal, where f(t) is the
// count (kMass false) or the mass (kMass true) of probabilities >= float(t);
// f is non-increasing and f(lo) >= goal must hold. Sums are exact for counts
// below 2^24 and deterministic for masses. `red`: [32 * kWays] shared floats,
// `res`: [kWays] shared floats.
template <bool kMass>
__device__ uint32_t SearchThreshold(const float* pr, int n, uint32_t lo, uint32_t hi, float goal,
                                    float* red, float* res) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  while (hi - lo > 1) {
    // Candidate j: lo + (hi - lo) (j + 1) / kWays, increasing in j.
    auto bits = [&](int j) { return lo + uint32_t(uint64_t(hi - lo) * uint64_t(j + 1) / kWays); };
    float cand[kWays - 1];
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) cand[j] = __uint_as_float(bits(j));
    float acc[kWays - 1];
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) acc[j] = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = pr[i];
#pragma unroll
      for (int j = 0; j < kWays - 1; ++j) acc[j] += v >= cand[j] ? (kMass ? v : 1.f) : 0.f;
    }
    __syncthreads();  // red / res may still be read by the previous pass
#pragma unroll
    for (int j = 0; j < kWays - 1; ++j) {
      const float t = WarpSum(acc[j]);
      if (lane == 0) red[warp * kWays + j] = t;
    }
    __syncthreads();
    if (threadIdx.x < kWays - 1) {
      float t = 0.f;
      for (int w = 0; w < nwarps; ++w) t += red[w * kWays + threadIdx.x];
      res[threadIdx.x] = t;
    }
    __syncthreads();
    // Largest candidate that still reaches the goal (f is non-increasing).
    int best = -1;
    for (int j = 0; j < kWays - 1; ++j) {
      if (res[j] >= goal) best = j;
    }
    // Equal candidates test alike, so cand[best + 1] > cand[best] >= lo: the
    // range shrinks every pass.
    const uint32_t new_lo = best < 0 ? lo : bits(best);
    const uint32_t new_hi = best + 1 < kWays - 1 ? bits(best + 1) : hi;
    lo = new_lo;
    hi = new_hi;
  }
  return lo;
}

// One block per row. Every pass over the row uses the same mapping (element
// i belongs to thread i % blockDim.x), so each thread reads back only what it
// wrote itself.
__global__ void __launch_bounds__(kThreads)
    SampleKernel(const float* __restrict__ logits, int vocab,
                 const SamplingParamsView* __restrict__ params,
                 const int32_t* __restrict__ positions, float* __restrict__ scratch,
                 bool probs_in_smem, int32_t* __restrict__ out) {
  extern __shared__ float smem_probs[];
  __shared__ float fs[33];
  __shared__ int is[33];
  __shared__ float fscan[32];
  __shared__ float red[32 * kWays];
  __shared__ float res[kWays];
  const int row = blockIdx.x;
  const float* lg = logits + int64_t(row) * vocab;
  const SamplingParamsView sp = params[row];
  if (!(sp.temperature > 0.f)) {
    const int best = BlockArgmax(lg, vocab, fs, is);
    if (threadIdx.x == 0) out[row] = best;
    return;
  }
  float* pr = probs_in_smem ? smem_probs : scratch + int64_t(row) * vocab;

  // probs = softmax(logits / temperature), max-subtracted, in f32.
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) mx = fmaxf(mx, lg[i]);
  mx = BlockMax(mx, fs);
  float sum = 0.f;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float e = expf((lg[i] - mx) / sp.temperature);
    pr[i] = e;
    sum += e;
  }
  sum = BlockSum(sum, fs);
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) pr[i] = pr[i] / sum;

  // Kept: probs >= threshold. Probabilities are non-negative floats, whose
  // bit patterns order like their values: binary search over bits.
  uint32_t thr = 0;
  if (sp.top_k > 0 && sp.top_k < vocab) {
    // The k-th largest probability: the largest t with count(p >= t) >= k.
    thr = SearchThreshold<false>(pr, vocab, 0, kInfBits, float(sp.top_k), red, res);
  }
  if (sp.top_p > 0.f && sp.top_p < 1.f) {
    // The nucleus: the largest t >= threshold whose mass reaches top_p of the kept.
    const float goal = sp.top_p * MassAtLeast(pr, vocab, __uint_as_float(thr), fs);
    thr = SearchThreshold<true>(pr, vocab, thr, kInfBits, goal, red, res);
  }
  const float t = __uint_as_float(thr);
  const float kept_total = MassAtLeast(pr, vocab, t, fs);
  const float target = SampleUniform(sp.seed, positions[row]) * kept_total;

  // Walk kept ids in id order: the first whose running sum exceeds target.
  if (threadIdx.x == 0) is[32] = INT_MAX;
  int last_kept = -1;
  float carry = 0.f;
  for (int base = 0; base < vocab; base += blockDim.x) {
    const int i = base + threadIdx.x;
    const bool kept = i < vocab && pr[i] >= t;
    const float v = kept ? pr[i] : 0.f;
    float tile_total;
    const float incl = BlockInclusiveScan(v, fscan, &tile_total);
    if (kept) {
      last_kept = i;
      if (carry + incl > target) atomicMin(&is[32], i);
    }
    __syncthreads();
    if (is[32] != INT_MAX) break;
    carry += tile_total;
  }
  const int found = is[32];
  if (found != INT_MAX) {
    if (threadIdx.x == 0) out[row] = found;
    return;
  }
  // Rounding left none: the last kept id.
  float lk = float(last_kept);
  lk = BlockMax(lk, fs);
  if (threadIdx.x == 0) out[row] = lk < 0.f ? 0 : int(lk);
}

}  // namespace

uint64_t SampleScratchBytes(int n, int vocab) {
  if (vocab <= kSmemVocab || n <= 0) return 0;
  return uint64_t(n) * uint64_t(vocab) * sizeof(float);
}

CudaError LaunchSample(const float* logits, int n, int vocab, const SamplingParamsView* params,
                       const int32_t* positions, float* scratch, int32_t* out_tokens,
                       cudaStream_t stream) {
  if (n <= 0) return 0;
  if (vocab <= 0) return int(cudaErrorInvalidValue);
  const bool in_smem = vocab <= kSmemVocab;
  const size_t bytes = in_smem ? size_t(vocab) * sizeof(float) : 0;
  if (bytes > 48 * 1024) {
    PAGED_CUDA_TRY(cudaFuncSetAttribute(SampleKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(bytes)));
  }
  SampleKernel<<<unsigned(n), kThreads, bytes, stream>>>(logits, vocab, params, positions, scratch,
                                                         in_smem, out_tokens);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace paged::cuda
