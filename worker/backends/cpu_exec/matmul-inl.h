// The per-target body of the matrix products, included by each
// matmul_<format>.cc once per Highway target (foreach_target.h).
//
// One kernel template serves every format: a format only provides a row
// decoder that turns a chunk of one weight row (2 vectors' worth of columns)
// into two f32 vectors, in registers. The kernel keeps a tile of kT token
// rows x kR weight rows of accumulators in registers while it streams the kR
// weight rows: weights come from memory once per call, and each further tile
// of kMaxTokens token rows re-reads the row block from L1.
//
// A format's decoder (see matmul_f16.cc for the smallest one):
//   struct Format {
//     // f32 scratch per row that the decoder may keep for the row block's life.
//     static int64_t ScratchFloats(const WeightRef& w);
//     struct Row {
//       Row();                                         // trivial
//       Row(const WeightRef& w, int64_t r, float* scratch);
//       // Columns [c, c + 2N): c is a multiple of 2N, c + 2N <= cols.
//       void Chunk(DF df, int64_t c, VF& w0, VF& w1) const;
//       // Columns [c, cols), 0 < cols - c < 2N: lanes at or past cols are 0.
//       void Tail(DF df, int64_t c, VF& w0, VF& w1) const;
//       // Optional, default false: w0 holds the chunk's even columns and w1
//       // its odd ones (c + 2j, c + 2j + 1 in lane j) instead of [c, c + N)
//       // and [c + N, c + 2N); the kernel deinterleaves x to match.
//       static constexpr bool kEvenOddColumns;
//       // Optional, default false: at one token row, decode 4 rows at a
//       // time (RowsPerTile) to overlap their FMA chains.
//       static constexpr bool kInterleaveRows;
//       // Optional, default false: cols is always a multiple of 2N (the
//       // block formats: 2N divides every block), and the Row has no Tail.
//       static constexpr bool kWholeChunks;
//       // Optional, default 1: S > 1 chunks decoded at once by
//       // Step(df, c, w) into w[2S] (chunk s's pair is w[2s], w[2s + 1], in
//       // Chunk's lane order), for c a multiple of 2NS with c + 2NS <= cols:
//       // a decoder that shares loads, shifts and scales between chunks.
//       // Chunk and Tail still serve the columns past the last whole step.
//       static constexpr size_t kStepChunks;
//       void Step(DF df, int64_t c, VF* w) const;
//       // Optional, default kMaxTokens: Step serves tiles of at most this
//       // many token rows (the w[2S] registers must fit beside the tile's
//       // accumulators); larger tiles decode chunk by chunk.
//       static constexpr size_t kStepTokens;
//     };
//   };
//
// Determinism: accumulator (r, t) gets, for c = 0, 2N, 4N, ..., the fused
// multiply-add of its first vector pair (lane j: column c + j, or c + 2j for
// an even/odd format), then of its second (c + N + j, or c + 2j + 1); the
// tail chunk is the zero-padded chunk. Lanes are reduced by SumOfLanes. Nothing in this depends
// on kR, kT, the row range or the thread: out(i, r) has the same bits
// whatever it is computed with.

#if defined(PAGED_CPU_EXEC_MATMUL_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef PAGED_CPU_EXEC_MATMUL_INL_H_
#undef PAGED_CPU_EXEC_MATMUL_INL_H_
#else
#define PAGED_CPU_EXEC_MATMUL_INL_H_
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "common/quant.h"
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/kernels.h"

// Loops over tile dimensions must be unrolled for the accumulators to live
// in registers.
#define PAGED_UNROLL _Pragma("GCC unroll 16")

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Upper bound of Lanes(DF()) on this target, for stack buffers.
inline constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// Token rows of one tile. 4 with 4 weight rows (16 accumulators) beats 8
// with 2: per chunk, each x vector feeds 4 rows and each decoded weight
// vector 4 tokens (measured on Zen 4: n = 8 as 2 x 4 runs 1.5x faster than
// as 1 x 8). Larger batches re-read the row block from L1 per tile of 4.
inline constexpr size_t kMaxTokens = 4;

