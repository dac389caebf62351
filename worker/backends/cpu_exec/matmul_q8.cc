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
// On AVX-512 (the AVX3 targets) a super-block is 4 registers of 64 codes;
// on AVX2 8 registers of 32 (one q4_k / q5_k sub-block each, two of q6_k's),
// each multiplied by its sub-block scales picked from one register by a
// byte shuffle, the same integer sums in 8 i32 lanes instead of 16. Elsewhere
// the front (matmul.cc) gives the f32 kernels x' instead (HasQ8Kernels()
// false), which is the same product up to f32 summation order.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q8.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

// One token row of x in blocks of `block` (256 or 32) columns: q [cols], d
// [cols / block], s16 [cols / 16], s32 [cols / 32] (Q8Rows). In blocks of 32
// d is rounded to f16 after q is computed, as llama.cpp's q8_0 block stores
// it (kernels.h).
HWY_INLINE void QuantizeRow(const float* HWY_RESTRICT x, int64_t cols, int64_t block,
                            int8_t* HWY_RESTRICT q, float* HWY_RESTRICT d,
                            int16_t* HWY_RESTRICT s16, int16_t* HWY_RESTRICT s32) {
  const DF df;
  const hn::RebindToSigned<DF> di;
  const hn::Rebind<int8_t, DF> d8;
  const int64_t n = int64_t(hn::Lanes(df));
  for (int64_t b = 0; b < cols / block; ++b) {
    const float* xb = x + b * block;
    VF amax = hn::Zero(df);
    for (int64_t c = 0; c < block; c += n) amax = hn::Max(amax, hn::Abs(hn::LoadU(df, xb + c)));
    const float m = hn::GetLane(hn::MaxOfLanes(df, amax));
    const float scale = m / 127.f;
    const VF inv = hn::Set(df, scale > 0.f ? 1.f / scale : 0.f);
    d[b] = block == kQ8ChunkBlock ? HalfToFloat(FloatToHalf(scale)) : scale;
    int8_t* qb = q + b * block;
    for (int64_t c = 0; c < block; c += n) {
      const auto v = hn::NearestInt(hn::Mul(hn::LoadU(df, xb + c), inv));
      hn::StoreU(hn::DemoteTo(d8, v), d8, qb + c);
    }
  }
  for (int64_t g = 0; g < cols / 16; ++g) {
    int32_t s = 0;
    for (int64_t c = 0; c < 16; c += n) {
      s += hn::GetLane(hn::SumOfLanes(di, hn::PromoteTo(di, hn::LoadU(d8, q + 16 * g + c))));
    }
    s16[g] = int16_t(s);
  }
  for (int64_t g = 0; g < cols / 32; ++g) s32[g] = int16_t(s16[2 * g] + s16[2 * g + 1]);
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

// The f32 accumulator of a (weight row, token row) pair, and its sum.
using AccV = __m512;
HWY_INLINE AccV AccZero() { return _mm512_setzero_ps(); }
HWY_INLINE float AccSum(AccV v) { return _mm512_reduce_add_ps(v); }

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
  static constexpr bool kSuperBlocks = true;
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
  static constexpr bool kSuperBlocks = true;
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

#elif HWY_TARGET == HWY_AVX2
#define PAGED_Q8_KERNELS 1

// Bytes {2j, 2j + 1} in every 16-bit lane: a byte shuffle of a register
// whose 128-bit halves hold 8 i16 values picks value j of each half into
// every lane of that half.
struct alignas(32) PickTable {
  int8_t lane[8][32];
  constexpr PickTable() : lane() {
    for (int j = 0; j < 8; ++j) {
      for (int i = 0; i < 32; ++i) lane[j][i] = int8_t(2 * j + i % 2);
    }
  }
};
constexpr PickTable kPick;

HWY_INLINE __m256i Pick(__m256i halves, int j) {
  return _mm256_shuffle_epi8(halves,
                             _mm256_load_si256(reinterpret_cast<const __m256i*>(kPick.lane[j])));
}

// A super-block of one weight row, decoded for integer products: 8
// registers of 32 u8 codes in column order (register j: columns [32j, 32j +
// 32)), the sub-block scales as i16 arranged for Pick (register j's lanes
// take value j of each half), the f32 d and the offset's correction as on
// AVX-512: q4_k's mins (dmin and the 8 m_j as i16), q6_k's 32 (its 16
// scales as i16).
struct SuperBlock {
  __m256i code[8];
  __m256i scales;
  __m128i m8;    // q4_k: m_0..7
  __m256i sc16;  // q6_k: the 16 scales
  float d;
  float dmin;  // q4_k
};

// sum_j of register j's maddubs (u8 codes x s8 q, pairs summed in i16:
// at most 2 * 63 * 127) times its scales (vpmaddwd), in 8 i32 lanes.
HWY_INLINE __m256i CodeDot(const SuperBlock& s, const int8_t* q) {
  __m256i sum = _mm256_setzero_si256();
  PAGED_UNROLL
  for (int j = 0; j < 8; ++j) {
    const __m256i p = _mm256_maddubs_epi16(
        s.code[j], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32 * j)));
    sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p, Pick(s.scales, j)));
  }
  return sum;
}

