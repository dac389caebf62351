#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "worker/backends/cuda/attention_prefill_mma.h"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"

namespace paged::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 16 * kWarps;  // query rows of a work item, 16 per warp
constexpr int kKeys = 64;           // keys staged per step
constexpr int kSkew = 8;            // padding of a staged row, in elements (16 bytes)

std::atomic<bool> g_enabled{true};

struct Params {
  const float* q;  // [n, n_heads * head_dim]
  float* out;      // [n, n_heads * head_dim]
  const AttnSeqView* seqs;
  int n_seqs;
  const int32_t* tables;
  const char* base;      // the layer's KV pool
  uint64_t block_bytes;  // stride of blocks in the pool
  uint64_t v_offset;     // bytes from a block's K rows to its V rows
  int block_tokens, kv_dim;
  int n_heads, group;
  float scale_log2;    // log2(e) * scale: exp(s * scale) = exp2(s * scale_log2)
  float scale;         // multiplies q . k (used with the soft-cap)
  float softcap;       // > 0: score = softcap * tanh(score * scale / softcap)
  int window;          // > 0: a row at position p sees keys (p - window, p] only
  const float* sinks;  // [n_heads] or null: each head's sink logit
};

// 64-row tiles of a sequence; decode rows (n_new == 1) are not ours.
__device__ __forceinline__ int Units(const AttnSeqView& sq) {
  return sq.n_new > 1 ? (sq.n_new + kRows - 1) / kRows : 0;
}

// x, y rounded to T and packed as an mma operand register (x in the low half,
// the lower column); rx, ry get the rounded values back as f32.
template <typename T>
__device__ __forceinline__ uint32_t Pack(float x, float y, float& rx, float& ry) {
  uint32_t u;
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(x, y);
    rx = __low2float(h);
    ry = __high2float(h);
    memcpy(&u, &h, 4);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    rx = __low2float(h);
    ry = __high2float(h);
    memcpy(&u, &h, 4);
  }
  return u;
}

// (x, y) ~= hi + lo, both 16-bit pairs: hi is the rounding, lo the rounding of
// the (exact) remainder. Leaves ~2^-22 (f16) / 2^-17 (bf16) relative error.
template <typename T>
__device__ __forceinline__ void Split(float x, float y, uint32_t& hi, uint32_t& lo) {
  float rx, ry, unused_x, unused_y;
  hi = Pack<T>(x, y, rx, ry);
  lo = Pack<T>(x - rx, y - ry, unused_x, unused_y);
}