// Vector registers of the target.
#if HWY_ARCH_X86 && HWY_TARGET != HWY_AVX3 && HWY_TARGET != HWY_AVX3_DL
inline constexpr size_t kVectorRegs = 16;
#else
inline constexpr size_t kVectorRegs = 32;
#endif

template <class Row>
constexpr bool InterleaveRows() {
  if constexpr (requires { Row::kInterleaveRows; }) {
    return Row::kInterleaveRows;
  } else {
    return false;
  }
}

// Weight rows of a tile of kT token rows: the most of 4, 2, 1 whose
// registers fit: 2 per decoded row, one accumulator per (row, token), 2 for
// the token row's vectors.
// (One token row, a decode, goes to DecodeRows instead.)
template <class Row>
constexpr size_t RowsPerTile(size_t kT) {
  for (size_t r : {4, 2}) {
    if (2 * r + r * kT + 2 <= kVectorRegs) return r;
  }
  return 1;
}
static_assert(kRowBlock % 4 == 0);

// Columns [c, c + count) of a row, count < 2N, copied to a zeroed buffer of
// one chunk.
template <typename T>
HWY_INLINE void CopyTail(const T* HWY_RESTRICT src, int64_t count, T* HWY_RESTRICT buf) {
  memcpy(buf, src, size_t(count) * sizeof(T));
}

// Zeroes the lanes of (w0, w1) at or past `count` columns.
HWY_INLINE void MaskTail(DF df, int64_t count, VF& w0, VF& w1) {
  const int64_t n = int64_t(hn::Lanes(df));
  w0 = hn::IfThenElseZero(hn::FirstN(df, size_t(std::min(count, n))), w0);
  w1 = hn::IfThenElseZero(hn::FirstN(df, size_t(std::max<int64_t>(count - n, 0))), w1);
}

// f16 bits [count] -> f32 [count].
HWY_INLINE void HalvesToFloats(const uint16_t* HWY_RESTRICT h, int64_t count,
                               float* HWY_RESTRICT out) {
  const DF df;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const int64_t n = int64_t(hn::Lanes(df));
  const hwy::float16_t* src = reinterpret_cast<const hwy::float16_t*>(h);
  int64_t i = 0;
  for (; i + n <= count; i += n) hn::StoreU(hn::PromoteTo(df, hn::LoadU(dh, src + i)), df, out + i);
  if (i < count) {
    HWY_ALIGN uint16_t buf[kMaxLanes] = {};
    HWY_ALIGN float tmp[kMaxLanes];
    memcpy(buf, h + i, size_t(count - i) * sizeof(uint16_t));
    hn::Store(hn::PromoteTo(df, hn::Load(dh, reinterpret_cast<const hwy::float16_t*>(buf))), df,
              tmp);
    memcpy(out + i, tmp, size_t(count - i) * sizeof(float));
  }
}

// Whether every vector of N columns lies in one group (group % N == 0): then
// a vector's scale is one broadcast.
HWY_INLINE bool UniformGroups(int group) { return group % int(hn::Lanes(DF())) == 0; }

// For group % N == 0: the group of each vector of N columns, [vectors + 1]
// (the extra entry for a tail's second vector), shared by every row of a
// matrix and kept per thread for the last (cols, group) asked for.
HWY_INLINE const int32_t* VectorGroups(int64_t cols, int group) {
  struct Cache {
    int64_t cols = -1;
    int group = 0;
    std::vector<int32_t> idx;
  };
  thread_local Cache cache;
  if (cache.cols != cols || cache.group != group) {
    const int64_t n = int64_t(hn::Lanes(DF()));
    const int64_t vectors = (cols + n - 1) / n, groups = GroupsPerRow(cols, group);
    cache.idx.resize(size_t(vectors + 1));
    for (int64_t v = 0; v <= vectors; ++v) {
      cache.idx[size_t(v)] = int32_t(std::min(v * n / group, groups - 1));
    }
    cache.cols = cols;
    cache.group = group;
  }
  return cache.idx.data();
}

