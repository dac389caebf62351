// Products with 8-bit activations (q8 mode, matmul.h's Activations::kQ8):
// the token rows of x are quantized to int8 in blocks of 256 (QuantizeQ8),
// and the K-format weights (q4_k, q5_k, q6_k) are multiplied with them in integer
// arithmetic, as llama.cpp's CPU kernels do (its q8_K):
//   x_c ~ d_b * q_c,  d_b = max |x| over block b / 127,  q_c = round(x_c / d_b)
// A super-block's dot is then sum_j scale_j * (sum_c code_c * q_c) exactly in
// int32 (u8 codes times s8 activations, vpmaddubsw; times the 6- or 8-bit
// sub-block scales, vpmaddwd), and one f32 multiply-add by d * d_b per
// super-block, 16 lanes wide; q4_k's mins come in through the block sums of
// q (m_j * sum q over sub-block j), q6_k's offset 32 likewise.
//
// Numerics: the result is the product of W with x' = d_b * q (x rounded to
// 8 bits), up to f32 rounding of the few per-super-block terms: the tests
// check it against the scalar reference on x' at 1e-5 of sum |x' w|. Its bits
// do not depend on the row range, the thread count or the other token rows
// (each out(i, r) is one fixed sequence of operations).
//
// On AVX-512 (the AVX3 targets) only: elsewhere the front (matmul.cc) gives
// the f32 kernels x' instead (HasQ8Kernels() false), which is the same
// product up to f32 summation order.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q8.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

// One token row of x: q [cols], d [cols / 256], s16 [cols / 16], s32 [cols / 32] (Q8Rows).
HWY_INLINE void QuantizeRow(const float* HWY_RESTRICT x, int64_t cols, int8_t* HWY_RESTRICT q,
                            float* HWY_RESTRICT d, int16_t* HWY_RESTRICT s16,
                            int16_t* HWY_RESTRICT s32) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const int64_t n = int64_t(hn::Lanes(df));
  for (int64_t b = 0; b < cols / kQ8Block; ++b) {
    const float* xb = x + b * kQ8Block;
    VF amax = hn::Zero(df);
    for (int64_t c = 0; c < kQ8Block; c += n) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + c)));
    const float m = hn::GetLane(hn::MaxOfLanes(df, amax));
    const float scale = m / 127.f;
    const VF inv = hn::Set(df, scale > 0.f ? 1.f / scale : 0.f);
    d[b] = scale;
    int8_t* qb = q + b * kQ8Block;
    for (int64_t c = 0; c < kQ8Block; c += n) {
      const auto v = hn::NearestInt(hn::Mul(hn::LoadU(df, xb + c), inv));
      hn::StoreU(hn::DemoteTo(d8, v), d8, qb + c);
    }
    for (int64_t g = 0; g < kQ8Block / 16; ++g) {
      int32_t s = 0;
      for (int64_t c = 0; c < 16; c += n) {
        s += hn::GetLane(hn::SumOfLanes(di, hn::PromoteTo(di, hn::LoadU(d8, qb + 16 * g + c))));
      }
      s16[b * (kQ8Block / 16) + g] = int16_t(s);
    }
    for (int64_t g = 0; g < kQ8Block / 32; ++g) {
      const int64_t k = b * (kQ8Block / 16) + 2 * g;
      s32[b * (kQ8Block / 32) + g] = int16_t(s16[k] + s16[k + 1]);
    }
  }
}

#undef PAGED_Q8_KERNELS
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
#define PAGED_Q8_KERNELS 1

// 16-bit lane i of register k (columns 64k + 2i and + 1 of a super-block)
// multiplies by the scale of its sub-block of `width` columns, as an index
// into the block's scales (vpermw): q4_k's sub-blocks are 32 wide (register
// k: 2k, 2k + 1), q6_k's 16 (4k .. 4k + 3).
struct alignas(64) ScaleIndex {
  int16_t lane[4][32];
  explicit constexpr ScaleIndex(int width) : lane() {
    for (int k = 0; k < 4; ++k) {
      for (int i = 0; i < 32; ++i) lane[k][i] = int16_t((64 * k + 2 * i) / width);
    }
  }
};
constexpr ScaleIndex kQ4KScaleIdx(32), kQ6KScaleIdx(16);

