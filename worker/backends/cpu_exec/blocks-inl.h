// The per-target pieces shared by the GGUF block-format decoders
// (matmul_q4_0.cc ... matmul_mxfp4.cc; the layouts are in
// common/block_quant.h), included by each of them once per Highway target,
// after matmul-inl.h.
//
// On x86 with AVX2 or AVX-512 (PAGED_BLOCK_SIMD) a row decoder works in
// registers. A chunk of 2N columns (32 on AVX-512, 16 on AVX2) never crosses
// a block of 32 or a K-format sub-block of 32, and a vector of N columns
// never crosses a sub-block of 16: each vector has one scale, and its
// quantized bits sit at one byte offset and one shift, both computed from the
// chunk's column. The decoder loads N bytes widened to i32 lanes and turns
// the codes into f32:
//   - AVX-512 (PAGED_BLOCK_TABLES), for 4- and 5-bit codes: the 16 values the
//     block or sub-block can take, computed once per chunk into one register,
//     looked up per lane by vpermps (which reads an index's low 4 bits only,
//     so a byte's low nibble needs no mask); a fifth bit picks a second table
//     through a lane mask.
//   - Else lane by lane: convert, multiply (and subtract / add); the
//     non-affine 4-bit codebooks (iq4_nl, iq4_xs, mxfp4, and q4_0 / q4_1 with
//     them) through a byte shuffle on AVX2.
// Either way a weight is the f32 result of the operations DequantizeRow does,
// in its order: these files are built with -ffp-contract=off, since a fused
// multiply-add would round once where the reference rounds twice.
//
// Sub-block scales that take unpacking (the K formats' 6-bit fields, iq4_xs)
// are computed once per row block into the decoder's scratch, vectorized per
// block; a block of 32's f16 scale is converted where the chunk reads it.
//
// Other targets (the portable fallback) decode each row of a row block with
// the reference DequantizeRow into scratch and read it as f32 (DecodedRows).

#if defined(PAGED_CPU_EXEC_BLOCKS_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef PAGED_CPU_EXEC_BLOCKS_INL_H_
#undef PAGED_CPU_EXEC_BLOCKS_INL_H_
#else
#define PAGED_CPU_EXEC_BLOCKS_INL_H_
#endif

#include <stdint.h>
#include <string.h>

#include "common/block_quant.h"
#include "common/dtype.h"
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul-inl.h"

#undef PAGED_BLOCK_SIMD
#undef PAGED_BLOCK_TABLES
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
#define PAGED_BLOCK_SIMD 1
#else
#define PAGED_BLOCK_SIMD 0
#endif
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define PAGED_BLOCK_TABLES 1
#else
#define PAGED_BLOCK_TABLES 0
#endif

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {

// Row r of a block-format matrix: rows are whole blocks, back to back.
HWY_INLINE const uint8_t* BlockRow(const WeightRef& w, int64_t r) {
  return static_cast<const uint8_t*>(w.data) +
         uint64_t(r) * PayloadBytes(w.dtype, 1, uint64_t(w.cols));
}

// The portable fallback: each row decoded by the reference into scratch.
struct DecodedRows {
  static int64_t ScratchFloats(const WeightRef& w) { return w.cols; }

  class Row {
   public:
    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : f_(scratch), cols_(w.cols) {
      DequantizeRow(w.dtype, BlockRow(w, r), w.cols, scratch);
    }

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      w0 = hn::LoadU(df, f_ + c);
      w1 = hn::LoadU(df, f_ + c + hn::Lanes(df));
    }
    // Only where 2N does not divide a block (vectors over 64 bytes).
    HWY_INLINE void Tail(DF df, int64_t c, VF& w0, VF& w1) const {
      HWY_ALIGN float buf[2 * kMaxLanes] = {};
      CopyTail(f_ + c, cols_ - c, buf);
      w0 = hn::Load(df, buf);
      w1 = hn::Load(df, buf + hn::Lanes(df));
    }

   private:
    const float* f_ = nullptr;  // [cols]: the row, decoded
    int64_t cols_ = 0;
  };
};

#if PAGED_BLOCK_SIMD

using DI = hn::RebindToSigned<DF>;
using VI = hn::Vec<DI>;

// N = 8 or 16: a chunk of 2N columns lies in one block of 32 (or sub-block
// of 32), a vector of N in one sub-block of 16.
static_assert(kMaxLanes == 8 || kMaxLanes == 16);

