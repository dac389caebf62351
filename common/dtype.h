// Element types of tensors in the store, and scalar conversions.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include "absl/status/statusor.h"

namespace paged {

// Storage types of store tensors. kI8 / kI4 are group-quantized: a tensor of
// shape [rows, cols] holds q values plus one f16 scale per group of `group`
// consecutive values of a row (see common/quant.h).
enum class DType : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3, kI4 = 4 };

std::string_view DTypeName(DType t);
absl::StatusOr<DType> ParseDType(std::string_view name);  // "f32", "f16", "bf16", "int8", "int4"
bool IsQuantized(DType t);
// Bytes of the element payload of a [rows, cols] tensor (q values only for
// quantized types; int4 rows are padded to whole bytes).
uint64_t PayloadBytes(DType t, uint64_t rows, uint64_t cols);

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
