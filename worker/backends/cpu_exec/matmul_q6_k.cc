// q6_k super-blocks, 256 values in 210 bytes: 128 bytes ql (low 4 bits),
// 64 bytes qh (high 2 bits), 16 int8 scales, f16 d. Value k: h = k / 128,
// t = (k % 128) / 32, l = k % 32; q = nibble (t / 2 high) of
// ql[64h + 32 (t % 2) + l] | (qh[32h + l] >> 2t & 3) << 4; value =
// dl_{k/16} * float(q - 32), dl_i = d * scale_i (to scratch per row block).
// A chunk's 2N codes are assembled in bytes (one shift and mask each for
// ql and qh, an or, a subtract), then widened, converted and scaled.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q6_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q6KFormat {
  static constexpr int kBytes = 210;

  static int64_t ScratchFloats(const WeightRef& w) { return w.cols / 256 * 16; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : p_(BlockRow(w, r)), s_(scratch) {
      for (int64_t b = 0; b < w.cols / 256; ++b) {
        const uint8_t* blk = p_ + b * kBytes;
        const float d = Half(blk + 208);
        ScaleCodes16(reinterpret_cast<const int8_t*>(blk + 192), d, d, scratch + 16 * b);
      }
    }

#if PAGED_BLOCK_TABLES
    // A half super-block (h: 128 columns, chunks t = 0..3) at once: its 64
    // bytes of ql and 32 of qh are loaded once and its 128 codes q - 32
    // assembled in two registers of bytes (t = 0, 1 from the low nibbles,
    // 2, 3 from the high ones), then each 16 widened, converted and scaled.
    // The top 4 bits of q - 32 (two's complement) come from q's 2 high bits
    // p by a byte table: (16 p - 32) & 0xf0.
    static constexpr size_t kStepChunks = 4;
    // With 2 or more token rows (16 accumulators) the 8 decoded vectors do
    // not fit in registers: chunk by chunk there (n = 8 ran 1.3x slower).
    static constexpr size_t kStepTokens = 1;

    HWY_INLINE void Step(DF df, int64_t c, VF* w) const {
      alignas(64) static constexpr uint8_t kTop[64] = {
          // t = 0 (and 2): p = the index's bits 0, 1
          0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0, 0x00,
          0x10, 0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0, 0x00, 0x10, 0xe0, 0xf0,
          0x00, 0x10,
          // t = 1 (and 3): p = the index's bits 2, 3
          0xe0, 0xe0, 0xe0, 0xe0, 0xf0, 0xf0, 0xf0, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x10, 0x10, 0x10,
          0x10, 0xe0, 0xe0, 0xe0, 0xe0, 0xf0, 0xf0, 0xf0, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x10, 0x10,
          0x10, 0x10};
      const uint64_t h = uint64_t(c) % 256 / 128;
      const uint8_t* b = p_ + uint64_t(c) / 256 * kBytes;
      // ql bytes [64h, + 64): t = 0, 2 in the first 32, 1, 3 in the next.
      const __m512i ql = _mm512_loadu_si512(b + 64 * h);
      // qh bytes [32h, + 32) twice: bits 2t, 2t + 1 for t = 0, 2 (low half), 1, 3 (high).
      const __m512i qh = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)));
      const __m512i top = _mm512_load_si512(kTop);
      const __m512i m4 = _mm512_set1_epi8(0x0f);
      const __m512i top01 = _mm512_shuffle_epi8(top, _mm512_and_si512(qh, m4));
      const __m512i top23 =
          _mm512_shuffle_epi8(top, _mm512_and_si512(_mm512_srli_epi16(qh, 4), m4));
      // Bit by bit m4 ? nibble : top.
      alignas(64) int8_t codes[128];
      _mm512_store_si512(codes, _mm512_ternarylogic_epi32(ql, top01, m4, 0xe4));
      _mm512_store_si512(codes + 64,
                         _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), top23, m4, 0xe4));
      // Widened from memory (a load and one shuffle each), not extracted
      // from the registers (two shuffles).
      asm volatile("" : : "r"(codes) : "memory");
      const float* s = s_ + uint64_t(c) / 16;  // vector v's sub-block of 16: s[v]
      PAGED_UNROLL
      for (size_t v = 0; v < 8; ++v) {
        w[v] = hn::Mul(Float(SignedBytes(codes + 16 * v)), hn::Set(df, s[v]));
      }
    }
#endif

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      using D2 = hn::FixedTag<uint8_t, 2 * kMaxLanes>;  // the chunk's 2N codes
      const D2 d2;
      const hn::RepartitionToWide<D2> d2w;
      const hn::Half<hn::RebindToSigned<D2>> dh;
      const uint64_t k = uint64_t(c) % 256, h = k / 128, t = k % 128 / 32, l = k % 32;
      const uint8_t* b = p_ + uint64_t(c) / 256 * kBytes;
      const auto ql = hn::LoadU(d2, b + 64 * h + 32 * (t % 2) + l);
      const auto qh = hn::LoadU(d2, b + 128 + 32 * h + l);
      const auto lo =
          hn::And(hn::BitCast(d2, hn::ShiftRightSame(hn::BitCast(d2w, ql), int(4 * (t / 2)))),
                  hn::Set(d2, uint8_t{0x0f}));
      const auto hi = hn::And(hn::BitCast(d2, hn::ShiftRightSame(hn::BitCast(d2w, qh), int(2 * t))),
                              hn::Set(d2, uint8_t{0x03}));
      const auto q = hn::Or(lo, hn::BitCast(d2, hn::ShiftLeft<4>(hn::BitCast(d2w, hi))));
      const auto q32 = hn::BitCast(hn::RebindToSigned<D2>(), hn::Sub(q, hn::Set(d2, uint8_t{32})));
      const float* s = s_ + uint64_t(c) / 16;  // the first vector's sub-block of 16
      w0 = hn::Mul(Float(hn::PromoteTo(DI(), hn::LowerHalf(dh, q32))), hn::Set(df, s[0]));
      w1 = hn::Mul(Float(hn::PromoteTo(DI(), hn::UpperHalf(dh, q32))),
                   hn::Set(df, s[hn::Lanes(df) / 16]));
    }

   private:
    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..15]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ6_K(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q6KFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ6_K);

void MatMulRowsQ6_K(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ6_K)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