// q4_k (kQ5 false) and q5_k (true: bit j of qh[l] is the fifth bit of
// column 32 j + l).
template <bool kQ5>
struct K4 {
  static constexpr bool kSuperBlocks = true;
  static constexpr int64_t kBytes = kQ5 ? 176 : 144;
  static constexpr int64_t kQs = kQ5 ? 48 : 16;  // the nibbles' offset

  static HWY_INLINE void Decode(const uint8_t* blk, SuperBlock& s) {
    uint32_t u[4];  // bytes: scales 0-7, mins 8-15
    ScaleMinWordsK4(blk + 4, u);
    const __m128i sm = _mm_set_epi32(int(u[3]), int(u[2]), int(u[1]), int(u[0]));
    s.scales = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));  // sub-block j: scale j
    s.m8 = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    s.d = Half(blk);
    s.dmin = Half(blk + 2);
    // Bytes [32p, 32p + 32) hold sub-blocks 2p (low nibbles) and 2p + 1 (high).
    const __m256i low4 = _mm256_set1_epi8(15);
    PAGED_UNROLL
    for (int p = 0; p < 4; ++p) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQs + 32 * p));
      s.code[2 * p] = _mm256_and_si256(b, low4);
      s.code[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
    }
    if constexpr (kQ5) {
      // Bit j of each qh byte to bit 4 (16-bit shifts: the bits that cross
      // from the other byte of a lane land outside bit 4), or'ed in.
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
      const __m256i bit4 = _mm256_set1_epi8(0x10);
      const __m256i h[8] = {_mm256_slli_epi16(qh, 4),
                            _mm256_slli_epi16(qh, 3),
                            _mm256_slli_epi16(qh, 2),
                            _mm256_slli_epi16(qh, 1),
                            qh,
                            _mm256_srli_epi16(qh, 1),
                            _mm256_srli_epi16(qh, 2),
                            _mm256_srli_epi16(qh, 3)};
      PAGED_UNROLL
      for (int j = 0; j < 8; ++j)
        s.code[j] = _mm256_or_si256(s.code[j], _mm256_and_si256(h[j], bit4));
    }
  }

  static HWY_INLINE __m256 Dot(const SuperBlock& s, const int8_t* q, const int16_t*,
                               const int16_t* s32, float dx, __m256 acc) {
    const __m256i sum = CodeDot(s, q);
    const __m128i mins =
        _mm_madd_epi16(s.m8, _mm_loadu_si128(reinterpret_cast<const __m128i*>(s32)));  // 4 i32
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(s.d * dx), acc);
    return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(_mm_setzero_si128(), mins)),
                            _mm256_set1_ps(s.dmin * dx), acc);
  }
};

struct Q6K {
  static constexpr bool kSuperBlocks = true;
  static constexpr int64_t kBytes = 210;