// The f32 scales of one row of a group-quantized matrix (f16
// [rows][GroupsPerRow] in the store), converted once per row block into the
// decoder's scratch. kUniform (UniformGroups): a vector's scale is one
// broadcast, found through VectorGroups; else gathered per lane.
template <bool kUniform>
class GroupScales {
 public:
  static int64_t ScratchFloats(const WeightRef& w) { return GroupsPerRow(w.cols, w.group); }

  GroupScales() = default;
  GroupScales(const WeightRef& w, int64_t r, float* scratch) : sf_(scratch), group_(w.group) {
    const int64_t groups = GroupsPerRow(w.cols, w.group);
    HalvesToFloats(static_cast<const uint16_t*>(w.scales) + r * groups, groups, scratch);
    last_ = int32_t(groups - 1);
    if constexpr (kUniform) vector_groups_ = VectorGroups(w.cols, w.group);
  }

  // Scales of the N columns [c, c + N) (c a multiple of N, c <= cols).
  // Columns past the row's end get the last group's scale (their weights are
  // masked to 0).
  HWY_INLINE VF At(DF df, int64_t c) const {
    if constexpr (kUniform) {
      return hn::Set(df, sf_[vector_groups_[size_t(c) / hn::Lanes(df)]]);
    } else {
      // Group of each lane: (c + j) / group, exact in f32 below 2^24 columns
      // (matmul.cc checks), truncated by the conversion.
      const hn::RebindToSigned<DF> di;
      const VF col = hn::ConvertTo(df, hn::Iota(di, int32_t(c)));
      const auto g = hn::ConvertTo(di, hn::Div(col, hn::Set(df, float(group_))));
      return hn::GatherIndex(df, sf_, hn::Min(g, hn::Set(di, last_)));
    }
  }

 private:
  const float* sf_ = nullptr;               // [groups]
  const int32_t* vector_groups_ = nullptr;  // kUniform: VectorGroups
  int group_ = 1;
  int32_t last_ = 0;
};

template <class Row>
constexpr bool EvenOddColumns() {
  if constexpr (requires { Row::kEvenOddColumns; }) {
    return Row::kEvenOddColumns;
  } else {
    return false;
  }
}

template <class Row>
constexpr size_t StepChunks(size_t kT) {
  size_t tokens = kMaxTokens;
  if constexpr (requires { Row::kStepTokens; }) tokens = Row::kStepTokens;
  if constexpr (requires { Row::kStepChunks; }) {
    return kT <= tokens ? Row::kStepChunks : 1;
  } else {
    return 1;
  }
}

template <class Row>
constexpr bool WholeChunks() {
  if constexpr (requires { Row::kWholeChunks; }) {
    return Row::kWholeChunks;
  } else {
    return false;
  }
}

// x[c, c + 2N) in the lane order of the Row's decoder.
template <class Row>
HWY_INLINE void LoadX(DF df, const float* HWY_RESTRICT p, VF& x0, VF& x1) {
  const VF a = hn::LoadU(df, p);
  const VF b = hn::LoadU(df, p + hn::Lanes(df));
#if HWY_TARGET == HWY_SCALAR
  static_assert(!EvenOddColumns<Row>(), "no even/odd lanes in one lane");
  x0 = a;
  x1 = b;
#else
  if constexpr (EvenOddColumns<Row>()) {
    x0 = hn::ConcatEven(df, b, a);
    x1 = hn::ConcatOdd(df, b, a);
  } else {
    x0 = a;
    x1 = b;
  }
#endif
}

// x[c, c + 2N) of a whole chunk: from x in the Row's lane order (LoadX), or
// (kLaneX) from xl, a copy of x already in that order (LaneOrderX).
template <class Row, bool kLaneX>
HWY_INLINE void LoadChunkX(DF df, const float* HWY_RESTRICT x, const float* HWY_RESTRICT xl,
                           int64_t at, VF& x0, VF& x1) {
  if constexpr (kLaneX) {
    x0 = hn::LoadU(df, xl + at);
    x1 = hn::LoadU(df, xl + at + hn::Lanes(df));
  } else {
    LoadX<Row>(df, x + at, x0, x1);
  }
}