// d += a b for one m16n8k16 tile, f32 accumulators. Fragments (g = lane / 4,
// t = lane % 4): a {(g, 2t..), (g + 8, 2t..), (g, 2t + 8..), (g + 8, 2t + 8..)}
// as (row, k); b {(k 2t.., n g), (k 2t + 8.., n g)}; d {(g, 2t), (g, 2t + 1),
// (g + 8, 2t), (g + 8, 2t + 1)} as (row, n).
template <typename T>
__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                    uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// 16 bytes global -> shared, asynchronous; zero-fills when !valid (src unread).
__device__ __forceinline__ void CpAsync16(void* dst, const void* src, bool valid) {
  const uint32_t d = uint32_t(__cvta_generic_to_shared(dst));
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most one committed group is still in flight.
__device__ __forceinline__ void CpAsyncWaitAllButOne() {
  asm volatile("cp.async.wait_group 1;\n" ::: "memory");
}

// Shared memory: the unit prefix [n_seqs + 1] (padded to 16 bytes), the scan
// scratch [32], then two stages of K and V tiles [kKeys][kHd + kSkew] of T.
__host__ __device__ inline int PrefixWords(int n_seqs) { return (n_seqs + 1 + 3) & ~3; }

template <typename T, int kHd>
__global__ void __launch_bounds__(kThreads) PrefillMmaKernel(Params p) {
  constexpr int kStride = kHd + kSkew;         // elements of a staged row
  constexpr int kTileElems = kKeys * kStride;  // one staged K (or V) tile
  constexpr int kChunks = kHd / 8;             // 16-byte chunks of a row
  constexpr int kKSteps = kHd / 16;            // k-steps of q . k over head_dim
  constexpr int kDTiles = kHd / 8;             // n-tiles of the output over head_dim
  static_assert(sizeof(T) == 2 && kHd % 16 == 0 && kKeys == 64);

  extern __shared__ uint4 smem_u4[];
  int* prefix = reinterpret_cast<int*>(smem_u4);  // [n_seqs + 1] units before each sequence
  int* scan = prefix + PrefixWords(p.n_seqs);     // [32]
  T* stage = reinterpret_cast<T*>(scan + 32);     // [2][K, V][kKeys][kStride]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Tiles per sequence, prefix-summed.
  const int total_units = BlockPrefixUnits(
      p.n_seqs, [&](int i) { return Units(p.seqs[i]); }, prefix, scan);

  // Items w = unit * n_heads + head; a sequence's units run from its last
  // (longest) tile to its first, and blocks take the items in a snake order
  // (round r: block b, or gridDim.x - 1 - b when r is odd), so that long
  // and short items even out over the blocks.
  const int64_t items = int64_t(total_units) * p.n_heads;
  const int64_t nblk = gridDim.x;
  const int64_t row_stride = int64_t(p.n_heads) * kHd;
  for (int64_t round = 0; round * nblk < items; ++round) {
    const int64_t w = round * nblk + ((round & 1) ? nblk - 1 - blockIdx.x : blockIdx.x);
    if (w >= items) continue;  // uniform over the block
    const int h = int(w % p.n_heads);
    const int u = int(w / p.n_heads);
    const int lo = ItemOfUnit(prefix, p.n_seqs, u);
    const AttnSeqView sq = p.seqs[lo];
    const int tile = Units(sq) - 1 - (u - prefix[lo]);
    const int r0 = tile * kRows, r1 = min(sq.n_new, r0 + kRows);  // rows [r0, r1)
    const int k1 = sq.start_pos + r1;                             // keys [k0, k1)
    // The first key of the window of the tile's first row (0 without a window).
    const int k0 = p.window > 0 ? max(0, sq.start_pos + r0 - p.window + 1) : 0;
    const int kvh = h / p.group;
    const int wr = r0 + 16 * warp;  // the warp's first row
    const bool active = wr < r1;
    const int q_first = sq.start_pos + wr;                   // its first position
    const int q_last = sq.start_pos + min(wr + 15, r1 - 1);  // its last (valid) one
    const int ra = wr + g, rb = ra + 8;                      // this thread's rows
    const int qpa = sq.start_pos + ra, qpb = sq.start_pos + rb;

    // q of rows ra, rb as A fragments, hi and lo halves (rows past r1: zero).
    uint32_t qh[kKSteps][4], ql[kKSteps][4];
    {
      const float* qa =
          p.q + (sq.q_offset + int64_t(min(ra, r1 - 1))) * row_stride + int64_t(h) * kHd + 2 * t;
      const float* qb =
          p.q + (sq.q_offset + int64_t(min(rb, r1 - 1))) * row_stride + int64_t(h) * kHd + 2 * t;
      const bool va = ra < r1, vb = rb < r1;
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int d = kk * 16 + half * 8;
          float2 xa = make_float2(0.f, 0.f), xb = xa;
          if (va) xa = *reinterpret_cast<const float2*>(qa + d);
          if (vb) xb = *reinterpret_cast<const float2*>(qb + d);
          Split<T>(xa.x, xa.y, qh[kk][2 * half], ql[kk][2 * half]);
          Split<T>(xb.x, xb.y, qh[kk][2 * half + 1], ql[kk][2 * half + 1]);
        }
      }
    }

    // Stages keys [step * kKeys, + kKeys) of kv head kvh (zeros past k1).
    auto load = [&](int step, int buf) {
      T* kd = stage + buf * 2 * kTileElems;
      T* vd = kd + kTileElems;
      const int t0 = step * kKeys;
      for (int idx = tid; idx < kKeys * kChunks; idx += kThreads) {
        const int j = idx / kChunks, c = idx % kChunks;
        const int pos = t0 + j;
        const bool valid = pos < k1;
        const char* src = p.base;
        if (valid) {
          const int b = pos / p.block_tokens;
          const int32_t block = p.tables[sq.table_offset + b];
          const int row = pos - b * p.block_tokens;
          src += uint64_t(block) * p.block_bytes +
                 (uint64_t(row) * p.kv_dim + kvh * kHd + c * 8) * sizeof(T);
        }
        CpAsync16(kd + j * kStride + c * 8, src, valid);
        CpAsync16(vd + j * kStride + c * 8, valid ? src + p.v_offset : src, valid);
      }
    };

    float o[kDTiles][4];  // unnormalised output, rows ra / rb as the d fragment
#pragma unroll
    for (int nd = 0; nd < kDTiles; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY};  // running max of rows ra, rb (log2 units)
    float l[2] = {0.f, 0.f};              // running sum, this thread's columns only

    const int n_steps = (k1 + kKeys - 1) / kKeys;
    const int first_step = k0 / kKeys;  // steps before it hold keys no row sees
    load(first_step, first_step & 1);
    CpAsyncCommit();
    for (int it = first_step; it < n_steps; ++it) {
      if (it + 1 < n_steps) load(it + 1, (it + 1) & 1);
      CpAsyncCommit();  // possibly empty: keeps the group count per step fixed
      CpAsyncWaitAllButOne();
      __syncthreads();  // step `it` is staged for every thread
      const int t0 = it * kKeys;
      // Uniform over the warp: some key of the step is in some row's range.
      const bool in_window = p.window <= 0 || t0 + kKeys - 1 > q_first - p.window;
      if (active && t0 <= q_last && in_window) {
        const T* ks = stage + (it & 1) * 2 * kTileElems;
        const uint32_t* k32 = reinterpret_cast<const uint32_t*>(ks);
        const uint16_t* v16 = reinterpret_cast<const uint16_t*>(ks + kTileElems);

        // s = q k^T over the 64 keys: 8 n-tiles of 8 keys.
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            // (k = d, n = key): K[key nt*8 + g][d kk*16 + 2t ..], and d + 8.
            const uint32_t* kr = k32 + ((nt * 8 + g) * kStride + kk * 16) / 2 + t;
            const uint32_t b0 = kr[0], b1 = kr[4];
            Mma<T>(s[nt], qh[kk], b0, b1);
            Mma<T>(s[nt], ql[kk], b0, b1);
          }
        }
        // Scale as the CPU reference ((q . k) * scale, here in log2 units;
        // with a soft-cap, cap * tanh(s * scale / cap) first) and mask keys
        // past each row's position (and past k1) or before its window.
        const bool diag = t0 + kKeys - 1 > q_first;
        const bool before = p.window > 0 && t0 <= q_last - p.window;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float x;
            if (p.softcap > 0.f) {
              x = tanhf(s[nt][e] * p.scale / p.softcap) * p.softcap * 1.4426950408889634f;
            } else {
              x = s[nt][e] * p.scale_log2;
            }
            const int key = t0 + nt * 8 + 2 * t + (e & 1);
            const int qp = e < 2 ? qpa : qpb;
            if (diag && key > qp) x = -INFINITY;
            if (before && key <= qp - p.window) x = -INFINITY;
            s[nt][e] = x;
          }
        }
        // Online softmax per row (the 4 lanes of a quad share a row).
        float corr[2];  // rescale of the rows' earlier output
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * i], s[nt][2 * i + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m[i], mx);
          const float m_use = m_new == -INFINITY ? 0.f : m_new;  // all masked so far
          corr[i] = exp2f(m[i] - m_use);                         // 0 on the first step
          m[i] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int nt = 0; nt < 8; ++nt) {
            s[nt][2 * i] = exp2f(s[nt][2 * i] - m_use);
            s[nt][2 * i + 1] = exp2f(s[nt][2 * i + 1] - m_use);
            sum += s[nt][2 * i] + s[nt][2 * i + 1];
          }
          l[i] = l[i] * corr[i] + sum;
        }
        // o = o * corr + P V. P's d fragments of n-tiles 2j, 2j + 1 are the A
        // fragment of k-step j (keys j*16 ..), split hi + lo. Each step's P V
        // is summed apart and added in f32 (the tensor cores' own sums then
        // run over 64 keys only, however long the context).
        uint32_t ph[kKeys / 16][4], pl[kKeys / 16][4];