// A super-block of one weight row, decoded for integer products: 4
// registers of 64 u8 codes in column order (register k: columns [64k,
// 64k + 64)), the i16 scale of each code pair's sub-block, the f32 d and
// the correction the codes' offset needs: q4_k's mins (dmin and the 8 m_j
// as i16), q6_k's 32 (its 16 scales as i16).
struct SuperBlock {
  __m512i code[4];
  __m512i scale[4];
  __m128i m8;    // q4_k: m_0..7
  __m256i sc16;  // q6_k: the 16 scales
  float d;
  float dmin;  // q4_k
};

// q4_k (kQ5 false) and q5_k (true: a fifth bit per code from qh, bit j of
// qh[l] for column 32 j + l): the same scales, mins and products.
template <bool kQ5>
struct K4 {
  static constexpr int64_t kBytes = kQ5 ? 176 : 144;
  static constexpr int64_t kQs = kQ5 ? 48 : 16;  // the nibbles' offset

  static HWY_INLINE void Decode(const uint8_t* blk, SuperBlock& s) {
    // The 8 scales (i16 lanes 0-7) and 8 mins (8-15).
    const __m256i sm = _mm512_cvtepi32_epi16(ScaleMinCodesK4(blk));
    const __m512i sm512 = _mm512_castsi256_si512(sm);
    s.m8 = _mm256_extracti128_si256(sm, 1);
    s.d = Half(blk);
    s.dmin = Half(blk + 2);
    // Bytes [32k, 32k + 32) hold sub-blocks 2k (low nibbles) and 2k + 1
    // (high): both halves of a register get the 32 bytes, the upper half
    // shifted by 4, so the register's 64 codes are columns 64k .. 64k + 63.
    const __m512i low4 = _mm512_set1_epi8(15);
    for (int k = 0; k < 4; ++k) {
      const __m512i b = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs + 32 * k)));
      s.code[k] = _mm512_and_si512(_mm512_mask_srli_epi16(b, 0xFFFF0000u, b, 4), low4);
      s.scale[k] = _mm512_permutexvar_epi16(_mm512_load_si512(kQ4KScaleIdx.lane[k]), sm512);
    }
    if constexpr (kQ5) {
      // Register k's sub-blocks 2k (low half) and 2k + 1 (high half) take
      // bits 2k and 2k + 1 of qh: shifted to bit 4 (16-bit shifts; other
      // bytes' bits that cross in are masked off), or'ed into the codes.
      const __m512i qh =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16)));
      const __m512i bit4 = _mm512_set1_epi8(0x10);
      const __m512i h[4] = {_mm512_slli_epi16(qh, 4), _mm512_slli_epi16(qh, 2), qh,
                            _mm512_srli_epi16(qh, 2)};
      for (int k = 0; k < 4; ++k) {
        const __m512i t = _mm512_mask_srli_epi16(h[k], 0xFFFF0000u, h[k], 1);
        s.code[k] = _mm512_ternarylogic_epi32(t, bit4, s.code[k], 0xEA);  // t & bit4 | code
      }
    }
  }

  // sum_j scale_j * sum(code * q) - ...: the i32 lanes before d, and the
  // f32 term the mins subtract (dmin * d_x * sum_j m_j * sum q over j).
  static HWY_INLINE __m512 Dot(const SuperBlock& s, const int8_t* q, const int16_t*,
                               const int16_t* s32, float dx, __m512 acc) {
    __m512i sum = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      const __m512i p = _mm512_maddubs_epi16(s.code[k], _mm512_loadu_si512(q + 64 * k));
      sum = _mm512_add_epi32(sum, _mm512_madd_epi16(p, s.scale[k]));
    }
    const __m128i mins =
        _mm_madd_epi16(s.m8, _mm_loadu_si128(reinterpret_cast<const __m128i*>(s32)));  // 4 i32
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(s.d * dx), acc);
    return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi128_si512(mins)),
                            _mm512_set1_ps(s.dmin * dx), acc);
  }
};

