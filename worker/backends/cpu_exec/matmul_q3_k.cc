// q3_k super-blocks, 256 values in 110 bytes: 32 bytes hmask, 64 bytes of
// 2-bit codes, 12 bytes of packed 6-bit scales, f16 d. Value k: q2 as in
// q2_k, high bit h = bit k / 32 of hmask[k % 32]; value =
// dl_{k/16} * float((q2 | h << 2) - 4), dl = d * (scale - 32) (to scratch per
// row block). Lane by lane on every target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q3_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q3KFormat {
  static constexpr int kBytes = 110;

  static int64_t ScratchFloats(const WeightRef& w) { return w.cols / 256 * 16; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : p_(BlockRow(w, r)), s_(scratch) {
      for (int64_t b = 0; b < w.cols / 256; ++b) {
        const uint8_t* blk = p_ + b * kBytes;
        HWY_ALIGN int8_t sc[16];
        Unpack(blk + 96, sc);
        const float d = Half(blk + 108);
        ScaleCodes16(sc, d, d, scratch + 16 * b);
      }
    }

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint64_t k = uint64_t(c) % 256, m = k / 32;
      const uint8_t* b = p_ + uint64_t(c) / 256 * kBytes;
      const uint8_t* q = b + 32 + 32 * (k / 128) + k % 32;
      const uint8_t* hm = b + k % 32;
      const float* s = s_ + uint64_t(c) / 16;
      const int shift = int(2 * (m % 4));
      const size_t n = hn::Lanes(df);
      w0 = Value(q, hm, shift, int(m), hn::Set(df, s[0]));
      w1 = Value(q + n, hm + n, shift, int(m), hn::Set(df, s[n / 16]));
    }

   private:
    static HWY_INLINE VF Value(const uint8_t* q, const uint8_t* hm, int shift, int bit, VF dl) {
      const DI di;
      const VI q2 = hn::And(hn::ShiftRightSame(Bytes(q), shift), hn::Set(di, 3));
      const VI h = hn::ShiftLeft<2>(hn::And(hn::ShiftRightSame(Bytes(hm), bit), hn::Set(di, 1)));
      return hn::Mul(Float(hn::Sub(hn::Or(q2, h), hn::Set(di, 4))), dl);
    }

    // The 16 6-bit scales minus 32 (common/block_quant.cc's Q3_K), four at a
    // time as in ggml's kernels: low 4 bits from bytes 0..7 (low nibbles for
    // scales 0..7, high for 8..15), high 2 bits from bytes 8..11.
    static void Unpack(const uint8_t* packed, int8_t* out) {
      constexpr uint32_t k4 = 0x0f0f0f0f, k2 = 0x03030303;
      uint32_t a[3], u[4];
      memcpy(a, packed, 12);
      u[0] = (a[0] & k4) | (((a[2] >> 0) & k2) << 4);
      u[1] = (a[1] & k4) | (((a[2] >> 2) & k2) << 4);
      u[2] = ((a[0] >> 4) & k4) | (((a[2] >> 4) & k2) << 4);
      u[3] = ((a[1] >> 4) & k4) | (((a[2] >> 6) & k2) << 4);
      // Each byte minus 32, without borrows between bytes: (x + 128 - 32) ^ 128.
      for (uint32_t& v : u) v = ((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
      memcpy(out, u, 16);
    }

    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..15]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ3_K(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q3KFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ3_K);

void MatMulRowsQ3_K(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ3_K)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
