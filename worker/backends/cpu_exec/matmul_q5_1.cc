// q5_1 blocks, 32 values in 24 bytes: f16 d, f16 m, u32 qh (bit k: value k's
// bit 4), 16 bytes of nibbles; value = float(q) * d + m. Decoded by
// Block32Format (blocks-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q5_1.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q5_1 {
  static constexpr int kBlockBytes = 24, kQs = 8, kQh = 4;
  static constexpr int8_t kCodes[32] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10,
                                        11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                        22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  static constexpr bool kMin = true;
  static HWY_INLINE float Scale(const uint8_t* b) { return Half(b); }
  static HWY_INLINE float Min(const uint8_t* b) { return Half(b + 2); }
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ5_1(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Block32Format<Q5_1>>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ5_1);

void MatMulRowsQ5_1(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ5_1)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
