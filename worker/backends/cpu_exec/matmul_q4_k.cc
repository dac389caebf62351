// q4_k super-blocks, 256 values in 144 bytes: f16 d, f16 dmin, 12 bytes of
// packed 6-bit scales and mins, 128 bytes of nibbles. Sub-block j (values
// [32j, 32j + 32)) holds the low (j even) or high (j odd) nibbles q of bytes
// [32 (j / 2), + 32); value = dl_j * float(q) - ml_j with dl_j = d * sc_j,
// ml_j = dmin * m_j. dl and ml of every sub-block of the row go to scratch
// once per row block (16 floats per super-block). On AVX-512 a chunk is a
// sub-block: its 16 possible values dl * k - ml in one register, looked up
// by the bytes shifted (vpermps reads the low nibble); on AVX2 half a
// sub-block, converted and scaled lane by lane.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q4_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q4KFormat {
  static constexpr int kBytes = 144;

  static int64_t ScratchFloats(const WeightRef& w) { return w.cols / 256 * 16; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : p_(BlockRow(w, r)), s_(scratch) {
      ScalesMinsK4(p_, w.cols / 256, kBytes, scratch);
    }

#if PAGED_BLOCK_TABLES
    // A pair of sub-blocks (2p, 2p + 1: 64 columns), which share their 32
    // bytes: each 16 bytes widened once, looked up as they are (low nibbles)
    // and shifted (high nibbles). The table dl * k - ml is one fused
    // multiply-subtract: dl * k is exact in f32 (11 + 6 + 4 significant
    // bits), so the one rounding is the subtraction's, as DequantizeRow's.
    static constexpr size_t kStepChunks = 2;

    HWY_INLINE void Step(DF df, int64_t c, VF* w) const {
      const uint64_t p = uint64_t(c) % 256 / 64;
      const uint8_t* q = p_ + uint64_t(c) / 256 * kBytes + 16 + 32 * p;
      const float* s = s_ + uint64_t(c) / 256 * 16 + 2 * p;
      const VF iota = hn::Iota(df, 0);
      const VF t0 = hn::MulSub(iota, hn::Set(df, s[0]), hn::Set(df, s[8]));
      const VF t1 = hn::MulSub(iota, hn::Set(df, s[1]), hn::Set(df, s[9]));
      const VI b0 = Bytes(q), b1 = Bytes(q + 16);
      w[0] = Lookup16(t0, b0);
      w[1] = Lookup16(t0, b1);
      w[2] = Lookup16(t1, hn::ShiftRight<4>(b0));
      w[3] = Lookup16(t1, hn::ShiftRight<4>(b1));
    }
#endif

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint64_t k = uint64_t(c) % 256, j = k / 32;
      const uint8_t* q = p_ + uint64_t(c) / 256 * kBytes + 16 + 32 * (j / 2) + k % 32;
      const float* s = s_ + uint64_t(c) / 256 * 16;
      const int shift = int(4 * (j % 2));
      const VF dl = hn::Set(df, s[j]), ml = hn::Set(df, s[8 + j]);
      const size_t n = hn::Lanes(df);
#if PAGED_BLOCK_TABLES
      const VF t = hn::Sub(hn::Mul(hn::Iota(df, 0), dl), ml);
      w0 = Lookup16(t, hn::ShiftRightSame(Bytes(q), shift));
      w1 = Lookup16(t, hn::ShiftRightSame(Bytes(q + n), shift));
#else
      const VI mask = hn::Set(DI(), 15);
      w0 = hn::Sub(hn::Mul(Float(hn::And(hn::ShiftRightSame(Bytes(q), shift), mask)), dl), ml);
      w1 = hn::Sub(hn::Mul(Float(hn::And(hn::ShiftRightSame(Bytes(q + n), shift), mask)), dl), ml);
#endif
    }

   private:
    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..7, ml 0..7]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ4_K(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q4KFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ4_K);

void MatMulRowsQ4_K(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ4_K)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