  static HWY_INLINE void Decode(const uint8_t* blk, SuperBlock& s) {
    s.d = Half(blk + 208);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 192));
    s.sc16 = _mm256_cvtepi8_epi16(sc8);
    // Register j spans sub-blocks 2j (its low half) and 2j + 1 (high):
    // halves of even and odd scales.
    const __m128i even_odd =
        _mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
    s.scales = _mm256_cvtepi8_epi16(even_odd);
    // Half h (columns [128h, + 128)): ql [64h, + 32) low nibbles are
    // columns + [0, 32), ql [64h + 32, + 32) + [32, 64), their high
    // nibbles + [64, 96) and + [96, 128); the top two bits are bits 0-1,
    // 2-3, 4-5, 6-7 of qh [32h, + 32), moved to bits 4-5.
    const __m256i low4 = _mm256_set1_epi8(15), top2 = _mm256_set1_epi8(0x30);
    PAGED_UNROLL
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
      s.code[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, low4),
                                      _mm256_and_si256(_mm256_slli_epi16(qh, 4), top2));
      s.code[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4),
                                          _mm256_and_si256(_mm256_slli_epi16(qh, 2), top2));
      s.code[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4),
                                          _mm256_and_si256(qh, top2));
      s.code[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4),
                                          _mm256_and_si256(_mm256_srli_epi16(qh, 2), top2));
    }
  }

  // Codes are q + 32: sum_i scale_i * (sum code * q - 32 sum q).
  static HWY_INLINE __m256 Dot(const SuperBlock& s, const int8_t* q, const int16_t* s16,
                               const int16_t*, float dx, __m256 acc) {
    __m256i sum = CodeDot(s, q);
    const __m256i off = _mm256_slli_epi32(
        _mm256_madd_epi16(s.sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s16))), 5);
    sum = _mm256_sub_epi32(sum, off);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(s.d * dx), acc);
  }
};

// s8 weights times s8 activations, pairs summed into 8 i32 lanes: the
// weights' magnitudes as u8 against the activations carrying the weights'
// signs (vpsignb; a weight of 0 zeroes its activation), so that vpmaddubsw
// applies: |w| <= 128 and |q| <= 127, a pair at most 2 * 128 * 127.
HWY_INLINE __m256i DotS8(__m256i w, const int8_t* q) {
  const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(qv, w));
  return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

// Formats of 32-column chunks of s8 values (codes - 8 for the 4-bit ones),
// one weight scale per ChunksPerScale chunks (a q8_0 / q4_0 block; an int8 /
// int4 group, a multiple of 32), against activations in blocks of 32
// (Q8Rows::block) as llama.cpp's q8_0: Row(w, r): Codes(c), the chunk at
// column c; Scale(g), the weight scale of the g-th run of chunks.
struct Q8_0Chunks {
  static constexpr bool kSuperBlocks = false;
  static int64_t ChunksPerScale(const WeightRef&) { return 1; }
  struct Row {
    const uint8_t* p = nullptr;
    Row() = default;
    Row(const WeightRef& w, int64_t r) : p(BlockRow(w, r)) {}
    HWY_INLINE __m256i Codes(int64_t c) const {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c / 32 * 34 + 2));
    }
    HWY_INLINE float Scale(int64_t g) const { return Half(p + g * 34); }
  };
};

