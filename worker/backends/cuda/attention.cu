#include <algorithm>
#include <cmath>
#include <type_traits>

#include "worker/backends/cuda/attention.h"
#include "worker/backends/cuda/attention_decode.h"
#include "worker/backends/cuda/attention_prefill_mma.h"
#include "worker/backends/cuda/attention_util.cuh"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"

namespace paged::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kKeyTile = 64;      // keys staged in shared memory at a time
constexpr int kSplitLen = 256;    // fewest keys per split of a decode row
constexpr int kMaxSplits = 16;    // most splits of one decode row
constexpr int kTargetPairs = 16;  // (row, head) pairs per prefill work item

struct Plan {
  int group;          // query heads per kv head
  int rows_per_tile;  // rows of a prefill work item
  int max_pairs;      // rows_per_tile * group
  int max_splits;     // splits of the longest decode row
};

Plan MakePlan(const AttentionArgs& a) {
  Plan p;
  p.group = a.n_heads / a.n_kv_heads;
  p.rows_per_tile = std::max(1, kTargetPairs / p.group);
  p.max_pairs = p.rows_per_tile * p.group;
  // A decode row reads at most `window` keys.
  const int keys = a.window > 0 ? std::min(a.max_ctx, a.window) : a.max_ctx;
  // Room for the splits of either kernel that may take decode rows.
  p.max_splits = std::max(std::clamp((keys + kSplitLen - 1) / kSplitLen, 1, kMaxSplits),
                          AttentionDecodeMaxSplits(keys));
  return p;
}

// Shared memory of one block, in 4-byte words.
struct Layout {
  int qs, acc, ks, vs, scores, m, l, corr, flag, scan, words;
  __host__ __device__ Layout(int n_seqs, int max_pairs, int hd) {
    const int prefix_words = (n_seqs + 1 + 3) & ~3;
    qs = prefix_words;                  // [max_pairs][hd + 1]
    acc = qs + max_pairs * (hd + 1);    // [max_pairs][hd], unnormalised output
    ks = acc + max_pairs * hd;          // [kKeyTile][hd + 1]
    vs = ks + kKeyTile * (hd + 1);      // [kKeyTile][hd]
    scores = vs + kKeyTile * hd;        // [max_pairs][kKeyTile]
    m = scores + max_pairs * kKeyTile;  // [max_pairs] running max
    l = m + max_pairs;                  // [max_pairs] running sum
    corr = l + max_pairs;               // [max_pairs] rescale of this tile
    flag = corr + max_pairs;            // 1 int
    scan = flag + 4;                    // 32 ints
    words = scan + 32;
  }
};

struct Params {
  const float* q;
  float* out;
  const AttnSeqView* seqs;
  int n_seqs;
  const int32_t* tables;
  const char* base;
  uint64_t block_bytes;
  int block_tokens, kv_dim;
  int n_heads, n_kv_heads, head_dim;
  int group, rows_per_tile, max_pairs, max_splits;
  int skip_prefill;  // prefill sequences run on the mma kernel
  int skip_decode;   // decode rows run on the decode kernel
  float scale;
  float softcap;       // > 0: scores soft-capped
  int window;          // > 0: sliding window
  const float* sinks;  // [n_heads] or null
  float* partials;     // [n_seqs][n_heads][max_splits][2 + head_dim]
  int32_t* counters;   // [n_seqs][n_kv_heads]
};

__device__ __forceinline__ int Splits(int ctx, int max_splits) {
  const int s = (ctx + kSplitLen - 1) / kSplitLen;
  return s < 1 ? 1 : (s > max_splits ? max_splits : s);
}

__device__ __forceinline__ int Units(const AttnSeqView& sq, const Params& p) {
  if (sq.n_new <= 0) return 0;
  if (sq.n_new == 1 && p.skip_decode) return 0;
  if (sq.n_new == 1)
    return Splits(sq.start_pos + 1 - FirstKey(sq.start_pos, p.window), p.max_splits);
  if (p.skip_prefill) return 0;
  return (sq.n_new + p.rows_per_tile - 1) / p.rows_per_tile;
}

