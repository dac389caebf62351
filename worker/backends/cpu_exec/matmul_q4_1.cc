// q4_1 blocks, 32 values in 20 bytes: f16 d, f16 m, 16 bytes of nibbles;
// value = float(nibble) * d + m. Decoded by Block32Format (blocks-inl.h).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_q4_1.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct Q4_1 {
  static constexpr int kBlockBytes = 20, kQs = 4, kQh = -1;
  static constexpr int8_t kCodes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  static constexpr bool kMin = true;
  static HWY_INLINE float Scale(const uint8_t* b) { return Half(b); }
  static HWY_INLINE float Min(const uint8_t* b) { return Half(b + 2); }
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsQ4_1(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Block32Format<Q4_1>>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsQ4_1);

void MatMulRowsQ4_1(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsQ4_1)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