// 4-bit codes q in 0..15 as q - 8 from 16 bytes: the low nibbles, then the
// high ones (q4_0: columns 0-15, then 16-31; int4: columns 2j, then 2j + 1,
// against activations ordered likewise, kernels.h).
HWY_INLINE __m256i Nibbles(const uint8_t* p) {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i m = _mm_set1_epi8(15);
  const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

struct Q4_0Chunks {
  static constexpr bool kSuperBlocks = false;
  static int64_t ChunksPerScale(const WeightRef&) { return 1; }
  struct Row {
    const uint8_t* p = nullptr;
    Row() = default;
    Row(const WeightRef& w, int64_t r) : p(BlockRow(w, r)) {}
    HWY_INLINE __m256i Codes(int64_t c) const { return Nibbles(p + c / 32 * 18 + 2); }
    HWY_INLINE float Scale(int64_t g) const { return Half(p + g * 18); }
  };
};

// int8 (kFour false) and int4 (common/quant.h): a row's values, then its
// f16 group scales.
template <bool kFour>
struct GroupChunks {
  static constexpr bool kSuperBlocks = false;
  static int64_t ChunksPerScale(const WeightRef& w) { return w.group / 32; }
  struct Row {
    const uint8_t* p = nullptr;
    const uint16_t* scales = nullptr;
    Row() = default;
    Row(const WeightRef& w, int64_t r)
        : p(static_cast<const uint8_t*>(w.data) + r * (kFour ? w.cols / 2 : w.cols)),
          scales(static_cast<const uint16_t*>(w.scales) + r * GroupsPerRow(w.cols, w.group)) {}
    HWY_INLINE __m256i Codes(int64_t c) const {
      if constexpr (kFour) return Nibbles(p + c / 2);
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c));
    }
    HWY_INLINE float Scale(int64_t g) const { return _cvtsh_ss(scales[g]); }
  };
};

using AccV = __m256;
HWY_INLINE AccV AccZero() { return _mm256_setzero_ps(); }
// The 8 lanes summed in a fixed order (halves, then pairs, then the two).
HWY_INLINE float AccSum(AccV v) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  return _mm_cvtss_f32(h);
}

#else
#define PAGED_Q8_KERNELS 0
#endif

#if PAGED_Q8_KERNELS
// out of a tile's kR weight rows (r, r + stride, ...) and kT token rows (t0 ..).
template <size_t kR, size_t kT>
HWY_INLINE void StoreTile(const RowsArgs& a, int64_t r, int64_t stride, int t0,
                          const AccV (&acc)[kR][kT]) {
  PAGED_UNROLL
  for (size_t k = 0; k < kR; ++k) {
    const int64_t row = r + int64_t(k) * stride;
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) {
      const float v = AccSum(acc[k][t]);
      a.out[(t0 + int64_t(t)) * a.ldo + (row - a.r0)] = a.bias ? v + a.bias[row] : v;
    }
  }
}

// kR weight rows (r, r + stride, ...) x kT token rows (t0 ..): every
// super-block decoded once per tile, then multiplied with each token row.
template <class F, size_t kR, size_t kT>
HWY_NOINLINE void Q8Tile(const RowsArgs& a, int64_t r, int64_t stride, int t0) {
  const WeightRef& w = *a.w;
  const Q8Rows& x = *a.q8;
  const int64_t supers = w.cols / kQ8Block;
  const uint8_t* rows[kR];
  for (size_t k = 0; k < kR; ++k) rows[k] = BlockRow(w, r + int64_t(k) * stride);
  AccV acc[kR][kT];
  PAGED_UNROLL
  for (size_t k = 0; k < kR; ++k) {
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) acc[k][t] = AccZero();
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
  StoreTile<kR, kT>(a, r, stride, t0, acc);
}

#if HWY_TARGET == HWY_AVX2
// The same tile for a format of 32-column chunks: each chunk of each row
// multiplied with each token row in integers, then one f32 multiply-add by
// the weight scale times the activation block's d.
template <class F, size_t kR, size_t kT>
HWY_NOINLINE void ChunkTile(const RowsArgs& a, int64_t r, int64_t stride, int t0) {
  const WeightRef& w = *a.w;
  const Q8Rows& x = *a.q8;
  const int64_t chunks = w.cols / 32;
  typename F::Row rows[kR];
  for (size_t k = 0; k < kR; ++k) rows[k] = typename F::Row(w, r + int64_t(k) * stride);
  AccV acc[kR][kT];
  PAGED_UNROLL
  for (size_t k = 0; k < kR; ++k) {
    PAGED_UNROLL
    for (size_t t = 0; t < kT; ++t) acc[k][t] = AccZero();
  }
  // Chunk j's weight scale is run g's (the same for every row: counted, not
  // divided).
  const int64_t per_scale = F::ChunksPerScale(w);
  for (int64_t j = 0, g = 0, in_run = 0; j < chunks; ++j) {
    PAGED_UNROLL
    for (size_t k = 0; k < kR; ++k) {
      const __m256i codes = rows[k].Codes(32 * j);
      const float sw = rows[k].Scale(g);
      PAGED_UNROLL
      for (size_t t = 0; t < kT; ++t) {
        const int64_t i = t0 + int64_t(t);
        const __m256i sum = DotS8(codes, x.q + i * w.cols + 32 * j);
        acc[k][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum),
                                    _mm256_set1_ps(sw * x.d[i * chunks + j]), acc[k][t]);
      }
    }
    if (++in_run == per_scale) {
      in_run = 0;
      ++g;
    }
  }
  StoreTile<kR, kT>(a, r, stride, t0, acc);
}
#endif

