// Reference (scalar) decoding of store rows to f32, above all ggml's block
// formats as GGUF files store them, bit for bit what ggml's dequantize_row_*
// and gguf-py's gguf.quants.dequantize give.
//
// Layouts, little endian; d, dmin, m are f16; values within a block are
// numbered 0..BlockValues-1; "nibble k" of 16 bytes qs is qs[k] & 15 for
// k < 16 and qs[k - 16] >> 4 after (low nibbles first):
//
//   q4_0   32 in 18: d, qs[16]              x = d * (nibble - 8)
//   q4_1   32 in 20: d, m, qs[16]           x = d * nibble + m
//   q5_0   32 in 22: d, qh u32, qs[16]      x = d * ((nibble | bit k of qh << 4) - 16)
//   q5_1   32 in 24: d, m, qh u32, qs[16]   x = d * (nibble | bit k of qh << 4) + m
//   q8_0   32 in 34: d, int8 q[32]          x = d * q
//   iq4_nl 32 in 18: d, qs[16]              x = d * kIq4Values[nibble]
//   mxfp4  32 in 17: u8 e, qs[16]           x = E8M0Half(e) * kMxfp4Values[nibble]
//                    (E8M0Half(e) = 2^(e - 128), the e2m1 table doubled)
// The K formats have 256 values in sub-blocks of 16 or 32, each with its own
// scale, taken from the super-block's d (and dmin) times small integers:
//   q2_k   84: scales[16], qs[64], d, dmin. Value k: s = scales[k/16],
//          q = qs[32 * (k/128) + k%32] >> 2 * ((k%128)/32) & 3,
//          x = (d * (s & 15)) * q - dmin * (s >> 4).
//   q3_k  110: hmask[32], qs[64], scales[12] (16 6-bit scales), d. Value k:
//          q = (2 bits as q2_k) - (bit 4*(k/128) + (k%128)/32 of hmask[k%32] ? 0 : 4),
//          scale j = k/16: low 4 bits from scales[j%8] (low nibble j<8, high
//          j>=8), high 2 from scales[8 + j%4] >> 2*(j/4); x = (d * (scale - 32)) * q.
//   q4_k  144: d, dmin, scales[12] (8 6-bit scales and mins), qs[128]. Value k:
//          sub-block j = k/32, q = nibble (j%2 high) of qs[32 * (k/64) + k%32],
//          x = (d * sc_j) * q - dmin * m_j; for j < 4 sc_j = scales[j] & 63,
//          m_j = scales[j+4] & 63, else sc_j = scales[j+4] & 15 | (scales[j-4] >> 6) << 4,
//          m_j = scales[j+4] >> 4 | (scales[j] >> 6) << 4.
//   q5_k  176: d, dmin, scales[12], qh[32], qs[128]: q4_k plus bit k/32 of
//          qh[k%32] as the value's bit 4.
//   q6_k  210: ql[128], qh[64], int8 scales[16], d. Value k: h = k/128,
//          quarter t = (k%128)/32, l = k%32: low 4 bits are nibble (t/2 high)
//          of ql[64h + 32(t%2) + l], high 2 bits qh[32h + l] >> 2t & 3;
//          x = (d * scales[k/16]) * (q - 32).
//   iq4_xs 136: d, scales_h u16, scales_l[4], qs[128]. Sub-block j = k/32:
//          ls = (scales_l[j/2] >> 4*(j%2) & 15) | (scales_h >> 2j & 3) << 4,
//          x = (d * (ls - 32)) * kIq4Values[nibble k%32 of qs[16j..16j+16)].
// Every product and sum is one f32 operation in the order written (this
// file's .cc is built without floating-point contraction).
#pragma once

#include <cstdint>
#include <vector>

#include "common/dtype.h"

namespace paged {

// Every block format, in DType order.
inline constexpr DType kBlockFormats[] = {
    DType::kQ4_0,   DType::kQ4_1,   DType::kQ5_0, DType::kQ5_1, DType::kQ8_0,
    DType::kQ2_K,   DType::kQ3_K,   DType::kQ4_K, DType::kQ5_K, DType::kQ6_K,
    DType::kIQ4_NL, DType::kIQ4_XS, DType::kMXFP4};

// Byte offsets within a block of its f16 scale fields (d, and dmin or m)
// in the layouts above; none for mxfp4 (its scale is the E8M0 byte at 0) and
// for a type that is not a block format. For making test and benchmark
// blocks whose scales are finite.
std::vector<int> BlockHalfFields(DType t);

// Whether DequantizeRow reads `t`: f32, f16, bf16 and the block formats
// (int8 / int4 keep their scales apart: common/quant.h).
bool HasSelfContainedRows(DType t);

// Decodes one row of `cols` values of type `t` at `row` (PayloadBytes(t, 1,
// cols) bytes, any alignment) into out[cols]. Requires
// HasSelfContainedRows(t) and RowFits(t, cols).
void DequantizeRow(DType t, const void* row, int64_t cols, float* out);

}  // namespace paged
