// Element types of tensors in the store, and scalar conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace paged {

// Storage types of store tensors.
//
// kI8 / kI4 are group-quantized: a tensor of shape [rows, cols] holds q values
// plus one f16 scale per group of `group` consecutive values of a row, in a
// separate scale array (see common/quant.h).
//
// The block formats (IsBlockFormat) are ggml's, kept as a GGUF file stores
// them: each row is a sequence of blocks of BlockValues(t) consecutive values
// in BlockBytes(t) bytes, each block carrying its own scales, so a row is
// self-contained and rows are contiguous. Their layouts and the reference
// dequantization are in common/block_quant.h.
enum class DType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kI8 = 3,
  kI4 = 4,
  kQ4_0 = 5,
  kQ4_1 = 6,
  kQ5_0 = 7,
  kQ5_1 = 8,
  kQ8_0 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kIQ4_NL = 15,
  kIQ4_XS = 16,
  kMXFP4 = 17,
};
inline constexpr DType kLastDType = DType::kMXFP4;
// True for ids of a DType (a header's uint32 field).
inline bool IsDTypeId(uint32_t id) { return id <= static_cast<uint32_t>(kLastDType); }

// "f32", "f16", "bf16", "int8", "int4", "q4_0", ..., "q4_k", "iq4_xs", "mxfp4".
std::string_view DTypeName(DType t);
absl::StatusOr<DType> ParseDType(std::string_view name);
// Group-quantized with a separate scale array (int8, int4).
bool IsQuantized(DType t);
// A ggml block format: scales inside the blocks, no scale array.
bool IsBlockFormat(DType t);
// Row geometry: BlockValues(t) consecutive values of a row take BlockBytes(t)
// bytes (f32: 1 and 4; int4: 2 values in 1 byte; q4_k: 256 values in 144
// bytes). For the block formats a row must hold a whole number of blocks
// (RowFits).
int BlockValues(DType t);
int BlockBytes(DType t);
// Whether a row of `cols` values can be stored as `t` (block formats need a
// multiple of BlockValues; every other type takes any cols > 0).
bool RowFits(DType t, int64_t cols);
// Bytes of the element payload of a [rows, cols] tensor (q values only for
// int8 / int4; int4 rows are padded to whole bytes; block rows are
// ceil(cols / BlockValues) blocks, exact when RowFits).
uint64_t PayloadBytes(DType t, uint64_t rows, uint64_t cols);
// Storage bits per weight, scales included (int8 / int4: one f16 scale per
// `group` values; `group` is ignored for the other types).
double BitsPerWeight(DType t, int group = 0);

inline float F32FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
inline uint32_t BitsFromF32(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);  // round to nearest even, saturating to inf
inline float Bf16ToFloat(uint16_t h) { return F32FromBits(uint32_t{h} << 16); }
uint16_t FloatToBf16(float f);  // round to nearest even, NaN kept NaN

}  // namespace paged
