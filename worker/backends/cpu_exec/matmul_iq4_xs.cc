// iq4_xs super-blocks, 256 values in 136 bytes: f16 d, u16 scales_h, 4
// bytes scales_l, 128 bytes of nibbles indexing iq4_nl's codebook. Sub-block
// j: ls = (scales_l[j / 2] >> 4 (j % 2) & 15) | (scales_h >> 2j & 3) << 4,
// dl = d * float(ls - 32) (to scratch per row block); its 32 values are the
// low then the high nibbles of bytes [16j, 16j + 16): value =
// dl * float(book[nibble]). On AVX-512 a chunk is a sub-block looked up in
// one register; on AVX2 half of one, through a byte shuffle.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/matmul_iq4_xs.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "worker/backends/cpu_exec/blocks-inl.h"

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

#if PAGED_BLOCK_SIMD
struct IQ4XSFormat {
  static constexpr int kBytes = 136;
  static constexpr int8_t kBook[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};

  static int64_t ScratchFloats(const WeightRef& w) { return w.cols / 256 * 16; }

  class Row {
   public:
    static constexpr bool kWholeChunks = true;
    static constexpr bool kInterleaveRows = true;

    Row() = default;
    Row(const WeightRef& w, int64_t r, float* scratch) : p_(BlockRow(w, r)), s_(scratch) {
      const DF df;
      const hn::RebindToUnsigned<DF> du;
      const auto j = hn::Iota(du, 0);  // lanes 0..7: the sub-blocks (lanes 8..15 unused)
      for (int64_t b = 0; b < w.cols / 256; ++b) {
        const uint8_t* blk = p_ + b * kBytes;
        uint16_t sh;
        uint32_t sl;
        memcpy(&sh, blk + 2, 2);
        memcpy(&sl, blk + 4, 4);
        const auto lo = hn::And(hn::Shr(hn::Set(du, sl), hn::ShiftLeft<2>(j)), hn::Set(du, 15u));
        const auto hi =
            hn::And(hn::Shr(hn::Set(du, uint32_t{sh}), hn::ShiftLeft<1>(j)), hn::Set(du, 3u));
        const VI ls = hn::BitCast(DI(), hn::Or(lo, hn::ShiftLeft<4>(hi)));
        hn::StoreU(hn::Mul(hn::Set(df, Half(blk)), Float(hn::Sub(ls, hn::Set(DI(), 32)))), df,
                   scratch + 16 * b);
      }
    }

    HWY_INLINE void Chunk(DF df, int64_t c, VF& w0, VF& w1) const {
      const uint64_t k = uint64_t(c) % 256, j = k / 32;
      const uint8_t* q = p_ + uint64_t(c) / 256 * kBytes + 8 + 16 * j;
      const VF dl = hn::Set(df, s_[uint64_t(c) / 256 * 16 + j]);
#if PAGED_BLOCK_TABLES
      const VF t = hn::Mul(dl, Float(SignedBytes(kBook)));
      const VI z = Bytes(q);
      w0 = Lookup16(t, z);
      w1 = Lookup16(t, hn::ShiftRight<4>(z));
#else
      const V16 codes =
          hn::TableLookupBytes(hn::LoadU(D16(), reinterpret_cast<const uint8_t*>(kBook)),
                               Nibbles(q, int(4 * (k % 32 / 16))));
      w0 = hn::Mul(dl, LowerFloats(codes));
      w1 = hn::Mul(dl, UpperFloats(codes));
#endif
    }

   private:
    const uint8_t* p_ = nullptr;  // row r: [cols / 256] super-blocks
    const float* s_ = nullptr;    // [cols / 256][dl 0..7, unused 8..15]
  };
};
#endif  // PAGED_BLOCK_SIMD

}  // namespace

void RowsIQ4_XS(const RowsArgs& a, int64_t ra, int64_t rb) {
#if PAGED_BLOCK_SIMD
  RunRows<IQ4XSFormat>(a, ra, rb);
#else
  RunRows<DecodedRows>(a, ra, rb);
#endif
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(RowsIQ4_XS);

void MatMulRowsIQ4_XS(const RowsArgs& a, int64_t ra, int64_t rb) {
  HWY_DYNAMIC_DISPATCH(RowsIQ4_XS)(a, ra, rb);
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
