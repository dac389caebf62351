#include "common/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/size_flag.h"

namespace paged {
namespace {

TEST(DTypeTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << "half bits " << h << " -> " << f;
  }
}

TEST(DTypeTest, HalfKnownValuesAndRounding) {
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);               // rounds to inf
  EXPECT_EQ(FloatToHalf(1e-8f), 0x0000);
  // 1 + 2^-11 is half way between 1 and the next half: ties to even (1).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_TRUE(std::isinf(HalfToFloat(FloatToHalf(std::numeric_limits<float>::infinity()))));
}

TEST(DTypeTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToFloat(0x3f80), 1.0f);
  // 1 + 2^-8 is half way between bf16 1 and 1 + 2^-7: ties to even.
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  for (uint32_t b = 0; b < 0x10000; b += 7) {
    const float f = Bf16ToFloat(uint16_t(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(FloatToBf16(f), b);
    }
  }
}

TEST(DTypeTest, ParseNamesAndPayloadSizes) {
  EXPECT_EQ(*ParseDType("int4"), DType::kI4);
  EXPECT_FALSE(ParseDType("fp8").ok());
  EXPECT_EQ(PayloadBytes(DType::kI4, 3, 5), 9u);  // rows padded to whole bytes
  EXPECT_EQ(PayloadBytes(DType::kBF16, 3, 5), 30u);
}

TEST(SizeFlagTest, ParsesUnits) {
  EXPECT_EQ(*ParseByteSize("4GiB"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("512m"), 512ull << 20);
  EXPECT_EQ(*ParseByteSize("2GB"), 2000000000ull);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), 3ull << 29);
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  for (const char* bad : {"", "GiB", "-1GiB", "4 parsecs", "1e3", "99999999999TiB"}) {
    auto r = ParseByteSize(bad, "gpu-budget");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--gpu-budget"), std::string::npos);
  }
  EXPECT_EQ(FormatBytes(4ull << 30), "4.00 GiB");
}

}  // namespace
}  // namespace paged