// One tile: kR weight rows x kT token rows, over all columns.
//   rows: [kR] decoders; x: [kT, cols]; bias: [kR * rs] or null; out: [kT, ldo]
// Row k's bias and output column are bias[k * rs] and out[t * ldo + k * rs]
// (rs: how far apart the tile's rows are in the matrix, DecodeRows).
// kLaneX: xl [kT, cols] holds the whole chunks of x in the Row's lane order.
template <size_t kR, size_t kT, bool kLaneX = false, class Row>
HWY_NOINLINE void Tile(const Row* HWY_RESTRICT rows, const float* HWY_RESTRICT x, int64_t cols,
                       const float* HWY_RESTRICT bias, float* HWY_RESTRICT out, int64_t ldo,
                       int64_t rs = 1, const float* HWY_RESTRICT xl = nullptr) {
  const DF df;
  const int64_t n = int64_t(hn::Lanes(df));
  VF acc[kR][kT];
  PAGED_UNROLL
  for (size_t r = 0; r < kR; ++r) {
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) acc[r][t] = hn::Zero(df);
  }

  int64_t c = 0;
  // Steps of kS chunks (StepChunks): a row's kS chunks decoded at once, then
  // multiplied chunk by chunk, in the order of the loop below.
  constexpr size_t kS = StepChunks<Row>(kT);
  if constexpr (kS > 1) {
    const int64_t step = int64_t(2 * kS) * n;
    for (; c + step <= cols; c += step) {
      if constexpr (kT == 1) {
        VF x0[kS], x1[kS];
        PAGED_UNROLL
        for (size_t s = 0; s < kS; ++s) {
          LoadChunkX<Row, kLaneX>(df, x, xl, c + 2 * n * int64_t(s), x0[s], x1[s]);
        }
        PAGED_UNROLL
        for (size_t r = 0; r < kR; ++r) {
          VF w[2 * kS];
          rows[r].Step(df, c, w);
          PAGED_UNROLL
          for (size_t s = 0; s < kS; ++s) {
            acc[r][0] = hn::MulAdd(x0[s], w[2 * s], acc[r][0]);
            acc[r][0] = hn::MulAdd(x1[s], w[2 * s + 1], acc[r][0]);
          }
        }
      } else {
        PAGED_UNROLL
        for (size_t r = 0; r < kR; ++r) {
          VF w[2 * kS];
          rows[r].Step(df, c, w);
          PAGED_UNROLL
          for (size_t t = 0; t < kT; ++t) {
            PAGED_UNROLL
            for (size_t s = 0; s < kS; ++s) {
              VF x0, x1;
              LoadChunkX<Row, kLaneX>(df, x, xl, int64_t(t) * cols + c + 2 * n * int64_t(s), x0,
                                      x1);
              acc[r][t] = hn::MulAdd(x0, w[2 * s], acc[r][t]);
              acc[r][t] = hn::MulAdd(x1, w[2 * s + 1], acc[r][t]);
            }
          }
        }
      }
    }
  }
  // Each chunk: the kR rows decoded once, then each token row's two vectors
  // loaded once and used by every row.
  for (; c + 2 * n <= cols; c += 2 * n) {
    VF w0[kR], w1[kR];
    PAGED_UNROLL
    for (size_t r = 0; r < kR; ++r) rows[r].Chunk(df, c, w0[r], w1[r]);
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) {
      VF x0, x1;
      LoadChunkX<Row, kLaneX>(df, x, xl, int64_t(t) * cols + c, x0, x1);
      PAGED_UNROLL
      for (size_t r = 0; r < kR; ++r) {
        acc[r][t] = hn::MulAdd(x0, w0[r], acc[r][t]);
        acc[r][t] = hn::MulAdd(x1, w1[r], acc[r][t]);
      }
    }
  }
  if constexpr (!WholeChunks<Row>()) {
    if (c < cols) {
      VF w0[kR], w1[kR];
      PAGED_UNROLL
      for (size_t r = 0; r < kR; ++r) rows[r].Tail(df, c, w0[r], w1[r]);
      PAGED_UNROLL
      for (size_t t = 0; t < kT; ++t) {
        HWY_ALIGN float xb[2 * kMaxLanes] = {};
        CopyTail(x + int64_t(t) * cols + c, cols - c, xb);
        VF x0, x1;
        LoadX<Row>(df, xb, x0, x1);
        PAGED_UNROLL
        for (size_t r = 0; r < kR; ++r) {
          acc[r][t] = hn::MulAdd(x0, w0[r], acc[r][t]);
          acc[r][t] = hn::MulAdd(x1, w1[r], acc[r][t]);
        }
      }
    }
  }

  PAGED_UNROLL
  for (size_t r = 0; r < kR; ++r) {
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) {
      const float s = hn::GetLane(hn::SumOfLanes(df, acc[r][t]));
      out[int64_t(t) * ldo + int64_t(r) * rs] = bias ? s + bias[int64_t(r) * rs] : s;
    }
  }
}

