#include <algorithm>
#include <cmath>

#include "worker/backends/cuda/attention_decode.h"
#include "worker/backends/cuda/attention_util.cuh"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/env_setting.h"

namespace paged::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kUnroll = 2;  // key rounds of a warp whose loads are issued together

EnvSetting decode_kernel("PAGED_CUDA_ATTN_DECODE", OffUnless1);

struct Params {
  const float* q;
  const AttnSeqView* seqs;
  int n_seqs;
  const int32_t* tables;
  const char* base;
  uint64_t block_bytes;
  uint64_t v_offset;  // bytes from a block's K rows to its V rows
  int block_tokens, kv_dim;
  int head_dim, group;
  int lanes;      // lanes a key's head_dim is spread over (a power of two)
  int split_cap;  // most splits of a row in this launch
  float scale;    // multiplies q . k
  float softcap;  // > 0: scores soft-capped
  int window;     // > 0: sliding window
  DecodeOut dst;  // output, sinks, split-K scratch
};

// Shared memory of a block, in 4-byte words.
struct Layout {
  int scan, flag, wm, wl, wacc, m, l, words;
  __host__ __device__ Layout(int n_seqs, int g, int hd) {
    scan = (n_seqs + 1 + 3) & ~3;  // after the prefix over sequences
    flag = scan + 32;
    wm = flag + 4;           // [kWarps][g] each warp's running max
    wl = wm + kWarps * g;    // [kWarps][g] and sum
    wacc = wl + kWarps * g;  // [kWarps][g][hd] and output; warp 0's is the merged one
    m = wacc + kWarps * g * hd;
    l = m + g;
    words = l + g;
  }
};

__host__ __device__ inline int DecodeSplits(int keys, int cap) {
  const int s = (keys + kDecodeSplitKeys - 1) / kDecodeSplitKeys;
  return s < 1 ? 1 : (s > cap ? cap : s);
}

__device__ __forceinline__ int Keys(const AttnSeqView& sq, int window) {
  return sq.start_pos + 1 - FirstKey(sq.start_pos, window);
}

// kG: most query heads per kv head (the group, g <= kG, runs in registers).
template <typename T, int kG>
__global__ void __launch_bounds__(kThreads) DecodeKernel(Params p) {
  constexpr int kVec = 16 / int(sizeof(T));
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  extern __shared__ float4 smem_f4[];
  float* sm = reinterpret_cast<float*>(smem_f4);
  const int hd = p.head_dim, g = p.group;
  const Layout lay(p.n_seqs, g, hd);
  int* prefix = reinterpret_cast<int*>(sm);
  int* scan = reinterpret_cast<int*>(sm + lay.scan);
  int* flag = reinterpret_cast<int*>(sm + lay.flag);
  float* wm = sm + lay.wm;
  float* wl = sm + lay.wl;
  float* wacc = sm + lay.wacc;
  float* mrow = sm + lay.m;
  float* lrow = sm + lay.l;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int lanes = p.lanes, keys_per_round = 32 / lanes;
  const int sub = lane / lanes, d0 = (lane % lanes) * kVec;
  const bool active = d0 < hd;  // head_dim short of a power of two of chunks

  const int total_units = BlockPrefixUnits(
      p.n_seqs,
      [&](int i) {
        const AttnSeqView sq = p.seqs[i];
        return sq.n_new == 1 ? DecodeSplits(Keys(sq, p.window), p.split_cap) : 0;
      },
      prefix, scan);

  const int64_t items = int64_t(total_units) * p.dst.n_kv_heads;
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const int kvh = int(w % p.dst.n_kv_heads);
    const int u = int(w / p.dst.n_kv_heads);
    const int s = ItemOfUnit(prefix, p.n_seqs, u);
    const AttnSeqView sq = p.seqs[s];
    const int split = u - prefix[s];
    const int ctx = sq.start_pos + 1;
    const int first = FirstKey(sq.start_pos, p.window);
    const int nsp = DecodeSplits(ctx - first, p.split_cap);
    const int chunk = (ctx - first + nsp - 1) / nsp;
    const int k0 = min(ctx, first + split * chunk);
    const int k1 = min(ctx, k0 + chunk);

    // This lane's slice of each query head of the group, and its state.
    float q[kG][kVec], acc[kG][kVec], m[kG], l[kG];
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      m[h] = -INFINITY;
      l[h] = 0.f;
#pragma unroll
      for (int e = 0; e < kVec; ++e) q[h][e] = acc[h][e] = 0.f;
      if (h < g && active) {
        const float* qp = p.q + (int64_t(sq.q_offset) * p.dst.n_heads + kvh * g + h) * hd + d0;
#pragma unroll
        for (int e = 0; e < kVec; e += 4) {
          const float4 v = *reinterpret_cast<const float4*>(qp + e);
          q[h][e] = v.x, q[h][e + 1] = v.y, q[h][e + 2] = v.z, q[h][e + 3] = v.w;
        }
      }
    }

    const int round = kWarps * keys_per_round;
    for (int t0 = k0 + warp * keys_per_round; t0 < k1; t0 += round * kUnroll) {
      uint4 kr[kUnroll], vr[kUnroll];
      bool valid[kUnroll];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        const int t = t0 + r * round + sub;
        valid[r] = t < k1;
        kr[r] = vr[r] = make_uint4(0, 0, 0, 0);
        if (valid[r] && active) {
          const int32_t block = p.tables[sq.table_offset + t / p.block_tokens];
          const char* kp = p.base + uint64_t(block) * p.block_bytes +
                           (int64_t(t % p.block_tokens) * p.kv_dim + kvh * hd + d0) * sizeof(T);
          kr[r] = *reinterpret_cast<const uint4*>(kp);
          vr[r] = *reinterpret_cast<const uint4*>(kp + p.v_offset);
        }
      }
      // Scores of the round's keys for each head: the lanes of a key sum
      // their slices (all 32 lanes shuffle; the xor stays within a key).
      float sc[kUnroll][kG];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) {
        float kf[kVec];
        Widen<T>(kr[r], kf);
#pragma unroll
        for (int h = 0; h < kG; ++h) {
          float dot = 0.f;
#pragma unroll
          for (int e = 0; e < kVec; ++e) dot += q[h][e] * kf[e];
          for (int off = lanes >> 1; off > 0; off >>= 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, off);
          float v = dot * p.scale;  // as the CPU reference: (q . k) * scale, then the cap
          if (p.softcap > 0.f) v = tanhf(v / p.softcap) * p.softcap;
          sc[r][h] = valid[r] ? v : -INFINITY;
        }
      }
      float vf[kUnroll][kVec];
