#include "common/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "common/dtype.h"

namespace paged {
namespace {

// Each value comes back within half a quantization step of its group (the
// quantizer divides by the f16-rounded scale the reader multiplies by). The
// one exception is int4's asymmetric range [-8, 7]: a value on the side
// opposite the group's largest magnitude may clamp at 7 and be off by up to
// one whole step.
template <typename QuantFn, typename DequantFn>
void CheckErrorBound(QuantFn quant, DequantFn dequant, int64_t cols, int group, size_t qbytes,
                     float q_max) {
  std::mt19937 rng(cols * 31 + group);
  std::normal_distribution<float> dist(0.f, 0.05f);
  std::vector<float> x(cols), y(cols);
  for (auto& v : x) v = dist(rng);
  x[cols / 2] = 0.9f;  // an outlier in one group
  std::vector<uint8_t> q(qbytes);
  std::vector<uint16_t> s(GroupsPerRow(cols, group));
  quant(x.data(), cols, group, q.data(), s.data());
  dequant(q.data(), s.data(), cols, group, y.data());
  for (int64_t c = 0; c < cols; ++c) {
    const float scale = HalfToFloat(s[c / group]);
    const float step = std::fabs(scale);
    const float ratio = scale != 0.f ? x[c] / scale : 0.f;
    const float bound = ratio > q_max + 0.5f ? 1.0f : 0.5f;
    EXPECT_LE(std::fabs(x[c] - y[c]), bound * step * 1.001f + 1e-7f) << "col " << c;
  }
}

TEST(QuantTest, Int8ErrorBound) {
  for (int64_t cols : {1, 31, 64, 172, 1000}) {
    for (int group : {32, 64}) {
      CheckErrorBound(
          [](const float* x, int64_t n, int g, uint8_t* q, uint16_t* s) {
            QuantizeRowInt8(x, n, g, reinterpret_cast<int8_t*>(q), s);
          },
          [](const uint8_t* q, const uint16_t* s, int64_t n, int g, float* y) {
            DequantizeRowInt8(reinterpret_cast<const int8_t*>(q), s, n, g, y);
          },
          cols, group, size_t(cols), 127.f);
    }
  }
}

TEST(QuantTest, Int4ErrorBound) {
  for (int64_t cols : {1, 7, 32, 172, 1001}) {
    CheckErrorBound(QuantizeRowInt4, DequantizeRowInt4, cols, 32, size_t((cols + 1) / 2), 7.f);
  }
}

TEST(QuantTest, Int4UsesTheFullRangeAndExactZero) {
  std::vector<float> x = {-1.f, 0.f, 0.5f, 0.25f};
  std::vector<uint8_t> q(2);
  std::vector<uint16_t> s(1);
  QuantizeRowInt4(x.data(), 4, 32, q.data(), s.data());
  std::vector<float> y(4);
  DequantizeRowInt4(q.data(), s.data(), 4, 32, y.data());
  EXPECT_FLOAT_EQ(y[0], -1.f);  // the largest magnitude maps to -8 exactly
  EXPECT_EQ(y[1], 0.f);
  EXPECT_NEAR(y[2], 0.5f, 1.f / 16);
}

TEST(QuantTest, ZeroGroupsStayZero) {
  std::vector<float> x(40, 0.f), y(40);
  std::vector<int8_t> q(40);
  std::vector<uint16_t> s(2);
  QuantizeRowInt8(x.data(), 40, 32, q.data(), s.data());
  DequantizeRowInt8(q.data(), s.data(), 40, 32, y.data());
  for (float v : y) EXPECT_EQ(v, 0.f);
}

TEST(QuantTest, RelativeErrorOfRealisticWeights) {
  // Gaussian weights: int8 relative RMS error well under 1%, int4 under 15%.
  const int64_t cols = 4096;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.f, 0.02f);
  std::vector<float> x(cols), y8(cols), y4(cols);
  for (auto& v : x) v = dist(rng);
  std::vector<int8_t> q8(cols);
  std::vector<uint8_t> q4(cols / 2);
  std::vector<uint16_t> s8(GroupsPerRow(cols, kDefaultInt8Group)),
      s4(GroupsPerRow(cols, kDefaultInt4Group));
  QuantizeRowInt8(x.data(), cols, kDefaultInt8Group, q8.data(), s8.data());
  DequantizeRowInt8(q8.data(), s8.data(), cols, kDefaultInt8Group, y8.data());
  QuantizeRowInt4(x.data(), cols, kDefaultInt4Group, q4.data(), s4.data());
  DequantizeRowInt4(q4.data(), s4.data(), cols, kDefaultInt4Group, y4.data());
  double n = 0, e8 = 0, e4 = 0;
  for (int64_t c = 0; c < cols; ++c) {
    n += x[c] * x[c];
    e8 += (x[c] - y8[c]) * (x[c] - y8[c]);
    e4 += (x[c] - y4[c]) * (x[c] - y4[c]);
  }
  EXPECT_LT(std::sqrt(e8 / n), 0.01);
  EXPECT_LT(std::sqrt(e4 / n), 0.15);
}

}  // namespace
}  // namespace paged