// Stages keys [t0, t0 + nt) of kv head `kvh` as f32: ks [nt][hd + 1], vs [nt][hd].
template <typename T, int kVec>
__device__ __forceinline__ void LoadTile(const Params& p, int table_offset, int t0, int nt, int kvh,
                                         float* ks, float* vs) {
  const int hd = p.head_dim;
  const int per_row = hd / kVec;
  for (int idx = threadIdx.x; idx < nt * per_row; idx += blockDim.x) {
    const int j = idx / per_row;
    const int d = (idx - j * per_row) * kVec;
    const int pos = t0 + j;
    const int32_t block = p.tables[table_offset + pos / p.block_tokens];
    const int row = pos % p.block_tokens;
    const T* kp = reinterpret_cast<const T*>(p.base + uint64_t(block) * p.block_bytes) +
                  int64_t(row) * p.kv_dim + kvh * hd + d;
    const T* vp = kp + int64_t(p.block_tokens) * p.kv_dim;
    float kf[kVec], vf[kVec];
    LoadVec<T, kVec>(kp, kf);
    LoadVec<T, kVec>(vp, vf);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      ks[j * (hd + 1) + d + e] = kf[e];
      vs[j * hd + d + e] = vf[e];
    }
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads) AttentionKernel(Params p) {
  PdlLetNextStart();  // pdl.h: waits before it reads
  PdlWait();
  extern __shared__ float4 smem_f4[];
  float* sm = reinterpret_cast<float*>(smem_f4);
  const Layout lay(p.n_seqs, p.max_pairs, p.head_dim);
  int* prefix = reinterpret_cast<int*>(sm);  // [n_seqs + 1] units before each sequence
  float* qs = sm + lay.qs;
  float* acc = sm + lay.acc;
  float* ks = sm + lay.ks;
  float* vs = sm + lay.vs;
  float* sc = sm + lay.scores;
  float* mrow = sm + lay.m;
  float* lrow = sm + lay.l;
  float* corr = sm + lay.corr;
  int* flag = reinterpret_cast<int*>(sm + lay.flag);
  int* scan = reinterpret_cast<int*>(sm + lay.scan);
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int lane = tid & 31, warp = tid >> 5, nwarps = nthreads >> 5;
  const int hd = p.head_dim, g = p.group;

  // Units of work per sequence, prefix-summed.
  const int total_units = BlockPrefixUnits(
      p.n_seqs, [&](int i) { return Units(p.seqs[i], p); }, prefix, scan);

  const int64_t items = int64_t(total_units) * p.n_kv_heads;
  for (int64_t w = blockIdx.x; w < items; w += gridDim.x) {
    const int kvh = int(w % p.n_kv_heads);
    const int u = int(w / p.n_kv_heads);
    const int s = ItemOfUnit(prefix, p.n_seqs, u);
    const AttnSeqView sq = p.seqs[s];
    const int unit = u - prefix[s];
    int r0, r1, k0, k1, split = 0, nsp = 1;
    if (sq.n_new == 1) {
      // Keys [first, ctx) in nsp splits.
      const int ctx = sq.start_pos + 1;
      const int first = FirstKey(sq.start_pos, p.window);
      nsp = Splits(ctx - first, p.max_splits);
      split = unit;
      const int chunk = (ctx - first + nsp - 1) / nsp;
      r0 = 0, r1 = 1;
      k0 = min(ctx, first + split * chunk);
      k1 = min(ctx, k0 + chunk);
    } else {
      r0 = unit * p.rows_per_tile;
      r1 = min(sq.n_new, r0 + p.rows_per_tile);
      k0 = FirstKey(sq.start_pos + r0, p.window);  // the tile's first row sees the most
      k1 = sq.start_pos + r1;
    }
    const int npairs = (r1 - r0) * g;

    // pair pp: row r0 + pp / g, query head kvh * g + pp % g.
    for (int idx = tid; idx < npairs * hd; idx += nthreads) {
      const int pp = idx / hd, d = idx - pp * hd;
      const int row = sq.q_offset + r0 + pp / g, head = kvh * g + pp % g;
      qs[pp * (hd + 1) + d] = p.q[(int64_t(row) * p.n_heads + head) * hd + d];
      acc[idx] = 0.f;
    }
    for (int pp = tid; pp < npairs; pp += nthreads) {
      mrow[pp] = -INFINITY;
      lrow[pp] = 0.f;
    }
    __syncthreads();

    for (int t0 = k0; t0 < k1; t0 += kKeyTile) {
      const int nt = min(kKeyTile, k1 - t0);
      LoadTile<T, kVec>(p, sq.table_offset, t0, nt, kvh, ks, vs);
      __syncthreads();
      for (int idx = tid; idx < npairs * kKeyTile; idx += nthreads) {
        const int pp = idx / kKeyTile, j = idx - pp * kKeyTile;
        const int qpos = sq.start_pos + r0 + pp / g;
        float v = -INFINITY;
        if (j < nt && t0 + j <= qpos && t0 + j >= FirstKey(qpos, p.window)) {
          const float* qr = qs + pp * (hd + 1);
          const float* kr = ks + j * (hd + 1);
          float dot = 0.f;
          for (int d = 0; d < hd; ++d) dot += qr[d] * kr[d];
          v = dot * p.scale;  // as the CPU reference: (q . k) * scale, then the cap
          if (p.softcap > 0.f) v = tanhf(v / p.softcap) * p.softcap;
        }
        sc[idx] = v;
      }
      __syncthreads();
      for (int pp = warp; pp < npairs; pp += nwarps) {
        float* row = sc + pp * kKeyTile;
        float mx = -INFINITY;
        for (int j = lane; j < kKeyTile; j += 32) mx = fmaxf(mx, row[j]);
        mx = WarpMax(mx);
        const float m_old = mrow[pp];
        const float m_new = fmaxf(m_old, mx);
        float sum = 0.f;
        for (int j = lane; j < kKeyTile; j += 32) {
          const float e = m_new == -INFINITY ? 0.f : expf(row[j] - m_new);
          row[j] = e;
          sum += e;
        }
        sum = WarpSum(sum);
        __syncwarp();  // every lane has read mrow[pp] before lane 0 rewrites it
        if (lane == 0) {
          const float c = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
          corr[pp] = c;
          lrow[pp] = lrow[pp] * c + sum;
          mrow[pp] = m_new;
        }
      }
      __syncthreads();
      for (int idx = tid; idx < npairs * hd; idx += nthreads) {
        const int pp = idx / hd, d = idx - pp * hd;
        const float* prow = sc + pp * kKeyTile;
        float a = acc[idx] * corr[pp];
        for (int j = 0; j < nt; ++j) a += prow[j] * vs[j * hd + d];
        acc[idx] = a;
      }
      __syncthreads();
    }

    if (nsp == 1) {
      for (int idx = tid; idx < npairs * hd; idx += nthreads) {
        const int pp = idx / hd, d = idx - pp * hd;
        const int row = sq.q_offset + r0 + pp / g, head = kvh * g + pp % g;
        float num = acc[idx], den = lrow[pp];
        if (p.sinks != nullptr) SinkNormalise(mrow[pp], p.sinks[head], &num, &den);
        p.out[(int64_t(row) * p.n_heads + head) * hd + d] = num / den;
      }
    } else {
      // One decode row: pairs are the group's heads.
      const DecodeOut o{p.out,     p.sinks,      p.partials, p.counters,
                        p.n_heads, p.n_kv_heads, hd,         p.max_splits};
      FinishDecodeSplit(o, s, sq.q_offset, kvh, g, split, nsp, acc, mrow, lrow, flag);
    }
    __syncthreads();  // shared memory is reused by the next item
  }
}

