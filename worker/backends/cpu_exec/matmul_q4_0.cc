// q4_0 blocks, 32 values in 18 bytes: f16 d, 16 bytes of nibbles;
// value = float(nibble - 8) * d. Decoded by Block32Format (blocks-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q4_0.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q4_0 {
  static constexpr int kBlockBytes = 18, kQs = 2, kQh = -1;
  static constexpr int8_t kCodes[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
  static constexpr bool kMin = false;
  static HWY_INLINE float Scale(const uint8_t* b) { return Half(b); }
  static HWY_INLINE float Min(const uint8_t*) { return 0.f; }
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ4_0(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Block32Format<Q4_0>>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ4_0);

void MatMulRowsQ4_0(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ4_0)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