#pragma unroll
        for (int j = 0; j < kKeys / 16; ++j) {
          Split<T>(s[2 * j][0], s[2 * j][1], ph[j][0], pl[j][0]);
          Split<T>(s[2 * j][2], s[2 * j][3], ph[j][1], pl[j][1]);
          Split<T>(s[2 * j + 1][0], s[2 * j + 1][1], ph[j][2], pl[j][2]);
          Split<T>(s[2 * j + 1][2], s[2 * j + 1][3], ph[j][3], pl[j][3]);
        }
#pragma unroll
        for (int nd = 0; nd < kDTiles; ++nd) {
          // (k = key, n = d): V[key j*16 + 2t, + 1][d nd*8 + g], and key + 8.
          const uint16_t* vr = v16 + 2 * t * kStride + nd * 8 + g;
          float pv[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
          for (int j = 0; j < kKeys / 16; ++j) {
            const uint16_t* v = vr + j * 16 * kStride;
            const uint32_t b0 = uint32_t(v[0]) | (uint32_t(v[kStride]) << 16);
            const uint32_t b1 = uint32_t(v[8 * kStride]) | (uint32_t(v[9 * kStride]) << 16);
            Mma<T>(pv, ph[j], b0, b1);
            Mma<T>(pv, pl[j], b0, b1);
          }
#pragma unroll
          for (int e = 0; e < 4; ++e) o[nd][e] = fmaf(o[nd][e], corr[e >> 1], pv[e]);
        }
      }
      __syncthreads();  // the stage read here is refilled by the next step
    }

    if (active) {
      // The head's sink (log2 units): one more term of each row's denominator.
      const float sink = p.sinks != nullptr ? p.sinks[h] * 1.4426950408889634f : -INFINITY;
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float sum = l[i];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        float c = 1.f;  // rescale of the output to the larger maximum
        if (sink != -INFINITY) {
          const float mx = fmaxf(m[i], sink);
          c = m[i] == -INFINITY ? 0.f : exp2f(m[i] - mx);
          sum = sum * c + exp2f(sink - mx);
        }
        const int row = i == 0 ? ra : rb;
        if (row < r1) {
          float* dst = p.out + (sq.q_offset + int64_t(row)) * row_stride + int64_t(h) * kHd + 2 * t;
#pragma unroll
          for (int nd = 0; nd < kDTiles; ++nd) {
            *reinterpret_cast<float2*>(dst + nd * 8) =
                make_float2(o[nd][2 * i] * c / sum, o[nd][2 * i + 1] * c / sum);
          }
        }
      }
    }
  }
}