template <typename T, int kVec>
CudaError Launch(const Params& p, int max_ctx, int num_sms, cudaStream_t stream) {
  const Layout lay(p.n_seqs, p.max_pairs, p.head_dim);
  const size_t bytes = size_t(lay.words) * 4;
  auto* kernel = &AttentionKernel<T, kVec>;
  // Work items (blocks past them would only exit).
  const int64_t units_per_seq =
      p.skip_prefill
          ? p.max_splits
          : std::max<int64_t>(p.max_splits, (int64_t(std::max(max_ctx, 1)) + p.rows_per_tile - 1) /
                                                p.rows_per_tile);
  unsigned grid = 0;
  PAGED_CUDA_TRY(PersistentGrid(kernel, kThreads, bytes,
                                int64_t(p.n_seqs) * p.n_kv_heads * units_per_seq, num_sms, &grid));
  PAGED_CUDA_TRY(LaunchPdl(kernel, grid, kThreads, bytes, stream, p));
  PAGED_CUDA_LAUNCHED();
  return 0;
}

template <typename T>
CudaError LaunchTyped(const Params& p, int max_ctx, int num_sms, cudaStream_t stream) {
  constexpr int kVec = 16 / int(sizeof(T));
  const bool aligned = p.head_dim % kVec == 0 && (p.kv_dim * sizeof(T)) % 16 == 0 &&
                       p.block_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(p.base) % 16 == 0;
  return aligned ? Launch<T, kVec>(p, max_ctx, num_sms, stream)
                 : Launch<T, 1>(p, max_ctx, num_sms, stream);
}

}  // namespace

