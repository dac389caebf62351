#include "common/dtype.h"

#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace paged {

namespace {

struct DTypeInfo {
  std::string_view name;
  int block_values;
  int block_bytes;
  bool block_format;
};

// Indexed by the DType value. Block geometries are ggml's (ggml-common.h).
constexpr DTypeInfo kDTypes[] = {
    {"f32", 1, 4, false},     {"f16", 1, 2, false},       {"bf16", 1, 2, false},
    {"int8", 1, 1, false},    {"int4", 2, 1, false},      {"q4_0", 32, 18, true},
    {"q4_1", 32, 20, true},   {"q5_0", 32, 22, true},     {"q5_1", 32, 24, true},
    {"q8_0", 32, 34, true},   {"q2_k", 256, 84, true},    {"q3_k", 256, 110, true},
    {"q4_k", 256, 144, true}, {"q5_k", 256, 176, true},   {"q6_k", 256, 210, true},
    {"iq4_nl", 32, 18, true}, {"iq4_xs", 256, 136, true}, {"mxfp4", 32, 17, true},
};
static_assert(std::size(kDTypes) == static_cast<size_t>(kLastDType) + 1);

const DTypeInfo* InfoOf(DType t) {
  const auto i = static_cast<uint32_t>(t);
  return i < std::size(kDTypes) ? &kDTypes[i] : nullptr;
}

}  // namespace

std::string_view DTypeName(DType t) {
  const DTypeInfo* info = InfoOf(t);
  return info != nullptr ? info->name : "unknown";
}

absl::StatusOr<DType> ParseDType(std::string_view name) {
  for (uint32_t i = 0; i < std::size(kDTypes); ++i) {
    if (name == kDTypes[i].name) return static_cast<DType>(i);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype '", std::string(name),
                   "' (expected f32, f16, bf16, int8, int4 or a block format such as q4_k)"));
}

bool IsQuantized(DType t) { return t == DType::kI8 || t == DType::kI4; }

bool IsBlockFormat(DType t) {
  const DTypeInfo* info = InfoOf(t);
  return info != nullptr && info->block_format;
}

int BlockValues(DType t) {
  const DTypeInfo* info = InfoOf(t);
  return info != nullptr ? info->block_values : 1;
}

int BlockBytes(DType t) {
  const DTypeInfo* info = InfoOf(t);
  return info != nullptr ? info->block_bytes : 0;
}

bool RowFits(DType t, int64_t cols) {
  return cols > 0 && (!IsBlockFormat(t) || cols % BlockValues(t) == 0);
}

uint64_t PayloadBytes(DType t, uint64_t rows, uint64_t cols) {
  const DTypeInfo* info = InfoOf(t);
  if (info == nullptr) return 0;
  const uint64_t bv = uint64_t(info->block_values);
  return rows * ((cols + bv - 1) / bv) * uint64_t(info->block_bytes);
}

double BitsPerWeight(DType t, int group) {
  const DTypeInfo* info = InfoOf(t);
  if (info == nullptr) return 0;
  const double bits = 8.0 * info->block_bytes / info->block_values;
  return IsQuantized(t) && group > 0 ? bits + 16.0 / group : bits;
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
