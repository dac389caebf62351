// q5_k super-blocks, 256 values in 176 bytes: f16 d, f16 dmin, 12 bytes of
// packed 6-bit scales and mins, 32 bytes qh, 128 bytes of nibbles. As q4_k,
// with bit j of qh[k % 32] as bit 4 of value k of sub-block j: value =
// dl_j * float(q) - ml_j. dl and ml go to scratch per row block. On AVX-512
// the 32 values dl * k - ml of a sub-block are two registers; the fifth bit
// (a lane mask) picks the second. On AVX2 lane by lane.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q5_k.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q5KFormat {
  static constexpr int kBytes = 176;

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
    // A pair of sub-blocks (2p, 2p + 1: 64 columns) at once, as q4_k: their
    // 32 bytes of nibbles and the 32 of qh widened once for both. The
    // tables dl * k - ml are fused multiply-subtracts: dl * k is exact in
    // f32 (11 + 6 + 5 significant bits).
    static constexpr size_t kStepChunks = 2;

    HWY_INLINE void Step(DF df, int64_t c, VF* w) const {
      const uint64_t p = uint64_t(c) % 256 / 64;
      const uint8_t* b = p_ + uint64_t(c) / 256 * kBytes;
      const uint8_t* q = b + 48 + 32 * p;
      const float* s = s_ + uint64_t(c) / 256 * 16 + 2 * p;
      const VF lo = hn::Iota(df, 0), hi = hn::Iota(df, 16);
      const VI h0 = Bytes(b + 16), h1 = Bytes(b + 32), q0 = Bytes(q), q1 = Bytes(q + 16);
      PAGED_UNROLL
      for (size_t i = 0; i < 2; ++i) {  // sub-block 2p + i: bit 2p + i of qh
        const VF dl = hn::Set(df, s[i]), ml = hn::Set(df, s[8 + i]);
        const VF t0 = hn::MulSub(lo, dl, ml), t1 = hn::MulSub(hi, dl, ml);
        const VI bit = hn::Set(DI(), int32_t{1} << (2 * p + i));
        w[2 * i] = Lookup16x2(t0, t1, hn::RebindMask(df, hn::TestBit(h0, bit)),
                              i == 0 ? q0 : hn::ShiftRight<4>(q0));
        w[2 * i + 1] = Lookup16x2(t0, t1, hn::RebindMask(df, hn::TestBit(h1, bit)),
                                  i == 0 ? q1 : hn::ShiftRight<4>(q1));
      }
    }
#endif

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint64_t k = uint64_t(c) % 256, j = k / 32;
      const uint8_t* b = p_ + uint64_t(c) / 256 * kBytes;
      const uint8_t* q = b + 48 + 32 * (j / 2) + k % 32;
      const uint8_t* h = b + 16 + k % 32;
      const float* s = s_ + uint64_t(c) / 256 * 16;
      const int shift = int(4 * (j % 2));
      const VF dl = hn::Set(df, s[j]), ml = hn::Set(df, s[8 + j]);
      const size_t n = hn::Lanes(df);
#if PAGED_BLOCK_TABLES
      const VF t0 = hn::Sub(hn::Mul(hn::Iota(df, 0), dl), ml);
      const VF t1 = hn::Sub(hn::Mul(hn::Iota(df, 16), dl), ml);
      const VI bit = hn::Set(DI(), int32_t{1} << j);
      w0 = Lookup16x2(t0, t1, hn::RebindMask(df, hn::TestBit(Bytes(h), bit)),
                      hn::ShiftRightSame(Bytes(q), shift));
      w1 = Lookup16x2(t0, t1, hn::RebindMask(df, hn::TestBit(Bytes(h + n), bit)),
                      hn::ShiftRightSame(Bytes(q + n), shift));
#else
      w0 = Value(q, h, shift, int(j), dl, ml);
      w1 = Value(q + n, h + n, shift, int(j), dl, ml);
#endif
    }

   private:
#if !PAGED_BLOCK_TABLES
    static HWY_INLINE VF Value(const uint8_t* q, const uint8_t* h, int shift, int j, VF dl, VF ml) {
      const DI di;
      const VI lo = hn::And(hn::ShiftRightSame(Bytes(q), shift), hn::Set(di, 15));
      const VI hi = hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(Bytes(h), j), hn::Set(di, 1)));
      return hn::Sub(hn::Mul(Float(hn::Or(lo, hi)), dl), ml);
    }
#endif

    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..7, ml 0..7]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ5_K(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q5KFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ5_K);

void MatMulRowsQ5_K(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ5_K)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
