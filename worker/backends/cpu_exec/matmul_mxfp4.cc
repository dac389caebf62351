// mxfp4 blocks, 32 values in 17 bytes: an E8M0 exponent e, 16 bytes of e2m1
// (fp4) codes; value = float(2 * e2m1[code]) * 2^(e - 128), as the reference
// (common/block_quant.cc: the doubled table and the halved scale). Decoded by
// Block32Format (blocks-inl.h): a register table on AVX-512, a byte shuffle
// on AVX2.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_mxfp4.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct MXFP4 {
  static constexpr int kBlockBytes = 17, kQs = 1, kQh = -1;
  static constexpr int8_t kCodes[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  static constexpr bool kMin = false;
  // 2^(e - 128): e 0 and 1 give the subnormals 2^-128 and 2^-127.
  static HWY_INLINE float Scale(const uint8_t* b) {
    const uint32_t e = b[0];
    return F32FromBits(e < 2 ? 0x00200000u << e : (e - 1) << 23);
  }
  static HWY_INLINE float Min(const uint8_t*) { return 0.f; }
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsMXFP4(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<Block32Format<MXFP4>>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsMXFP4);

void MatMulRowsMXFP4(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsMXFP4)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