// N bytes at p, zero- or sign-extended to i32 lanes.
HWY_INLINE VI Bytes(const uint8_t* p) {
  return hn::PromoteTo(DI(), hn::LoadU(hn::Rebind<uint8_t, DF>(), p));
}
HWY_INLINE VI SignedBytes(const void* p) {
  return hn::PromoteTo(DI(), hn::LoadU(hn::Rebind<int8_t, DF>(), static_cast<const int8_t*>(p)));
}
HWY_INLINE VF Float(VI v) { return hn::ConvertTo(DF(), v); }

// The f16 at p (any alignment) as f32: vcvtph2ps, exact like HalfToFloat.
HWY_INLINE float Half(const uint8_t* p) {
  uint16_t h;
  memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// out[i] = (i < 8 ? a : b) * float(codes[i]) for i < 16, and as many more
// as a vector writes (out has room for max(16, N) floats).
HWY_INLINE void ScaleCodes16(const int8_t* codes, float a, float b, float* out) {
  const DF df;
  const DI di;
  const int64_t n = int64_t(hn::Lanes(df));
  for (int64_t v = 0; v < 16; v += n) {
    const auto first = hn::RebindMask(df, hn::Lt(hn::Iota(di, int32_t(v)), hn::Set(di, 8)));
    const VF s = hn::IfThenElse(first, hn::Set(df, a), hn::Set(df, b));
    hn::StoreU(hn::Mul(s, Float(SignedBytes(codes + v))), df, out + v);
  }
}

// The 8 scales and 8 mins of a q4_k / q5_k super-block from its 12 packed
// bytes (ScaleMinK4 in common/block_quant.cc), unpacked four at a time as in
// ggml's kernels, as four words of four bytes: u[0] = sc_0..3, u[1] =
// sc_4..7, u[2] = m_0..3, u[3] = m_4..7, each 0..63. (The AVX2 integer
// kernels take the words into a register as they are: matmul_q8.cc.)
HWY_INLINE void ScaleMinWordsK4(const uint8_t* packed, uint32_t* u) {
  constexpr uint32_t k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
  memcpy(u, packed, 12);
  u[3] = ((u[2] >> 4) & k4) | (((u[1] >> 6) & k2) << 4);  // m_4..7: high nibbles, top bits of 4..7
  const uint32_t m0 = u[1] & k6;                          // m_0..3
  u[1] = (u[2] & k4) | (((u[0] >> 6) & k2) << 4);         // sc_4..7: low nibbles, top bits of 0..3
  u[2] = m0;
  u[0] &= k6;  // sc_0..3
}

// The same as bytes: out[0, 8) = sc_0..7, out[8, 16) = m_0..7.
HWY_INLINE void UnpackScaleMinK4(const uint8_t* packed, int8_t* out) {
  uint32_t u[4];
  ScaleMinWordsK4(packed, u);
  memcpy(out, u, 16);
}

#if PAGED_BLOCK_TABLES
// The 8 scales (i32 lanes 0-7) and 8 mins (8-15) of a q4_k / q5_k
// super-block as integers 0..63, from its first 16 bytes (f16 d, f16 dmin,
// the 12 packed bytes).
HWY_INLINE __m512i ScaleMinCodesK4(const uint8_t* blk) {
  // The block's first 16 bytes in each 128-bit lane; lane i gets byte A (the
  // low bits) and byte B (the top 2 bits, lanes 4..7 and 12..15) by byte
  // shuffles, i.e. with s = blk + 4, for j = i % 8:
  //   sc_j (i < 8):  j < 4: s[j] & 63;      else (s[j + 4] & 15) | (s[j - 4] >> 6) << 4
  //   m_j  (i >= 8): j < 4: s[j + 4] & 63;  else (s[j + 4] >> 4) | (s[j] >> 6) << 4
  // code = M ? A >> shift : B >> 2 bit by bit, M = 63 or 15: B >> 2 holds
  // (B >> 6) << 4 in bits 4, 5 (B is 0 where there is no B).
  constexpr int8_t Z = -128;  // vpshufb: a zero byte
  alignas(64) static constexpr int8_t kIdxA[64] = {
      4,  Z, Z,  Z, 5,  Z, Z,  Z, 6,  Z, Z, Z, 7,  Z, Z, Z, 12, Z, Z,  Z, 13, Z,
      Z,  Z, 14, Z, Z,  Z, 15, Z, Z,  Z, 8, Z, Z,  Z, 9, Z, Z,  Z, 10, Z, Z,  Z,
      11, Z, Z,  Z, 12, Z, Z,  Z, 13, Z, Z, Z, 14, Z, Z, Z, 15, Z, Z,  Z};
  alignas(64) static constexpr int8_t kIdxB[64] = {
      Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z,  Z, Z, Z, 4,  Z, Z, Z, 5, Z,
      Z, Z, 6, Z, Z, Z, 7, Z, Z, Z, Z, Z, Z,  Z, Z, Z, Z,  Z, Z, Z, Z, Z,
      Z, Z, Z, Z, 8, Z, Z, Z, 9, Z, Z, Z, 10, Z, Z, Z, 11, Z, Z, Z};
  const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4);
  const __m512i mask =
      _mm512_setr_epi32(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15);
  const __m512i r4 = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk)));
  const __m512i a = _mm512_srlv_epi32(_mm512_shuffle_epi8(r4, _mm512_load_si512(kIdxA)), shift);
  const __m512i hi = _mm512_srli_epi32(_mm512_shuffle_epi8(r4, _mm512_load_si512(kIdxB)), 2);
  return _mm512_ternarylogic_epi32(a, hi, mask, 0xE4);  // mask ? a : hi
}
#endif