struct Q6K {
  static constexpr int64_t kBytes = 210;

  static HWY_INLINE void Decode(const uint8_t* blk, SuperBlock& s) {
    s.d = Half(blk + 208);
    s.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192)));
    const __m512i sc512 = _mm512_castsi256_si512(s.sc16);
    const __m512i low4 = _mm512_set1_epi8(15), top2 = _mm512_set1_epi8(0x30);
    for (int h = 0; h < 2; ++h) {
      // ql [64h, + 64): columns 128h + [0, 64) (low nibbles), + [64, 128)
      // (high); qh [32h, + 32) in both halves, shifted by 0 / 2 (low half)
      // and 4 / 6 (high half) for the two registers.
      const __m512i ql = _mm512_loadu_si512(blk + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h)));
      const __m512i hs = _mm512_mask_srli_epi16(qh, 0xFFFF0000u, qh, 2);
      const __m512i top_lo = _mm512_and_si512(_mm512_slli_epi16(hs, 4), top2);  // (hs & 3) << 4
      const __m512i top_hi = _mm512_and_si512(hs, top2);  // (hs >> 4 & 3) << 4
      // (a & 15) | top: ternary logic A & B | C.
      s.code[2 * h] = _mm512_ternarylogic_epi32(ql, low4, top_lo, 0xEA);
      s.code[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), low4, top_hi, 0xEA);
    }
    for (int k = 0; k < 4; ++k) {
      s.scale[k] = _mm512_permutexvar_epi16(_mm512_load_si512(kQ6KScaleIdx.lane[k]), sc512);
    }
  }

  // Codes are q + 32: sum_i scale_i * (sum code * q - 32 sum q) over the
  // sub-blocks of 16, in int32.
  static HWY_INLINE __m512 Dot(const SuperBlock& s, const int8_t* q, const int16_t* s16,
                               const int16_t*, float dx, __m512 acc) {
    __m512i sum = _mm512_setzero_si512();
    for (int k = 0; k < 4; ++k) {
      const __m512i p = _mm512_maddubs_epi16(s.code[k], _mm512_loadu_si512(q + 64 * k));
      sum = _mm512_add_epi32(sum, _mm512_madd_epi16(p, s.scale[k]));
    }
    const __m256i off = _mm256_slli_epi32(
        _mm256_madd_epi16(s.sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16))), 5);
    sum = _mm512_sub_epi32(sum, _mm512_zextsi256_si512(off));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_set1_ps(s.d * dx), acc);
  }
};

// kR weight rows (r, r + stride, ...) x kT token rows (t0 ..): every
// super-block decoded once per tile, then multiplied with each token row.
template <class F, size_t kR, size_t kT>
HWY_NOINLINE void Q8Tile(const RowsArgs& a, int64_t r, int64_t stride, int t0) {
  const WeightRef& w = *a.w;
  const Q8Rows& x = *a.q8;
  const int64_t supers = w.cols / kQ8Block;
  const uint8_t* rows[kR];
  for (size_t k = 0; k < kR; ++k) rows[k] = BlockRow(w, r + int64_t(k) * stride);
  __m512 acc[kR][kT];
  PAGED_UNROLL
  for (size_t k = 0; k < kR; ++k) {
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) acc[k][t] = _mm512_setzero_ps();
  }
  for (int64_t b = 0; b < supers; ++b) {
    PAGED_UNROLL
    for (size_t k = 0; k < kR; ++k) {
      SuperBlock s;
      F::Decode(rows[k] + b * F::kBytes, s);
      PAGED_UNROLL
      for (size_t t = 0; t < kT; ++t) {
        const int64_t i = t0 + int64_t(t);
        const int64_t c = i * w.cols + b * kQ8Block;
        acc[k][t] =
            F::Dot(s, x.q + c, x.s16 + c / 16, x.s32 + c / 32, x.d[i * supers + b], acc[k][t]);
      }
    }
  }
  PAGED_UNROLL
  for (size_t k = 0; k < kR; ++k) {
    const int64_t row = r + int64_t(k) * stride;
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) {
      const float v = _mm512_reduce_add_ps(acc[k][t]);
      a.out[(t0 + int64_t(t)) * a.ldo + (row - a.r0)] = a.bias ? v + a.bias[row] : v;
    }
  }
}

