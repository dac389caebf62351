// Group-wise weight quantization of the store (int8, int4) and its inverse.
//
// A [rows, cols] matrix is quantized row by row in groups of `group`
// consecutive values (the last group of a row may be shorter). Each group has
// one f16 scale s; a value x is stored as q = round(x / s):
//   int8: symmetric, q in [-127, 127], s = absmax / 127.
//   int4: q in [-8, 7], s = m / -8 where m is the group's value of largest
//         magnitude (so m maps to -8 exactly); stored as q + 8 in a nibble,
//         even column in the low nibble, odd column in the high one, each row
//         padded to a whole byte.
// Dequantization is x' = s * q. Scales are [rows][ceil(cols / group)] f16.
#pragma once

#include <cstdint>

namespace paged {

inline constexpr int kDefaultInt8Group = 64;
inline constexpr int kDefaultInt4Group = 32;

inline int64_t GroupsPerRow(int64_t cols, int group) { return (cols + group - 1) / group; }

// x: [cols] floats of one row -> q: [cols] int8, scales: [GroupsPerRow] f16.
void QuantizeRowInt8(const float* x, int64_t cols, int group, int8_t* q, uint16_t* scales);
// x: [cols] -> q: [(cols + 1) / 2] packed nibbles, scales: [GroupsPerRow] f16.
void QuantizeRowInt4(const float* x, int64_t cols, int group, uint8_t* q, uint16_t* scales);

void DequantizeRowInt8(const int8_t* q, const uint16_t* scales, int64_t cols, int group,
                       float* out);
void DequantizeRowInt4(const uint8_t* q, const uint16_t* scales, int64_t cols, int group,
                       float* out);

}  // namespace paged