// The dl_j = d * sc_j and ml_j = dmin * m_j of every q4_k / q5_k super-block
// of a row (`supers` blocks of `block_bytes`: f16 d, f16 dmin, then the 12
// packed bytes) into scratch, 16 floats per super-block: dl_0..7, ml_0..7.
HWY_INLINE void ScalesMinsK4(const uint8_t* row, int64_t supers, int block_bytes, float* scratch) {
#if PAGED_BLOCK_TABLES
  // All 16 in the 16 lanes at once (ScaleMinCodesK4; a row's blocks are read
  // once per row block, so this is a fifth of a decode's work done lane by
  // lane), times d or dmin.
  // Words 0, 1 (d) eight times in the low 128 bits, 2, 3 (dmin) in the high.
  alignas(32) static constexpr int8_t kIdxD[32] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1,
                                                   2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3};
  const __m256i idx_d = _mm256_load_si256(reinterpret_cast<const __m256i*>(kIdxD));
  for (int64_t b = 0; b < supers; ++b) {
    const uint8_t* blk = row + b * block_bytes;
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk));
    const __m512 d = _mm512_cvtph_ps(_mm256_shuffle_epi8(_mm256_broadcastsi128_si256(raw), idx_d));
    _mm512_storeu_ps(scratch + 16 * b, _mm512_mul_ps(d, _mm512_cvtepi32_ps(ScaleMinCodesK4(blk))));
  }
#else
  for (int64_t b = 0; b < supers; ++b) {
    const uint8_t* blk = row + b * block_bytes;
    HWY_ALIGN int8_t sc_m[16];
    UnpackScaleMinK4(blk + 4, sc_m);
    ScaleCodes16(sc_m, Half(blk), Half(blk + 2), scratch + 16 * b);
  }
#endif
}

#if PAGED_BLOCK_TABLES

// table[idx & 15] in each lane (vpermps reads the low 4 bits of an index).
HWY_INLINE VF Lookup16(VF table, VI idx) { return VF{_mm512_permutexvar_ps(idx.raw, table.raw)}; }
// (hi ? t1 : t0)[idx & 15] in each lane.
HWY_INLINE VF Lookup16x2(VF t0, VF t1, hn::Mask<DF> hi, VI idx) {
  return VF{_mm512_mask_permutexvar_ps(Lookup16(t0, idx).raw, hi.raw, idx.raw, t1.raw)};
}

#else  // AVX2

using D16 = hn::Full128<uint8_t>;
using V16 = hn::Vec<D16>;

