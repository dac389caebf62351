// f32 weights: each chunk is two plain loads.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_f32.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

struct F32Format {
  static int64_t ScratchFloats(const WeightRef&) { return 0; }

  class Row {
   public:
    Row() = default;
    Row(const WeightRef& w, int64_t r, float*)
        : p_(static_cast<const float*>(w.data) + r * w.cols), cols_(w.cols) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const { Decode(df, p_ + c, w0, w1); }
    HWY_INLINE void Tail(DF df, int64_t c, VF& w0, VF& w1) const {
      HWY_ALIGN float buf[2 * kMaxLanes] = {};
      CopyTail(p_ + c, cols_ - c, buf);
      Decode(df, buf, w0, w1);
    }

   private:
    static HWY_INLINE void Decode(DF df, const float* p, VF& w0, VF& w1) {
      w0 = hn::LoadU(df, p);
      w1 = hn::LoadU(df, p + hn::Lanes(df));
    }

    const float* p_ = nullptr;  // row r: [cols]
    int64_t cols_ = 0;
  };
};

}  // namespace

void RowsF32(const RowsArgs& a, int64_t ra, int64_t rb) { RunRows<F32Format>(a, ra, rb); }

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsF32);

void MatMulRowsF32(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsF32)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
