// Device helpers of the attention kernels (attention.cu, the CUDA-core
// kernel; attention_decode.cu, the decode-row kernel): key ranges, sinks,
// KV element loads, and the end of a decode row's split (its output, or its
// partial softmax state and the merge of all of them). Included by .cu files
// only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "worker/backends/cuda/device_util.cuh"

namespace paged::cuda {

// The first key a query at position `pos` sees.
__device__ __forceinline__ int FirstKey(int pos, int window) {
  return window > 0 ? max(0, pos - window + 1) : 0;
}

// A row's output with its head's sink: num / den is the softmax over the
// keys (running max m); the sink's logit joins the denominator, both
// rescaled to the larger maximum so that nothing overflows.
__device__ __forceinline__ void SinkNormalise(float m, float sink, float* num, float* den) {
  const float mx = fmaxf(m, sink);
  const float c = m == -INFINITY ? 0.f : expf(m - mx);
  *num *= c;
  *den = *den * c + expf(sink - mx);
}

// Sixteen bytes of KV elements (8 f16 / bf16 or 4 f32) as f32.
template <typename T>
__device__ __forceinline__ void Widen(uint4 raw, float* dst) {
  if constexpr (sizeof(T) == 4) {
    dst[0] = __uint_as_float(raw.x), dst[1] = __uint_as_float(raw.y);
    dst[2] = __uint_as_float(raw.z), dst[3] = __uint_as_float(raw.w);
  } else {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = uint16_t(w[i] & 0xffffu), hi = uint16_t(w[i] >> 16);
      if constexpr (std::is_same_v<T, __half>) {
        dst[2 * i] = __half2float(__ushort_as_half(lo));
        dst[2 * i + 1] = __half2float(__ushort_as_half(hi));
      } else {
        dst[2 * i] = __uint_as_float(uint32_t(lo) << 16);
        dst[2 * i + 1] = __uint_as_float(uint32_t(hi) << 16);
      }
    }
  }
}

// kVec elements at src as f32: one element, or sixteen aligned bytes.
template <typename T, int kVec>
__device__ __forceinline__ void LoadVec(const T* src, float* dst) {
  if constexpr (kVec == 1) {
    dst[0] = ToF32(*src);
  } else {
    static_assert(kVec * sizeof(T) == 16);
    Widen<T>(*reinterpret_cast<const uint4*>(src), dst);
  }
}

// Where a decode row's split leaves its result: the row's output, or its
// partial softmax state for the merge (split-K).
struct DecodeOut {
  float* out;          // [rows, n_heads * head_dim]
  const float* sinks;  // [n_heads] or null
  float* partials;     // [n_seqs][n_heads][max_splits][2 + head_dim]
  int32_t* counters;   // [n_seqs][n_kv_heads], zero between launches
  int n_heads, n_kv_heads, head_dim, max_splits;
};

// The end of split `split` of `nsp` of the decode row of sequence s (output
// row `row`) for the query heads kvh * g .. + g, whose unnormalised output
// acc [g][head_dim], running max m [g] and sum l [g] the block holds in
// shared memory. One split: the output. Several: each publishes its state
// and the last to finish merges all of them, in split order, and leaves
// the counter at zero. `flag`: one int of shared memory. Called by the
// whole block.
__device__ __forceinline__ void FinishDecodeSplit(const DecodeOut& o, int s, int row, int kvh,
                                                  int g, int split, int nsp, const float* acc,
                                                  const float* m, const float* l, int* flag) {
  const int tid = threadIdx.x, nthreads = blockDim.x, hd = o.head_dim;
  if (nsp == 1) {
    for (int idx = tid; idx < g * hd; idx += nthreads) {
      const int pp = idx / hd, d = idx - pp * hd;
      const int head = kvh * g + pp;
      float num = acc[idx], den = l[pp];
      if (o.sinks != nullptr) SinkNormalise(m[pp], o.sinks[head], &num, &den);
      o.out[(int64_t(row) * o.n_heads + head) * hd + d] = num / den;
    }
    return;
  }
  const int64_t stride = 2 + hd;
  for (int idx = tid; idx < g * hd; idx += nthreads) {
    const int pp = idx / hd, d = idx - pp * hd;
    const int64_t head = kvh * g + pp;
    o.partials[((s * int64_t(o.n_heads) + head) * o.max_splits + split) * stride + 2 + d] =
        acc[idx];
  }
  for (int pp = tid; pp < g; pp += nthreads) {
    const int64_t head = kvh * g + pp;
    float* part = o.partials + ((s * int64_t(o.n_heads) + head) * o.max_splits + split) * stride;
    part[0] = m[pp];
    part[1] = l[pp];
  }
  __threadfence();
  __syncthreads();
  int32_t* counter = o.counters + int64_t(s) * o.n_kv_heads + kvh;
  if (tid == 0) *flag = atomicAdd(counter, 1) == nsp - 1;
  __syncthreads();
  if (!*flag) return;
  __threadfence();
  for (int idx = tid; idx < g * hd; idx += nthreads) {
    const int pp = idx / hd, d = idx - pp * hd;
    const int64_t head = kvh * g + pp;
    const float* part = o.partials + (s * int64_t(o.n_heads) + head) * o.max_splits * stride;
    float mx = -INFINITY;
    for (int i = 0; i < nsp; ++i) mx = fmaxf(mx, __ldcg(part + i * stride));
    // The sink joins the merge as one more partial: no value, sum e^0.
    const float sink = o.sinks != nullptr ? o.sinks[head] : -INFINITY;
    mx = fmaxf(mx, sink);
    float num = 0.f, den = sink == -INFINITY ? 0.f : expf(sink - mx);
    for (int i = 0; i < nsp; ++i) {
      const float mi = __ldcg(part + i * stride);
      const float e = mi == -INFINITY ? 0.f : expf(mi - mx);
      den += __ldcg(part + i * stride + 1) * e;
      num += __ldcg(part + i * stride + 2 + d) * e;
    }
    o.out[(int64_t(row) * o.n_heads + head) * hd + d] = num / den;
  }
  if (tid == 0) *counter = 0;
}

}  // namespace paged::cuda