template <typename T, int kHd>
CudaError Launch(const Params& p, int max_ctx, int num_sms, cudaStream_t stream) {
  const size_t bytes =
      size_t(PrefixWords(p.n_seqs) + 32) * 4 + size_t(2) * 2 * kKeys * (kHd + kSkew) * sizeof(T);
  auto* kernel = &PrefillMmaKernel<T, kHd>;
  // Work items (blocks past them would only exit).
  const int64_t tiles_per_seq = (int64_t(std::max(max_ctx, 1)) + kRows - 1) / kRows;
  unsigned grid = 0;
  PAGED_CUDA_TRY(PersistentGrid(kernel, kThreads, bytes,
                                int64_t(p.n_seqs) * p.n_heads * tiles_per_seq, num_sms, &grid));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace

void SetAttentionPrefillMma(bool on) { g_enabled.store(on, std::memory_order_relaxed); }

bool AttentionPrefillMmaSupports(const AttentionArgs& a) {
  if (!g_enabled.load(std::memory_order_relaxed)) return false;
  if (a.kv.type != ElemType::kF16 && a.kv.type != ElemType::kBF16) return false;
  if (a.head_dim != 64 && a.head_dim != 128) return false;
  if (a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.kv.block_tokens <= 0) return false;
  if (a.n_seqs <= 0 || a.n_seqs > kAttnMaxSeqs) return false;
  // 16-byte cp.async of K/V rows, 8-byte loads of q and stores of out.
  return reinterpret_cast<uintptr_t>(a.kv.base) % 16 == 0 && a.kv.block_bytes % 16 == 0 &&
         (uint64_t(a.kv.kv_dim) * 2) % 16 == 0 && reinterpret_cast<uintptr_t>(a.q) % 8 == 0 &&
         reinterpret_cast<uintptr_t>(a.out) % 8 == 0;
}

CudaError LaunchAttentionPrefillMma(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_seqs <= 0) return 0;
  if (!AttentionPrefillMmaSupports(a)) return int(cudaErrorInvalidValue);
  Params p;
  p.q = a.q;
  p.out = a.out;
  p.seqs = a.seqs;
  p.n_seqs = a.n_seqs;
  p.tables = a.tables;
  p.base = static_cast<const char*>(a.kv.base);
  p.block_bytes = a.kv.block_bytes;
  p.v_offset = uint64_t(a.kv.block_tokens) * a.kv.kv_dim * 2;
  p.block_tokens = a.kv.block_tokens;
  p.kv_dim = a.kv.kv_dim;
  p.n_heads = a.n_heads;
  p.group = a.n_heads / a.n_kv_heads;
  p.scale_log2 = a.scale > 0.f ? float(1.4426950408889634 * double(a.scale))
                               : float(1.4426950408889634 / std::sqrt(double(a.head_dim)));
  p.scale = a.scale > 0.f ? a.scale : 1.f / std::sqrt(float(a.head_dim));
  p.softcap = a.softcap;
  p.window = a.window;
  p.sinks = a.sinks;
  const bool f16 = a.kv.type == ElemType::kF16;
  if (a.head_dim == 64) {
    return f16 ? Launch<__half, 64>(p, a.max_ctx, a.num_sms, stream)
               : Launch<__nv_bfloat16, 64>(p, a.max_ctx, a.num_sms, stream);
  }
  return f16 ? Launch<__half, 128>(p, a.max_ctx, a.num_sms, stream)
             : Launch<__nv_bfloat16, 128>(p, a.max_ctx, a.num_sms, stream);
}

}  // namespace paged::cuda
