#include "common/dtype.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace paged {

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kI8:
      return "int8";
    case DType::kI4:
      return "int4";
  }
  return "unknown";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI8, DType::kI4}) {
    if (name == DTypeName(t)) return t;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", std::string(name),
                                                 "' (expected f32, f16, bf16, int8 or int4)"));
}

bool IsQuantized(DType t) { return t == DType::kI8 || t == DType::kI4; }

uint64_t PayloadBytes(DType t, uint64_t rows, uint64_t cols) {
  switch (t) {
    case DType::kF32:
      return rows * cols * 4;
    case DType::kF16:
    case DType::kBF16:
      return rows * cols * 2;
    case DType::kI8:
      return rows * cols;
    case DType::kI4:
      return rows * ((cols + 1) / 2);
  }
  return 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return F32FromBits(sign);
    // Subnormal: normalise.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400) == 0);
    mant &= 0x3ff;
    return F32FromBits(sign | uint32_t(127 - 15 - e) << 23 | mant << 13);
  }
  if (exp == 31) return F32FromBits(sign | 0x7f800000u | mant << 13);
  return F32FromBits(sign | (exp + 127 - 15) << 23 | mant << 13);
}

uint16_t FloatToHalf(float f) {
  const uint32_t x = BitsFromF32(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN
    return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                       // below the smallest normal half
    if (ax < 0x33000000u) return sign;          // rounds to zero
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) ++r;
    return sign | uint16_t(r);
  }
  uint32_t r = ((ax >> 13) - ((127 - 15) << 10));
  const uint32_t rem = ax & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return sign | uint16_t(r);
}

uint16_t FloatToBf16(float f) {
  const uint32_t x = BitsFromF32(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);
  const uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return uint16_t((x + rounding) >> 16);
}

}  // namespace paged