// nr (<= kRowBlock) weight rows x kT token rows, in tiles of RowsPerTile(kT).
template <size_t kT, class Row>
HWY_INLINE void RowTiles(const Row* rows, size_t nr, const float* x, int64_t cols,
                         const float* bias, float* out, int64_t ldo) {
  constexpr size_t kR = RowsPerTile<Row>(kT);
  size_t r = 0;
  for (; r + kR <= nr; r += kR) {
    Tile<kR, kT>(rows + r, x, cols, bias ? bias + r : nullptr, out + r, ldo);
  }
  for (; r < nr; ++r) Tile<1, kT>(rows + r, x, cols, bias ? bias + r : nullptr, out + r, ldo);
}

template <class Row>
HWY_INLINE void TokenTile(size_t nt, const Row* rows, size_t nr, const float* x, int64_t cols,
                          const float* bias, float* out, int64_t ldo) {
  switch (nt) {
    case 1:
      return RowTiles<1>(rows, nr, x, cols, bias, out, ldo);
    case 2:
      return RowTiles<2>(rows, nr, x, cols, bias, out, ldo);
    case 3:
      return RowTiles<3>(rows, nr, x, cols, bias, out, ldo);
    default:
      return RowTiles<4>(rows, nr, x, cols, bias, out, ldo);
  }
}
static_assert(kMaxTokens == 4, "TokenTile's cases");

// fn(i0, nt) for tiles [i0, i0 + nt) of n token rows, at most kMaxTokens
// each, of balanced sizes (9 = 3 + 3 + 3, not 4 + 4 + 1).
template <class Fn>
HWY_INLINE void ForTokenTiles(int n, const Fn& fn) {
  const int tiles = (n + int(kMaxTokens) - 1) / int(kMaxTokens);
  for (int k = 0, i0 = 0; k < tiles; ++k) {
    const int nt = (n - i0) / (tiles - k);
    fn(i0, nt);
    i0 += nt;
  }
}

// kD weight rows r, r + stride, ..., r + (kD - 1) * stride against the one
// token row of a decode.
template <size_t kD, bool kLaneX, class Format>
HWY_INLINE void DecodeTile(const RowsArgs& a, int64_t r, int64_t stride, float* scratch,
                           int64_t per_row, const float* xl) {
  using Row = typename Format::Row;
  Row rows[kD];
  PAGED_UNROLL
  for (size_t k = 0; k < kD; ++k) {
    rows[k] = Row(*a.w, r + int64_t(k) * stride, scratch + int64_t(k) * per_row);
  }
  Tile<kD, 1, kLaneX>(rows, a.x, a.w->cols, a.bias ? a.bias + r : nullptr, a.out + (r - a.r0),
                      a.ldo, stride, xl);
}

