// The decode GEMV on 16-byte weight loads (gemv_wide.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>

#include "worker/backends/cuda/block_decode.cuh"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_util.cuh"
#include "worker/backends/cuda/env_setting.h"
#include "worker/backends/cuda/gemv_wide.h"

namespace paged::cuda {
namespace {

constexpr int kWarps = 4;  // rows per block, one warp each

// Values in one 16-byte load of a row.
constexpr int ChunkValues(ElemType t) {
  return t == ElemType::kI4 ? 32 : t == ElemType::kI8 ? 16 : 8;
}

// The 16 bytes of a row at chunk granularity as f32: f16 / bf16 pairs per
// word.
template <ElemType kType>
__device__ __forceinline__ void DecodeChunk(const uint4 raw, float* v) {
  const uint32_t word[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (kType == ElemType::kF16) {
      __half2 h;
      memcpy(&h, &word[i], 4);
      const float2 f = __half22float2(h);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    } else {
      __nv_bfloat162 h;
      memcpy(&h, &word[i], 4);
      const float2 f = __bfloat1622float2(h);
      v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
  }
}

// Values 4j .. 4j + 3 of an int8 / int4 row's 16-byte chunk as f32, without
// their scale: int8 byte b of word i is value 4i + b; int4 nibble b of word
// i (low nibble first) is value 8i + b, as common/quant.h packs them. No
// int-to-float conversion, which issues at a fraction of the FMA rate and
// set the pace of these two: each byte becomes a float by one byte permute
// and one subtraction (blockq::ByteF, as the block formats decode). One quad
// at a time keeps fewer values live than the whole chunk (32 at int4). j is
// a constant once the loops are unrolled.
template <ElemType kType>
__device__ __forceinline__ float4 DecodeQuad(const uint4 raw, int j) {
  const uint32_t word[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (kType == ElemType::kI8) {
    const uint32_t u = word[j] ^ 0x80808080u;  // two's complement to offset 128
    constexpr float base = blockq::kMagic + 128.f;
    return make_float4(blockq::ByteF(u, 0, base), blockq::ByteF(u, 1, base),
                       blockq::ByteF(u, 2, base), blockq::ByteF(u, 3, base));
  } else {
    // Nibble 2b is the low nibble of byte b, nibble 2b + 1 its high one.
    const uint32_t w = word[j / 2];
    const uint32_t lo = w & 0x0f0f0f0fu, hi = (w >> 4) & 0x0f0f0f0fu;
    const int b = (j % 2) * 2;
    constexpr float base = blockq::kMagic + 8.f;
    return make_float4(blockq::ByteF(lo, b, base), blockq::ByteF(hi, b, base),
                       blockq::ByteF(lo, b + 1, base), blockq::ByteF(hi, b + 1, base));
  }
}

// Up to kGemvWideMaxJobs products of one x, each a grid range of blocks:
// job j takes blocks [first[j], first[j + 1]).
struct WideJobs {
  const uint8_t* data[kGemvWideMaxJobs];
  const __half* scales[kGemvWideMaxJobs];
  const float* bias[kGemvWideMaxJobs];
  float* out[kGemvWideMaxJobs];
  float* add_to[kGemvWideMaxJobs];  // or null
  int64_t rows[kGemvWideMaxJobs];
  int first[kGemvWideMaxJobs + 1];
  int count;
};

// One warp per R consecutive output rows. A lane loads U chunks of 16 bytes
// of each of its R rows before it uses any (so a warp has R * U * 512 bytes
// in flight), reads the f32 x values of a chunk once (through the read-only
// cache) and dots them with the R decoded chunks; the warp sums its lanes.
// Reading x once for R rows is the point: x is f32, so at one row per warp
// the lanes read twice the weight bytes from L1 at f16 (4x at int8, 8x at
// int4), and L1, not HBM, set the pace. Chunk c of a row holds values
// [c * E, c * E + E). Each block takes its rows of one job.
// int8 / int4 ask for four blocks an SM: ptxas then keeps the decoded
// quads in registers (without it, int8 at two rows a warp spilled); 0 leaves
// f16 / bf16 as they were measured.
// kSplit (GemvSplitMode): the block's four warps take the same R rows, each
// thread every 128th chunk, and sum their shares through shared memory at
// the end (in warp order: the result does not depend on timing). A block
// then has R rows, not 4R: four times the blocks, each a quarter as long,
// so the last wave of blocks is a smaller part of a product.
template <ElemType kType, int R, int U, bool kNorm, bool kSplit>
__global__ void __launch_bounds__(kWarps * 32,
                                  kType == ElemType::kI8 || kType == ElemType::kI4 ? 4 : 0)
    GemvWideKernel(const WideJobs jobs, int64_t cols, int group, const float* __restrict__ x,
                   const float* __restrict__ norm_w, float eps) {
  PdlLetNextStart();  // pdl.h
  constexpr int E = ChunkValues(kType);
  constexpr bool kScaled = kType == ElemType::kI8 || kType == ElemType::kI4;
  // This block's job, its fields picked by constant indices (a dynamic
  // index into the parameters would go through local memory).
  const uint8_t* data = jobs.data[0];
  const __half* scales = jobs.scales[0];
  const float* bias = jobs.bias[0];
  float* out = jobs.out[0];
  float* add_to = jobs.add_to[0];
  int64_t rows = jobs.rows[0];
  int first = 0;
#pragma unroll
  for (int j = 1; j < kGemvWideMaxJobs; ++j) {
    if (j < jobs.count && int(blockIdx.x) >= jobs.first[j]) {
      data = jobs.data[j], scales = jobs.scales[j], bias = jobs.bias[j], out = jobs.out[j];
      add_to = jobs.add_to[j], rows = jobs.rows[j], first = jobs.first[j];
    }
  }
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int64_t r0 = kSplit ? int64_t(int(blockIdx.x) - first) * R
                            : (int64_t(int(blockIdx.x) - first) * kWarps + warp) * R;
  if (r0 >= rows) return;  // the whole block when kSplit
  // This thread's first chunk, and the stride between its chunks.
  constexpr int kStride = kSplit ? kWarps * 32 : 32;
  const int t0 = kSplit ? int(threadIdx.x) : lane;
  const int64_t chunks = cols / E;
  const int64_t row_bytes = chunks * 16;
  const int64_t groups = kScaled ? (cols + group - 1) / group : 0;
  // Rows past the end read row r0 again (always there) and are not stored.
  const uint4* w[R];
#pragma unroll
  for (int i = 0; i < R; ++i) {
    const int64_t r = r0 + i < rows ? r0 + i : r0;
    w[i] = reinterpret_cast<const uint4*>(data + r * row_bytes);
  }
  float acc[R];
#pragma unroll
  for (int i = 0; i < R; ++i) acc[i] = 0.f;
    // The first chunks of the rows into L2 before x is waited for: their
    // loads depend on nothing (a prefetch holds no registers).
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t c = t0 + kStride * u;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      if (c < chunks) asm volatile("prefetch.global.L2 [%0];" ::"l"(w[i] + c));
    }
  }
  // x (and out) belong to the kernel before (pdl.h).
  PdlWait();
  float ss = 0.f;  // this lane's share of sum(x^2), with norm_w
  for (int64_t base = t0; base < chunks; base += kStride * U) {
    uint4 raw[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + kStride * u;
#pragma unroll
      for (int i = 0; i < R; ++i) raw[u][i] = c < chunks ? __ldg(w[i] + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t c = base + kStride * u;
      if (c >= chunks) break;
      const float4* xc = reinterpret_cast<const float4*>(x + c * E);
      float4 xv[E / 4];
#pragma unroll
      for (int j = 0; j < E / 4; ++j) xv[j] = __ldg(xc + j);
      if constexpr (kNorm) {
        const float4* gc = reinterpret_cast<const float4*>(norm_w + c * E);
#pragma unroll
        for (int j = 0; j < E / 4; ++j) {
          const float4 g = __ldg(gc + j);
          ss += xv[j].x * xv[j].x + xv[j].y * xv[j].y + xv[j].z * xv[j].z + xv[j].w * xv[j].w;
          xv[j] = make_float4(xv[j].x * g.x, xv[j].y * g.y, xv[j].z * g.z, xv[j].w * g.w);
        }
      }
#pragma unroll
      for (int i = 0; i < R; ++i) {
        float d = 0.f;
        if constexpr (kScaled) {
#pragma unroll
          for (int j = 0; j < E / 4; ++j) {
            const float4 v = DecodeQuad<kType>(raw[u][i], j);
            d += v.x * xv[j].x + v.y * xv[j].y + v.z * xv[j].z + v.w * xv[j].w;
          }
        } else {
          float v[E];
          DecodeChunk<kType>(raw[u][i], v);
#pragma unroll
          for (int j = 0; j < E / 4; ++j)
            d += v[4 * j] * xv[j].x + v[4 * j + 1] * xv[j].y + v[4 * j + 2] * xv[j].z +
                 v[4 * j + 3] * xv[j].w;
        }
        if constexpr (kScaled) {
          const int64_t r = r0 + i < rows ? r0 + i : r0;
          d *= __half2float(scales[r * groups + c * E / group]);
        }
        acc[i] += d;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < R; ++i) acc[i] = WarpSum(acc[i]);
  if constexpr (kNorm) ss = WarpSum(ss);
  if constexpr (kSplit) {
    __shared__ float part[kWarps][R + 1];
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < R; ++i) part[warp][i] = acc[i];
      part[warp][R] = ss;
    }
    __syncthreads();
    if (warp != 0) return;
#pragma unroll
    for (int i = 0; i < R; ++i) {
      acc[i] = part[0][i];
#pragma unroll
      for (int k = 1; k < kWarps; ++k) acc[i] += part[k][i];
    }
    ss = part[0][R];
#pragma unroll
    for (int k = 1; k < kWarps; ++k) ss += part[k][R];
  }
  if constexpr (kNorm) {
    // RmsNorm's scale, in its operation order.
    const float scale = 1.f / sqrtf(__fadd_rn(ss / float(cols), eps));
#pragma unroll
    for (int i = 0; i < R; ++i) acc[i] *= scale;
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      if (r0 + i >= rows) continue;
      const float v = acc[i] + (bias != nullptr ? bias[r0 + i] : 0.f);
      if (add_to != nullptr) {
        add_to[r0 + i] += v;  // the residual stream; out is left as it was
      } else {
        out[r0 + i] = v;
      }
    }
  }
}

// Rows per warp forced by SetGemvWideRowsPerWarp or PAGED_CUDA_GEMV_ROWS
// (read at the first call): 1, 2 or 4; 0: chosen by RowsPerWarp.
int ValidRows(int r) { return r == 1 || r == 2 || r == 4 ? r : 0; }
EnvSetting forced_rows("PAGED_CUDA_GEMV_ROWS",
                       [](const char* v) { return ValidRows(v != nullptr ? std::atoi(v) : 0); });
int ForcedRows() { return forced_rows.get(); }

// Whether MatMulMany's jobs with add_to are added in the GEMV (on;
// PAGED_CUDA_GEMV_ADD=0 or SetGemvFusedAdd turn it off).
EnvSetting fused_add("PAGED_CUDA_GEMV_ADD", OnUnless0);

// Whether a block's rows are split between its warps (kSplit): the mode
// set by SetGemvSplitMode or read from PAGED_CUDA_GEMV_SPLIT ("0": never,
// "1": always, else by shape).
EnvSetting split_mode("PAGED_CUDA_GEMV_SPLIT", [](const char* v) {
  return v != nullptr && std::strcmp(v, "0") == 0   ? kGemvSplitNever
         : v != nullptr && std::strcmp(v, "1") == 0 ? kGemvSplitAlways
                                                    : kGemvSplitByShape;
});

// By shape, as measured on the H100 (TimingGpuTest, docs/BENCHMARKS.md):
// f16 / bf16 gain at every shape of llama-7b and -8b layers (at four rows:
// 4096 x 11008 2582 GB/s against 2219, 4096 x 4096 2267 against 2130,
// 22016 x 4096 2930 against 2765); int8 / int4, bound by their
// instructions, gain only on long rows, where a warp's chain of loads was
// long (int8 4096 x 11008: 1898 against 1501) and lose on 4096 columns
// (int8 22016 x 4096: 1868 against 2278).
bool SplitRows(ElemType type, int64_t cols) {
  switch (split_mode.get()) {
    case kGemvSplitNever:
      return false;
    case kGemvSplitAlways:
      return true;
    default:
      return type == ElemType::kF16 || type == ElemType::kBF16 || cols >= 8192;
  }
}

// Rows per warp, as measured on the H100 (14336, 4096 and 4096 x 14336 at
// one token row, docs/BENCHMARKS.md): int8 / int4 read 4x / 8x their
// weight bytes of x at one row a warp, and four rows were fastest at every
// shape (int4 14336 x 4096: 1073 GB/s against 455 at one row), split or
// not; so was f16 with the rows split (above). f16 not split gains from
// four rows where that still leaves every SM four blocks (14336 rows: 2723
// against 2585 GB/s) and loses where it does not (4096 rows: 1951 against
// 2134), so it takes one row a warp there.
int RowsPerWarp(ElemType type, int64_t rows, bool split) {
  if (const int forced = ForcedRows(); forced != 0) return forced;
  if (type == ElemType::kI8 || type == ElemType::kI4 || split) return 4;
  static const int sms = [] {
    int device = 0, n = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
      return 132;
    return n;
  }();
  return (rows + kWarps * 4 - 1) / (kWarps * 4) >= 4 * sms ? 4 : 1;
}

template <ElemType kType, int R, int U, bool kSplit>
CudaError LaunchRows(WideJobs jobs, int64_t cols, int group, const float* x, const float* norm_w,
                     float eps, cudaStream_t stream) {
  constexpr int kBlockRows = kSplit ? R : kWarps * R;
  jobs.first[0] = 0;
  for (int j = 0; j < jobs.count; ++j)
    jobs.first[j + 1] = jobs.first[j] + int((jobs.rows[j] + kBlockRows - 1) / kBlockRows);
  const dim3 grid(unsigned(jobs.first[jobs.count])), block(kWarps * 32);
  if (norm_w != nullptr) {
    // f16 / bf16 only: int8 / int4 are bound by their instructions, and
    // the norm's (a multiply and a square per x value) cost them what the
    // launch saved at int8 and a quarter of the step at int4 (H100).
    if constexpr (kType == ElemType::kI8 || kType == ElemType::kI4) {
      return int(cudaErrorNotSupported);
    } else {
      PAGED_CUDA_TRY(LaunchPdl(GemvWideKernel<kType, R, U, true, kSplit>, grid, block, 0, stream,
                               jobs, cols, group, x, norm_w, eps));
    }
  } else {
    PAGED_CUDA_TRY(LaunchPdl(GemvWideKernel<kType, R, U, false, kSplit>, grid, block, 0, stream,
                             jobs, cols, group, x, norm_w, eps));
  }
  PAGED_CUDA_LAUNCHED();
  return 0;
}

// One token row; four 16-byte loads in flight per row and lane at one or
// two rows a warp, two at four (eight either way). Rows per warp by the
// jobs' rows together.
template <ElemType kType>
CudaError LaunchOf(const WideJobs& jobs, int64_t cols, int group, const float* x,
                   const float* norm_w, float eps, cudaStream_t stream) {
  int64_t rows = 0;
  for (int j = 0; j < jobs.count; ++j) rows += jobs.rows[j];
  const bool split = SplitRows(kType, cols);
  switch (RowsPerWarp(kType, rows, split)) {
    case 4:
      return split ? LaunchRows<kType, 4, 2, true>(jobs, cols, group, x, norm_w, eps, stream)
                   : LaunchRows<kType, 4, 2, false>(jobs, cols, group, x, norm_w, eps, stream);
    case 2:
      return split ? LaunchRows<kType, 2, 4, true>(jobs, cols, group, x, norm_w, eps, stream)
                   : LaunchRows<kType, 2, 4, false>(jobs, cols, group, x, norm_w, eps, stream);
    default:
      return split ? LaunchRows<kType, 1, 4, true>(jobs, cols, group, x, norm_w, eps, stream)
                   : LaunchRows<kType, 1, 4, false>(jobs, cols, group, x, norm_w, eps, stream);
  }
}

bool Fits(const MatrixView& w, const float* x) {
  if (w.rows <= 0 || w.cols <= 0) return false;
  if (w.type != ElemType::kF16 && w.type != ElemType::kBF16 && w.type != ElemType::kI8 &&
      w.type != ElemType::kI4)
    return false;
  const int e = ChunkValues(w.type);
  if (w.cols % e != 0) return false;
  if ((w.type == ElemType::kI8 || w.type == ElemType::kI4) &&
      (w.scales == nullptr || w.group <= 0 || w.group % e != 0))
    return false;
  return reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

}  // namespace

void SetGemvWideRowsPerWarp(int rows) { forced_rows.set(ValidRows(rows)); }

CudaError LaunchGemvWideMany(const GemvWideJob* jobs, int count, const float* x,
                             cudaStream_t stream, const float* norm_w, float eps) {
  if (count < 1 || count > kGemvWideMaxJobs) return int(cudaErrorNotSupported);
  if (norm_w != nullptr && reinterpret_cast<uintptr_t>(norm_w) % 16 != 0)
    return int(cudaErrorNotSupported);
  WideJobs k{};
  k.count = count;
  const MatrixView& w0 = jobs[0].w;
  for (int j = 0; j < count; ++j) {
    const MatrixView& w = jobs[j].w;
    if (!Fits(w, x) || w.type != w0.type || w.cols != w0.cols || w.group != w0.group ||
        w.rows > INT32_MAX / 2)
      return int(cudaErrorNotSupported);
    k.data[j] = static_cast<const uint8_t*>(w.data);
    k.scales[j] = static_cast<const __half*>(w.scales);
    k.bias[j] = jobs[j].bias;
    k.out[j] = jobs[j].out;
    k.add_to[j] = jobs[j].add_to;
    k.rows[j] = w.rows;
  }
  switch (w0.type) {
    case ElemType::kF16:
      return LaunchOf<ElemType::kF16>(k, w0.cols, w0.group, x, norm_w, eps, stream);
    case ElemType::kBF16:
      return LaunchOf<ElemType::kBF16>(k, w0.cols, w0.group, x, norm_w, eps, stream);
    case ElemType::kI8:
      return LaunchOf<ElemType::kI8>(k, w0.cols, w0.group, x, norm_w, eps, stream);
    case ElemType::kI4:
      return LaunchOf<ElemType::kI4>(k, w0.cols, w0.group, x, norm_w, eps, stream);
    default:
      return int(cudaErrorNotSupported);
  }
}

bool GemvFusedAdd() { return fused_add.on(); }
void SetGemvFusedAdd(bool on) { fused_add.set(on ? 1 : 0); }
int GemvSplitMode() { return split_mode.get(); }
void SetGemvSplitMode(int mode) { split_mode.set(mode); }

CudaError LaunchGemvWide(const MatrixView& w, const float* x, int n, const float* bias, float* out,
                         cudaStream_t stream) {
  if (n != 1) return int(cudaErrorNotSupported);
  const GemvWideJob job{w, bias, out, nullptr};
  return LaunchGemvWideMany(&job, 1, x, stream);
}

}  // namespace paged::cuda