#pragma unroll
      for (int r = 0; r < kUnroll; ++r) Widen<T>(vr[r], vf[r]);
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        if (h >= g) break;
        float mx = m[h];
#pragma unroll
        for (int r = 0; r < kUnroll; ++r) mx = fmaxf(mx, sc[r][h]);
        if (mx == -INFINITY) continue;  // no key of this lane group yet
        const float c = expf(m[h] - mx);
        l[h] *= c;
#pragma unroll
        for (int e = 0; e < kVec; ++e) acc[h][e] *= c;
#pragma unroll
        for (int r = 0; r < kUnroll; ++r) {
          const float pr = expf(sc[r][h] - mx);
          l[h] += pr;
#pragma unroll
          for (int e = 0; e < kVec; ++e) acc[h][e] += pr * vf[r][e];
        }
        m[h] = mx;
      }
    }

    // The warp's key groups merge (lanes of the same slice, xor across groups).
    for (int off = lanes; off < 32; off <<= 1) {
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        const float mo = __shfl_xor_sync(0xffffffffu, m[h], off);
        const float lo = __shfl_xor_sync(0xffffffffu, l[h], off);
        const float mx = fmaxf(m[h], mo);
        const float cs = mx == -INFINITY ? 0.f : expf(m[h] - mx);
        const float co = mx == -INFINITY ? 0.f : expf(mo - mx);
        l[h] = l[h] * cs + lo * co;
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          const float ao = __shfl_xor_sync(0xffffffffu, acc[h][e], off);
          acc[h][e] = acc[h][e] * cs + ao * co;
        }
        m[h] = mx;
      }
    }
    if (sub == 0) {
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        if (h >= g) break;
        if (active) {
#pragma unroll
          for (int e = 0; e < kVec; ++e) wacc[(warp * g + h) * hd + d0 + e] = acc[h][e];
        }
        if (lane == 0) {
          wm[warp * g + h] = m[h];
          wl[warp * g + h] = l[h];
        }
      }
    }
    __syncthreads();
    // The warps merge, in warp order, into warp 0's slice.
    for (int idx = tid; idx < g * hd; idx += kThreads) {
      const int h = idx / hd;
      float mx = -INFINITY;
      for (int v = 0; v < kWarps; ++v) mx = fmaxf(mx, wm[v * g + h]);
      float num = 0.f, den = 0.f;
      for (int v = 0; v < kWarps; ++v) {
        const float mv = wm[v * g + h];
        const float e = mv == -INFINITY ? 0.f : expf(mv - mx);
        num += wacc[v * g * hd + idx] * e;
        den += wl[v * g + h] * e;
      }
      wacc[idx] = num;
      if (idx % hd == 0) {
        mrow[h] = mx;
        lrow[h] = den;
      }
    }
    __syncthreads();
    FinishDecodeSplit(p.dst, s, sq.q_offset, kvh, g, split, nsp, wacc, mrow, lrow, flag);
    __syncthreads();  // shared memory is reused by the next item
  }
}

