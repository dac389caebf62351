// iq4_nl blocks, 32 values in 18 bytes: f16 d, 16 bytes of nibbles indexing
// a fixed non-uniform codebook; value = d * float(book[nibble]). Decoded by
// Block32Format (blocks-inl.h): a register table on AVX-512, a byte shuffle
// on AVX2.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_iq4_nl.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct IQ4_NL {
  static constexpr int kBlockBytes = 18, kQs = 2, kQh = -1;
  static constexpr int8_t kCodes[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};
  static constexpr bool kMin = false;
  static HWY_INLINE float Scale(const uint8_t* b) { return Half(b); }
  static HWY_INLINE float Min(const uint8_t*) { return 0.f; }
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsIQ4_NL(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Block32Format<IQ4_NL>>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsIQ4_NL);

void MatMulRowsIQ4_NL(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsIQ4_NL)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
