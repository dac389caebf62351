// Group-quantized int4 weights (common/quant.h): nibbles q + 8, even column in
// the low nibble, rows padded to whole bytes. A chunk of 2N columns is N
// bytes. Two decoders, both giving exactly DequantizeRowInt4's values:
//   - AVX-512 (N = 16), group a multiple of 2N: the bytes widened to 16 lanes,
//     each nibble looked up in a 16-entry table (k - 8) * scale (one permute
//     per vector, no conversion); lanes hold the even columns, then the odd
//     ones (kEvenOddColumns), x is deinterleaved to match.
//   - Else: low and high nibbles split, interleaved back into column order,
//     re-centred (- 8), widened, converted and multiplied by the scale.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_int4.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/matmul-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
constexpr bool kHaveNibbleTable = true;  // 16 f32 lanes: one register holds the table
#else
constexpr bool kHaveNibbleTable = false;
#endif

enum class Int4Mode {
  kTable,    // kHaveNibbleTable and group % 2N == 0
  kUniform,  // group % N == 0
  kGeneral,  // any group
};

template <Int4Mode kMode>
struct Int4Format {
  static constexpr bool kUniformScales = kMode != Int4Mode::kGeneral;

  static int64_t ScratchFloats(const WeightRef& w) {
    return GroupScales<kUniformScales>::ScratchFloats(w);
  }

  class Row {
   public:
    static constexpr bool kEvenOddColumns = kMode == Int4Mode::kTable;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch)
        : q_(static_cast<const uint8_t*>(w.data) + r * ((w.cols + 1) / 2)),
          cols_(w.cols),
          scales_(w, r, scratch) {}

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      Decode(df, q_ + c / 2, c, w0, w1);
    }
    HWY_INLINE void Tail(DF df, int64_t c, VF& w0, VF& w1) const {
      HWY_ALIGN uint8_t buf[kMaxLanes] = {};
      CopyTail(q_ + c / 2, (cols_ - c + 1) / 2, buf);
      Decode(df, buf, c, w0, w1);
      const int64_t rem = cols_ - c;
      if constexpr (kEvenOddColumns) {
        w0 = hn::IfThenElseZero(hn::FirstN(df, size_t((rem + 1) / 2)), w0);
        w1 = hn::IfThenElseZero(hn::FirstN(df, size_t(rem / 2)), w1);
      } else {
        MaskTail(df, rem, w0, w1);
      }
    }

   private:
    // q: N bytes = columns [c, c + 2N).
    HWY_INLINE void Decode(DF df, const uint8_t* q, int64_t c, VF& w0, VF& w1) const {
      const int64_t n = int64_t(hn::Lanes(df));
      if constexpr (kMode == Int4Mode::kTable) {
        const hn::Rebind<uint8_t, DF> d8;
        const hn::Rebind<int32_t, DF> di;
        const auto bytes = hn::PromoteTo(di, hn::LoadU(d8, q));  // lane j: columns c + 2j, + 1
        const VF table = hn::Mul(hn::Iota(df, -8.f), scales_.At(df, c));  // (k - 8) * scale
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
        // vpermps reads an index's low 4 bits: the low nibble needs no mask.
        w0 = VF{_mm512_permutexvar_ps(bytes.raw, table.raw)};
        w1 = VF{_mm512_permutexvar_ps(hn::ShiftRight<4>(bytes).raw, table.raw)};
#else
        w0 = hn::TableLookupLanes(table, hn::IndicesFromVec(df, hn::And(bytes, hn::Set(di, 15))));
        w1 = hn::TableLookupLanes(table, hn::IndicesFromVec(df, hn::ShiftRight<4>(bytes)));
#endif
      } else {
        const VF s0 = scales_.At(df, c), s1 = scales_.At(df, c + n);
#if HWY_TARGET == HWY_SCALAR  // one lane: one byte, no shuffles
        w0 = hn::Mul(hn::Set(df, float((q[0] & 0x0f) - 8)), s0);
        w1 = hn::Mul(hn::Set(df, float((q[0] >> 4) - 8)), s1);
#else
        const hn::Rebind<uint8_t, DF> d8;  // N lanes
        const hn::Rebind<int8_t, DF> di8;
        const hn::Rebind<int32_t, DF> di;
        const auto bytes = hn::LoadU(d8, q);
        const auto lo = hn::And(bytes, hn::Set(d8, uint8_t{0x0f}));  // even columns
        const auto hi = hn::ShiftRight<4>(bytes);                    // odd columns
        const auto eight = hn::Set(d8, uint8_t{8});
        const auto q0 = hn::BitCast(di8, hn::Sub(hn::InterleaveLower(d8, lo, hi), eight));
        const auto q1 = hn::BitCast(di8, hn::Sub(hn::InterleaveUpper(d8, lo, hi), eight));
        w0 = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, q0)), s0);
        w1 = hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di, q1)), s1);
#endif
      }
    }

    const uint8_t* q_ = nullptr;  // row r: [(cols + 1) / 2]
    int64_t cols_ = 0;
    GroupScales<kUniformScales> scales_;
  };
};

}  // namespace

void RowsInt4(const RowsArgs& a, int64_t ra, int64_t rb) {
  const int group = a.w->group;
  const int n = int(hn::Lanes(DF()));
  if constexpr (kHaveNibbleTable) {
    if (group % (2 * n) == 0) return RunRows<Int4Format<Int4Mode::kTable>>(a, ra, rb);
  }
  if (UniformGroups(group)) {
    RunRows<Int4Format<Int4Mode::kUniform>>(a, ra, rb);
  } else {
    RunRows<Int4Format<Int4Mode::kGeneral>>(a, ra, rb);
  }
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsInt4);

void MatMulRowsInt4(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsInt4)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
