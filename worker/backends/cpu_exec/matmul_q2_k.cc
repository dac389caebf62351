// q2_k super-blocks, 256 values in 84 bytes: 16 scale bytes (low nibble:
// scale, high: min), 64 bytes of 2-bit codes, f16 d, f16 dmin. Value k:
// q = qs[32 (k / 128) + k % 32] >> 2 ((k % 128) / 32) & 3; value =
// dl_{k/16} * float(q) - ml_{k/16}, dl = d * (s & 15), ml = dmin * (s >> 4)
// (to scratch per row block). Lane by lane on every target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q2_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q2KFormat {
  static constexpr int kBytes = 84;

  static int64_t ScratchFloats(const WeightRef& w) { return w.cols / 256 * 32; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : p_(BlockRow(w, r)), s_(scratch) {
      const DF df;
      const int64_t n = int64_t(hn::Lanes(df));
      for (int64_t b = 0; b < w.cols / 256; ++b) {
        const uint8_t* blk = p_ + b * kBytes;
        const VF d = hn::Set(df, Half(blk + 80)), dmin = hn::Set(df, Half(blk + 82));
        float* out = scratch + 32 * b;
        for (int64_t v = 0; v < 16; v += n) {
          const VI sc = Bytes(blk + v);
          hn::StoreU(hn::Mul(d, Float(hn::And(sc, hn::Set(DI(), 15)))), df, out + v);
          hn::StoreU(hn::Mul(dmin, Float(hn::ShiftRight<4>(sc))), df, out + 16 + v);
        }
      }
    }

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint64_t k = uint64_t(c) % 256;
      const uint8_t* q = p_ + uint64_t(c) / 256 * kBytes + 16 + 32 * (k / 128) + k % 32;
      const float* s = s_ + uint64_t(c) / 256 * 32 + k / 16;
      const int shift = int(2 * (k % 128 / 32));
      const size_t n = hn::Lanes(df), s1 = n / 16;  // the second vector's sub-block
      const VI mask = hn::Set(DI(), 3);
      w0 = hn::Sub(
          hn::Mul(Float(hn::And(hn::ShiftRightSame(Bytes(q), shift), mask)), hn::Set(df, s[0])),
          hn::Set(df, s[16]));
      w1 = hn::Sub(hn::Mul(Float(hn::And(hn::ShiftRightSame(Bytes(q + n), shift), mask)),
                           hn::Set(df, s[s1])),
                   hn::Set(df, s[16 + s1]));
    }

   private:
    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..15, ml 0..15]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ2_K(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q2KFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ2_K);

void MatMulRowsQ2_K(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ2_K)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