// kR weight rows r, r + stride, ... against every token row, in balanced
// tiles of at most 4 (the rows' blocks read again from L1 per tile).
template <class F, size_t kR>
HWY_INLINE void Q8TokenTiles(const RowsArgs& a, int64_t r, int64_t stride) {
  ForTokenTiles(a.n, [&](int i0, int nt) {
    switch (nt) {
      case 1:
        return Q8Tile<F, kR, 1>(a, r, stride, i0);
      case 2:
        return Q8Tile<F, kR, 2>(a, r, stride, i0);
      case 3:
        return Q8Tile<F, kR, 3>(a, r, stride, i0);
      default:
        return Q8Tile<F, kR, 4>(a, r, stride, i0);
    }
  });
}
static_assert(kMaxTokens == 4, "Q8TokenTiles' cases");

// Rows [ra, rb): at one token row 4 rows a quarter of the range apart at
// once (four streams, as DecodeRows), else 2 rows half the range apart;
// the rows left over one at a time.
template <class F>
void RunQ8Rows(const RowsArgs& a, int64_t ra, int64_t rb) {
  if (a.n == 1) {
    const int64_t part = (rb - ra) / 4;
    for (int64_t r = ra; r < ra + part; ++r) Q8Tile<F, 4, 1>(a, r, part, 0);
    for (int64_t r = ra + 4 * part; r < rb; ++r) Q8Tile<F, 1, 1>(a, r, 1, 0);
    return;
  }
  const int64_t part = (rb - ra) / 2;
  for (int64_t r = ra; r < ra + part; ++r) Q8TokenTiles<F, 2>(a, r, part);
  for (int64_t r = ra + 2 * part; r < rb; ++r) Q8TokenTiles<F, 1>(a, r, 1);
}

// The integer kernels by format (IsQ8Format).
void RunQ8(const RowsArgs& a, int64_t ra, int64_t rb) {
  switch (a.w->dtype) {
    case DType::kQ4_K:
      return RunQ8Rows<K4<false>>(a, ra, rb);
    case DType::kQ5_K:
      return RunQ8Rows<K4<true>>(a, ra, rb);
    case DType::kQ6_K:
      return RunQ8Rows<Q6K>(a, ra, rb);
    default:
      HWY_ASSERT(false);  // the front calls it for IsQ8Format only
  }
}

#else
#define PAGED_Q8_KERNELS 0
#endif

}  // namespace

void QuantizeQ8Rows(const float* x, int n, int64_t cols, int8_t* q, float* d, int16_t* s16,
                    int16_t* s32) {
  for (int i = 0; i < n; ++i) {
    QuantizeRow(x + i * cols, cols, q + i * cols, d + i * (cols / kQ8Block), s16 + i * (cols / 16),
                s32 + i * (cols / 32));
  }
}

bool Q8Kernels() { return PAGED_Q8_KERNELS; }

void RowsQ8(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_Q8_KERNELS
  RunQ8(a, ra, rb);
#else
  (void)a, (void)ra, (void)rb;
  HWY_ASSERT(false);  // the front does not call it (Q8Kernels() false)
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(QuantizeQ8Rows);
HWY_EXPORT(Q8Kernels);
HWY_EXPORT(RowsQ8);

void QuantizeQ8(const float* x, int n, int64_t cols, int8_t* q, float* d, int16_t* s16,
                int16_t* s32) {
  HWY_DYNAMIC_DISPATCH(QuantizeQ8Rows)(x, n, cols, q, d, s16, s32);
}

bool HasQ8Kernels() { return HWY_DYNAMIC_DISPATCH(Q8Kernels)(); }

void MatMulRowsQ8(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ8)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