template <typename T, int kG>
CudaError Launch(const Params& p, int max_splits, int num_sms, cudaStream_t stream) {
  const Layout lay(p.n_seqs, p.group, p.head_dim);
  const size_t bytes = size_t(lay.words) * 4;
  auto* kernel = &DecodeKernel<T, kG>;
  unsigned grid = 0;
  PAGED_CUDA_TRY(PersistentGrid(kernel, kThreads, bytes,
                                int64_t(p.n_seqs) * p.dst.n_kv_heads * max_splits, num_sms, &grid));
  PAGED_CUDA_TRY(LaunchPdl(kernel, grid, kThreads, bytes, stream, p));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

template <typename T>
CudaError LaunchTyped(const Params& p, int max_splits, int num_sms, cudaStream_t stream) {
  if (p.group <= 1) return Launch<T, 1>(p, max_splits, num_sms, stream);
  if (p.group <= 2) return Launch<T, 2>(p, max_splits, num_sms, stream);
  if (p.group <= 4) return Launch<T, 4>(p, max_splits, num_sms, stream);
  return Launch<T, 8>(p, max_splits, num_sms, stream);
}

}  // namespace

int AttentionDecodeMaxSplits(int keys) { return DecodeSplits(keys, kDecodeMaxSplits); }

void SetAttentionDecode(bool on) { decode_kernel.set(on ? 1 : 0); }
bool AttentionDecodeOn() { return decode_kernel.on(); }

bool AttentionDecodeSupports(const AttentionArgs& a) {
  const ElemType t = a.kv.type;
  if (t != ElemType::kF32 && t != ElemType::kF16 && t != ElemType::kBF16) return false;
  const int eb = ElemBytes(t);
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0) return false;
  const int vec = 16 / eb;
  return a.n_heads / a.n_kv_heads <= 8 && a.head_dim % vec == 0 && a.head_dim / vec <= 32 &&
         (uint64_t(a.kv.kv_dim) * eb) % 16 == 0 && a.kv.block_bytes % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.kv.base) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(a.q) % 16 == 0;
}

CudaError LaunchAttentionDecode(const AttentionArgs& a, int max_splits, float* partials,
                                int32_t* counters, cudaStream_t stream) {
  if (a.n_seqs <= 0) return 0;
  if (!AttentionDecodeSupports(a) || max_splits < 1 || (max_splits > 1 && partials == nullptr))
    return int(cudaErrorInvalidValue);
  const int eb = ElemBytes(a.kv.type);
  Params p;
  p.q = a.q;
  p.seqs = a.seqs;
  p.n_seqs = a.n_seqs;
  p.tables = a.tables;
  p.base = static_cast<const char*>(a.kv.base);
  p.block_bytes = a.kv.block_bytes;
  p.v_offset = uint64_t(a.kv.block_tokens) * a.kv.kv_dim * eb;
  p.block_tokens = a.kv.block_tokens;
  p.kv_dim = a.kv.kv_dim;
  p.head_dim = a.head_dim;
  p.group = a.n_heads / a.n_kv_heads;
  p.lanes = 1;
  while (p.lanes * (16 / eb) < a.head_dim) p.lanes *= 2;
  // Enough items for two blocks a multiprocessor: a batch-1 row is split
  // even when it is short, a large batch's rows are not.
  const int64_t rows = int64_t(a.n_seqs) * a.n_kv_heads;
  p.split_cap = int(std::clamp<int64_t>((2 * int64_t(a.num_sms) + rows - 1) / rows, 1, max_splits));
  p.scale = a.scale > 0.f ? a.scale : 1.f / std::sqrt(float(a.head_dim));
  p.softcap = a.softcap;
  p.window = a.window;
  p.dst = DecodeOut{a.out,     a.sinks,      partials,   counters,
                    a.n_heads, a.n_kv_heads, a.head_dim, max_splits};
  switch (a.kv.type) {
    case ElemType::kF32:
      return LaunchTyped<float>(p, max_splits, a.num_sms, stream);
    case ElemType::kF16:
      return LaunchTyped<__half>(p, max_splits, a.num_sms, stream);
    default:
      return LaunchTyped<__nv_bfloat16>(p, max_splits, a.num_sms, stream);
  }
}

}  // namespace paged::cuda