// Rows [ra, rb) at one token row (decode), memory-bound: a tile reads d
// weight rows at once (DecodeRowsPerTile(), 4 by default: 4 streams per
// thread reached 86-89% of the Xeon's read bandwidth where one reached
// 56-62%; always 4 when the decoder's work per chunk is long,
// kInterleaveRows: one row's accumulator is one chain of 2 FMAs per chunk, 4
// rows make 4). The d rows are far apart: tile i takes row i of each of the
// range's d equal parts (then the few rows left go one at a time); adjacent
// rows (streams one row apart) read 10-15% slower on the Zen 4 build
// machine (docs/BENCHMARKS.md). The bits are the same either way.
template <class Format>
void DecodeRows(const RowsArgs& a, int64_t ra, int64_t rb, float* scratch, int64_t per_row) {
  using Row = typename Format::Row;
  // A decoder with even/odd lanes gets x's whole chunks reordered once per
  // call (LoadX's two shuffles per chunk, once instead of once per tile).
  constexpr bool kLaneX = EvenOddColumns<Row>();
  const float* xl = nullptr;
  if constexpr (kLaneX) {
    const DF df;
    const int64_t n = int64_t(hn::Lanes(df)), cols = a.w->cols;
    thread_local std::vector<float> lane_x;
    if (lane_x.size() < size_t(cols)) lane_x.resize(size_t(cols));
    for (int64_t c = 0; c + 2 * n <= cols; c += 2 * n) {
      VF x0, x1;
      LoadX<Row>(df, a.x + c, x0, x1);
      hn::StoreU(x0, df, lane_x.data() + c);
      hn::StoreU(x1, df, lane_x.data() + c + n);
    }
    xl = lane_x.data();
  }
  constexpr size_t kInterleaved = RowsPerTile<Row>(1);
  const int d = InterleaveRows<Row>() ? int(kInterleaved) : DecodeRowsPerTile();
  const int64_t part = (rb - ra) / d;
  int64_t r = ra;
  if (d >= 4) {
    for (; r < ra + part; ++r) DecodeTile<4, kLaneX, Format>(a, r, part, scratch, per_row, xl);
    r = ra + 4 * part;
  } else if (d == 2) {
    for (; r < ra + part; ++r) DecodeTile<2, kLaneX, Format>(a, r, part, scratch, per_row, xl);
    r = ra + 2 * part;
  }
  for (; r < rb; ++r) DecodeTile<1, kLaneX, Format>(a, r, 1, scratch, per_row, xl);
}

// Rows [ra, rb) of the product for all token rows: blocks of kRowBlock weight
// rows, each streamed once per tile of kMaxTokens token rows (from cache
// after the first). One token row: DecodeRows.
template <class Format>
void RunRows(const RowsArgs& a, int64_t ra, int64_t rb) {
  using Row = typename Format::Row;
  const WeightRef& w = *a.w;
  const int64_t cols = w.cols;
  const int64_t per_row = Format::ScratchFloats(w);
  thread_local std::vector<float> scratch;
  if (scratch.size() < size_t(kRowBlock * per_row)) scratch.resize(size_t(kRowBlock * per_row));
  if (a.n == 1) return DecodeRows<Format>(a, ra, rb, scratch.data(), per_row);
  for (int64_t r = ra; r < rb; r += kRowBlock) {
    const size_t nr = size_t(std::min<int64_t>(kRowBlock, rb - r));
    Row rows[kRowBlock];
    for (size_t k = 0; k < nr; ++k) {
      rows[k] = Row(w, r + int64_t(k), scratch.data() + int64_t(k) * per_row);
    }
    const float* bias = a.bias ? a.bias + r : nullptr;
    float* out = a.out + (r - a.r0);
    ForTokenTiles(a.n, [&](int i0, int nt) {
      TokenTile(size_t(nt), rows, nr, a.x + int64_t(i0) * cols, cols, bias,
                out + int64_t(i0) * a.ldo, a.ldo);
    });
  }
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