// The 16 bytes at p shifted right by `shift` (0 or 4), low nibbles: 16 codes.
HWY_INLINE V16 Nibbles(const uint8_t* p, int shift) {
  const hn::Full128<uint16_t> d16;
  const V16 v =
      hn::BitCast(D16(), hn::ShiftRightSame(hn::BitCast(d16, hn::LoadU(D16(), p)), shift));
  return hn::And(v, hn::Set(D16(), uint8_t{0x0f}));
}
// Lanes [0, 8) and [8, 16) of 16 int8 values as f32.
HWY_INLINE VF LowerFloats(V16 v) {
  return Float(hn::PromoteTo(DI(), hn::BitCast(hn::Full64<int8_t>(), hn::LowerHalf(v))));
}
HWY_INLINE VF UpperFloats(V16 v) {
  return Float(
      hn::PromoteTo(DI(), hn::BitCast(hn::Full64<int8_t>(), hn::UpperHalf(hn::Half<D16>(), v))));
}

#endif  // PAGED_BLOCK_TABLES

// The formats with blocks of 32 values and one scale (and min) per block,
// 4-bit codes in 16 bytes qs (value k: low nibble of qs[k] for k < 16, else
// high nibble of qs[k - 16]) and, for q5_0 / q5_1, a fifth bit: bit k of a
// u32 qh. Value = float(kCodes[code]) * scale (+ min), as DequantizeRow.
//   struct Traits {
//     static constexpr int kBlockBytes, kQs, kQh;  // kQh: -1 without a fifth bit
//     static constexpr int8_t kCodes[16 or 32];     // code -> integer value
//     static constexpr bool kMin;                   // + min (q4_1, q5_1)
//     static float Scale(const uint8_t* block), Min(const uint8_t* block);
//   };
template <class T>
struct Block32Format {
  static constexpr bool kFifthBit = T::kQh >= 0;
  static_assert(sizeof(T::kCodes) == (kFifthBit ? 32 : 16));

  static int64_t ScratchFloats(const WeightRef&) { return 0; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float*) : p_(BlockRow(w, r)) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint8_t* b = p_ + uint64_t(c) / 32 * T::kBlockBytes;
      const VF d = hn::Set(df, T::Scale(b));
#if PAGED_BLOCK_TABLES
      // The chunk is the block: lane j of q holds byte j, whose nibbles are
      // values j and 16 + j.
      const VI q = Bytes(b + T::kQs);
      const VI q_hi = hn::ShiftRight<4>(q);
      const VF t0 = Values(d, b, T::kCodes);
      if constexpr (kFifthBit) {
        const VF t1 = Values(d, b, T::kCodes + 16);
        w0 = Lookup16x2(t0, t1, hn::LoadMaskBits(df, b + T::kQh), q);
        w1 = Lookup16x2(t0, t1, hn::LoadMaskBits(df, b + T::kQh + 2), q_hi);
      } else {
        w0 = Lookup16(t0, q);
        w1 = Lookup16(t0, q_hi);
      }
#else
      // The chunk is half the block: the low nibbles of the 16 bytes (values
      // 0..15), or the high ones (16..31).
      const int half = int(uint64_t(c) / 16 % 2);
      const V16 nib = Nibbles(b + T::kQs, 4 * half);
      V16 codes = hn::TableLookupBytes(hn::LoadU(D16(), Book(0)), nib);
      if constexpr (kFifthBit) {
        const auto fifth = hn::LoadMaskBits(D16(), b + T::kQh + 2 * half);
        codes = hn::IfThenElse(fifth, hn::TableLookupBytes(hn::LoadU(D16(), Book(16)), nib), codes);
      }
      w0 = Scaled(LowerFloats(codes), d, b);
      w1 = Scaled(UpperFloats(codes), d, b);
#endif
    }

   private:
#if PAGED_BLOCK_TABLES
    // The 16 values of codes[0, 16) in this block.
    static HWY_INLINE VF Values(VF d, const uint8_t* b, const int8_t* codes) {
      return Scaled(Float(SignedBytes(codes)), d, b);
    }
#else
    static const uint8_t* Book(int at) { return reinterpret_cast<const uint8_t*>(T::kCodes) + at; }
#endif
    static HWY_INLINE VF Scaled(VF code, VF d, const uint8_t* b) {
      const VF v = hn::Mul(code, d);
      if constexpr (T::kMin) {
        return hn::Add(v, hn::Set(DF(), T::Min(b)));
      } else {
        return v;
      }
    }

    const uint8_t* p_ = nullptr;  // row r: [cols / 32] blocks
  };
};

#endif  // PAGED_BLOCK_SIMD

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // include guard toggle