template <class F, size_t kR, size_t kT>
HWY_INLINE void Tile(const RowsArgs& a, int64_t r, int64_t stride, int t0) {
  if constexpr (F::kSuperBlocks) {
    Q8Tile<F, kR, kT>(a, r, stride, t0);
  } else {
#if HWY_TARGET == HWY_AVX2
    ChunkTile<F, kR, kT>(a, r, stride, t0);
#endif
  }
}

// kR weight rows r, r + stride, ... against every token row, in balanced
// tiles of at most 4 (the rows' blocks read again from L1 per tile).
template <class F, size_t kR>
HWY_INLINE void Q8TokenTiles(const RowsArgs& a, int64_t r, int64_t stride) {
  ForTokenTiles(a.n, [&](int i0, int nt) {
    switch (nt) {
      case 1:
        return Tile<F, kR, 1>(a, r, stride, i0);
      case 2:
        return Tile<F, kR, 2>(a, r, stride, i0);
      case 3:
        return Tile<F, kR, 3>(a, r, stride, i0);
      default:
        return Tile<F, kR, 4>(a, r, stride, i0);
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
    for (int64_t r = ra; r < ra + part; ++r) Tile<F, 4, 1>(a, r, part, 0);
    for (int64_t r = ra + 4 * part; r < rb; ++r) Tile<F, 1, 1>(a, r, 1, 0);
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
#if HWY_TARGET == HWY_AVX2
    case DType::kQ8_0:
      return RunQ8Rows<Q8_0Chunks>(a, ra, rb);
    case DType::kQ4_0:
      return RunQ8Rows<Q4_0Chunks>(a, ra, rb);
    case DType::kI8:
      return RunQ8Rows<GroupChunks<false>>(a, ra, rb);
    case DType::kI4:
      return RunQ8Rows<GroupChunks<true>>(a, ra, rb);
#endif
    default:
      HWY_ASSERT(false);  // the front calls it where Q8Kernels says so only
  }
}

#endif  // PAGED_Q8_KERNELS

}  // namespace

void QuantizeQ8Rows(const float* x, int n, int64_t cols, int64_t block, int8_t* q, float* d,
                    int16_t* s16, int16_t* s32) {
  for (int i = 0; i < n; ++i) {
    QuantizeRow(x + i * cols, cols, block, q + i * cols, d + i * (cols / block),
                s16 + i * (cols / 16), s32 + i * (cols / 32));
  }
}

// Whether this target has integer kernels for w (IsQ8Format(w) holds).
bool Q8Kernels(const WeightRef& w) {
  if (!PAGED_Q8_KERNELS) return false;
  if (IsKFormat(w.dtype)) return true;
  return HWY_TARGET == HWY_AVX2;  // the formats of 32-column chunks
}

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

void QuantizeQ8(const float* x, int n, int64_t cols, int64_t block, int8_t* q, float* d,
                int16_t* s16, int16_t* s32) {
  HWY_DYNAMIC_DISPATCH(QuantizeQ8Rows)(x, n, cols, block, q, d, s16, s32);
}

bool HasQ8Kernels(const WeightRef& w) { return HWY_DYNAMIC_DISPATCH(Q8Kernels)(w); }

void MatMulRowsQ8(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ8)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
