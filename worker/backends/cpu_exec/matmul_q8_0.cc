// q8_0 blocks, 32 values in 34 bytes: f16 d, 32 int8 q; value = float(q) * d.
// A chunk is the block (AVX-512) or half of it (AVX2): sign-extend, convert,
// scale.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q8_0.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q8_0Format {
  static int64_t ScratchFloats(const WeightRef&) { return 0; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float*) : p_(BlockRow(w, r)) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint8_t* b = p_ + uint64_t(c) / 32 * 34;
      const uint8_t* q = b + 2 + uint64_t(c) % 32;
      const VF d = hn::Set(df, Half(b));
      w0 = hn::Mul(Float(SignedBytes(q)), d);
      w1 = hn::Mul(Float(SignedBytes(q + hn::Lanes(df))), d);
    }

   private:
    const uint8_t* p_ = nullptr;  // row r: [cols / 32] blocks
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ8_0(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Q8_0Format>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ8_0);

void MatMulRowsQ8_0(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ8_0)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