uint64_t AttentionPartialBytes(const AttentionArgs& a) {
  if (a.n_seqs <= 0 || a.n_kv_heads <= 0) return 0;
  const Plan pl = MakePlan(a);
  if (pl.max_splits <= 1) return 0;
  return uint64_t(a.n_seqs) * a.n_heads * pl.max_splits * (2 + a.head_dim) * sizeof(float);
}

CudaError LaunchAttention(const AttentionArgs& a, float* partials, int32_t* counters,
                          cudaStream_t stream) {
  if (a.n_seqs <= 0) return 0;
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.head_dim <= 0 ||
      a.head_dim > kAttnMaxHeadDim || a.head_dim % 2 != 0 || a.n_seqs > kAttnMaxSeqs ||
      a.kv.block_tokens <= 0 || a.window < 0 || !(a.softcap >= 0.f) || !(a.scale >= 0.f)) {
    return int(cudaErrorInvalidValue);
  }
  const Plan pl = MakePlan(a);
  Params p;
  p.q = a.q;
  p.out = a.out;
  p.seqs = a.seqs;
  p.n_seqs = a.n_seqs;
  p.tables = a.tables;
  p.base = static_cast<const char*>(a.kv.base);
  p.block_bytes = a.kv.block_bytes;
  p.block_tokens = a.kv.block_tokens;
  p.kv_dim = a.kv.kv_dim;
  p.n_heads = a.n_heads;
  p.n_kv_heads = a.n_kv_heads;
  p.head_dim = a.head_dim;
  p.group = pl.group;
  p.rows_per_tile = pl.rows_per_tile;
  p.max_pairs = pl.max_pairs;
  p.max_splits = pl.max_splits;
  p.scale = a.scale > 0.f ? a.scale : 1.f / std::sqrt(float(a.head_dim));
  p.softcap = a.softcap;
  p.window = a.window;
  p.sinks = a.sinks;
  p.partials = partials;
  p.counters = counters;
  p.skip_prefill = 0;
  p.skip_decode = 0;
  if (AttentionDecodeOn() && AttentionDecodeSupports(a)) {
    const CudaError e = LaunchAttentionDecode(a, pl.max_splits, partials, counters, stream);
    if (e != 0) return e;
    p.skip_decode = 1;
  }
  if (a.decode_rows) {
    p.skip_prefill = 1;  // there are no prefill rows to run anywhere
  } else if (AttentionPrefillMmaSupports(a)) {
    const CudaError e = LaunchAttentionPrefillMma(a, stream);
    if (e != 0) return e;
    p.skip_prefill = 1;
  }
  if (p.skip_prefill && p.skip_decode) return 0;  // nothing left for this kernel
  switch (a.kv.type) {
    case ElemType::kF32:
      return LaunchTyped<float>(p, a.max_ctx, a.num_sms, stream);
    case ElemType::kF16:
      return LaunchTyped<__half>(p, a.max_ctx, a.num_sms, stream);
    case ElemType::kBF16:
      return LaunchTyped<__nv_bfloat16>(p, a.max_ctx, a.num_sms, stream);
    default:
      return int(cudaErrorInvalidValue);
  }
}

}  // namespace paged::cuda
