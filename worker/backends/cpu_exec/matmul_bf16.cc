// bf16 weights: each vector is the 16-bit values widened and shifted up.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_bf16.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

struct BF16Format {
  static int64_t ScratchFloats(const WeightRef&) { return 0; }

  class Row {
   public:
    Row() = default;
    Row(const WeightRef& w, int64_t r, float*)
        : p_(static_cast<const hwy::bfloat16_t*>(w.data) + r * w.cols), cols_(w.cols) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const { Decode(df, p_ + c, w0, w1); }
    HWY_INLINE void Tail(DF df, int64_t c, VF& w0, VF& w1) const {
      HWY_ALIGN hwy::bfloat16_t buf[2 * kMaxLanes] = {};  // zero bits: +0.0
      CopyTail(p_ + c, cols_ - c, buf);
      Decode(df, buf, w0, w1);
    }

   private:
    static HWY_INLINE void Decode(DF df, const hwy::bfloat16_t* p, VF& w0, VF& w1) {
      const hn::Rebind<hwy::bfloat16_t, DF> dh;
      w0 = hn::PromoteTo(df, hn::LoadU(dh, p));
      w1 = hn::PromoteTo(df, hn::LoadU(dh, p + hn::Lanes(df)));
    }

    const hwy::bfloat16_t* p_ = nullptr;  // row r: [cols]
    int64_t cols_ = 0;
  };
};

}  // namespace

void RowsBF16(const RowsArgs& a, int64_t ra, int64_t rb) { RunRows<BF16Format>(a, ra, rb); }

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsBF16);

void MatMulRowsBF16(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsBF16)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
