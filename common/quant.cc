#include "common/quant.h"

#include <algorithm>
#include <cmath>

#include "common/dtype.h"

namespace paged {

void QuantizeRowInt8(const float* x, int64_t cols, int group, int8_t* q, uint16_t* scales) {
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group, ++gi) {
    const int64_t g1 = std::min<int64_t>(cols, g0 + group);
    float amax = 0.f;
    for (int64_t c = g0; c < g1; ++c) amax = std::max(amax, std::fabs(x[c]));
    // Quantize against the f16-rounded scale the reader will use.
    const uint16_t s16 = FloatToHalf(amax / 127.f);
    scales[gi] = s16;
    const float s = HalfToFloat(s16);
    const float inv = s > 0.f ? 1.f / s : 0.f;
    for (int64_t c = g0; c < g1; ++c) {
      const float v = std::nearbyint(x[c] * inv);
      q[c] = static_cast<int8_t>(std::clamp(v, -127.f, 127.f));
    }
  }
}

void QuantizeRowInt4(const float* x, int64_t cols, int group, uint8_t* q, uint16_t* scales) {
  std::fill(q, q + (cols + 1) / 2, uint8_t{0x88});  // padding nibble decodes to 0
  for (int64_t g0 = 0, gi = 0; g0 < cols; g0 += group, ++gi) {
    const int64_t g1 = std::min<int64_t>(cols, g0 + group);
    float m = 0.f;
    for (int64_t c = g0; c < g1; ++c) {
      if (std::fabs(x[c]) > std::fabs(m)) m = x[c];
    }
    const uint16_t s16 = FloatToHalf(m / -8.f);
    scales[gi] = s16;
    const float s = HalfToFloat(s16);
    const float inv = s != 0.f ? 1.f / s : 0.f;
    for (int64_t c = g0; c < g1; ++c) {
      const int v = static_cast<int>(std::clamp(std::nearbyint(x[c] * inv), -8.f, 7.f)) + 8;
      uint8_t& byte = q[c / 2];
      byte = (c & 1) ? uint8_t((byte & 0x0f) | (v << 4)) : uint8_t((byte & 0xf0) | v);
    }
  }
}

void DequantizeRowInt8(const int8_t* q, const uint16_t* scales, int64_t cols, int group,
                       float* out) {
  for (int64_t c = 0; c < cols; ++c) out[c] = HalfToFloat(scales[c / group]) * q[c];
}

void DequantizeRowInt4(const uint8_t* q, const uint16_t* scales, int64_t cols, int group,
                       float* out) {
  for (int64_t c = 0; c < cols; ++c) {
    const int nib = (c & 1) ? (q[c / 2] >> 4) : (q[c / 2] & 0x0f);
    out[c] = HalfToFloat(scales[c / group]) * float(nib - 8);
  }
}

}  // namespace paged
