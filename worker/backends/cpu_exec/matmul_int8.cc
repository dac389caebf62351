// Group-quantized int8 weights (common/quant.h): q widened to i32, converted
// and multiplied by its group's f16 scale, exactly DequantizeRowInt8's value.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_int8.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

template <bool kUniform>
struct Int8Format {
  static int64_t ScratchFloats(const WeightRef& w) {
    return GroupScales<kUniform>::ScratchFloats(w);
  }

  class Row {
   public:
    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch)
        : q_(static_cast<const int8_t*>(w.data) + r * w.cols),
          cols_(w.cols),
          scales_(w, r, scratch) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const int64_t n = int64_t(hn::Lanes(df));
      Decode(df, q_ + c, scales_.At(df, c), scales_.At(df, c + n), w0, w1);
    }
    HWY_INLINE void Tail(DF df, int64_t c, VF& w0, VF& w1) const {
      const int64_t n = int64_t(hn::Lanes(df));
      HWY_ALIGN int8_t buf[2 * kMaxLanes] = {};
      CopyTail(q_ + c, cols_ - c, buf);
      Decode(df, buf, scales_.At(df, c), scales_.At(df, c + n), w0, w1);
      MaskTail(df, cols_ - c, w0, w1);
    }

   private:
    static HWY_INLINE void Decode(DF df, const int8_t* q, VF s0, VF s1, VF& w0, VF& w1) {
      const hn::Rebind<int8_t, DF> d8;
      const hn::Rebind<int32_t, DF> di;
      w0 = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q))), s0);
      w1 = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, q + hn::Lanes(df)))), s1);
    }

    const int8_t* q_ = nullptr;  // row r: [cols]
    int64_t cols_ = 0;
    GroupScales<kUniform> scales_;
  };
};

}  // namespace

void RowsInt8(const RowsArgs& a, int64_t ra, int64_t rb) {
  if (UniformGroups(a.w->group)) {
    RunRows<Int8Format<true>>(a, ra, rb);
  } else {
    RunRows<Int8Format<false>>(a, ra, rb);
  }
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsInt8);

void MatMulRowsInt8(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsInt8)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
