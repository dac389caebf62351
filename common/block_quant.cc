// Written from the format descriptions in block_quant.h. Each decoder takes
// one block and writes its values in order; the arithmetic is f32, one
// rounding per operation, in the order ggml's reference uses, so that the
// results are identical bit for bit (this file is compiled with
// -ffp-contract=off: a fused multiply-add would round once instead of twice).
#include "common/block_quant.h"

#include <cstring>

#include "common/check.h"

namespace paged {
namespace {

// The non-uniform 4-bit codebook of iq4_nl / iq4_xs.
constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
// e2m1 (fp4) values times two, indexed by the 4-bit code (sign in bit 3).
constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

inline uint16_t U16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float F16(const uint8_t* p) { return HalfToFloat(U16(p)); }

// Nibble k (0..31) of 16 packed bytes: low nibbles are values 0..15.
inline int Nibble(const uint8_t* qs, int k) { return k < 16 ? qs[k] & 15 : qs[k - 16] >> 4; }

// 2^(e - 128) as f32: half the E8M0 scale, since the table holds 2 * value.
inline float E8M0Half(uint8_t e) {
  // e 0 and 1 give the subnormals 2^-128 and 2^-127.
  return F32FromBits(e < 2 ? 0x00200000u << e : uint32_t(e - 1) << 23);
}

void Q4_0(const uint8_t* b, float* y) {
  const float d = F16(b);
  for (int k = 0; k < 32; ++k) y[k] = float(Nibble(b + 2, k) - 8) * d;
}

void Q4_1(const uint8_t* b, float* y) {
  const float d = F16(b), m = F16(b + 2);
  for (int k = 0; k < 32; ++k) y[k] = float(Nibble(b + 4, k)) * d + m;
}

void Q5_0(const uint8_t* b, float* y) {
  const float d = F16(b);
  const uint32_t qh = U32(b + 2);
  for (int k = 0; k < 32; ++k) {
    const int q = Nibble(b + 6, k) | int((qh >> k) & 1) << 4;
    y[k] = float(q - 16) * d;
  }
}

void Q5_1(const uint8_t* b, float* y) {
  const float d = F16(b), m = F16(b + 2);
  const uint32_t qh = U32(b + 4);
  for (int k = 0; k < 32; ++k) {
    const int q = Nibble(b + 8, k) | int((qh >> k) & 1) << 4;
    y[k] = float(q) * d + m;
  }
}

void Q8_0(const uint8_t* b, float* y) {
  const float d = F16(b);
  for (int k = 0; k < 32; ++k) y[k] = float(int8_t(b[2 + k])) * d;
}

void IQ4_NL(const uint8_t* b, float* y) {
  const float d = F16(b);
  for (int k = 0; k < 32; ++k) y[k] = d * float(kIq4Values[Nibble(b + 2, k)]);
}

void MXFP4(const uint8_t* b, float* y) {
  const float d = E8M0Half(b[0]);
  for (int k = 0; k < 32; ++k) y[k] = float(kMxfp4Values[Nibble(b + 1, k)]) * d;
}

void Q2_K(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* qs = b + 16;
  const float d = F16(b + 80), dmin = F16(b + 82);
  for (int j = 0; j < 16; ++j) {  // sub-blocks of 16
    const float dl = d * float(scales[j] & 15);
    const float ml = dmin * float(scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      const int k = 16 * j + i;
      const int q = (qs[32 * (k / 128) + k % 32] >> (2 * ((k % 128) / 32))) & 3;
      y[k] = dl * float(q) - ml;
    }
  }
}

void Q3_K(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* sc = b + 96;
  const float d = F16(b + 108);
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4;
    const int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
    const float dl = d * float((lo | hi << 4) - 32);
    for (int i = 0; i < 16; ++i) {
      const int k = 16 * j + i;
      const int shift = (k % 128) / 32;
      const int q = (qs[32 * (k / 128) + k % 32] >> (2 * shift)) & 3;
      const bool high = (hmask[k % 32] >> (4 * (k / 128) + shift)) & 1;
      y[k] = dl * float(q - (high ? 0 : 4));
    }
  }
}

// Scale and min of sub-block j (0..7) from the 12 packed bytes of q4_k / q5_k.
void ScaleMinK4(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
    *m = (s[j + 4] >> 4) | (s[j] >> 6) << 4;
  }
}

void Q4_K(const uint8_t* b, float* y) {
  const float d = F16(b), dmin = F16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qs = b + 16;
  for (int j = 0; j < 8; ++j) {  // sub-blocks of 32
    int sc = 0, m = 0;
    ScaleMinK4(scales, j, &sc, &m);
    const float dl = d * float(sc), ml = dmin * float(m);
    const uint8_t* q = qs + 32 * (j / 2);
    for (int i = 0; i < 32; ++i) {
      const int v = j % 2 == 0 ? q[i] & 15 : q[i] >> 4;
      y[32 * j + i] = dl * float(v) - ml;
    }
  }
}

void Q5_K(const uint8_t* b, float* y) {
  const float d = F16(b), dmin = F16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int j = 0; j < 8; ++j) {
    int sc = 0, m = 0;
    ScaleMinK4(scales, j, &sc, &m);
    const float dl = d * float(sc), ml = dmin * float(m);
    const uint8_t* q = qs + 32 * (j / 2);
    for (int i = 0; i < 32; ++i) {
      const int v = (j % 2 == 0 ? q[i] & 15 : q[i] >> 4) | ((qh[i] >> j) & 1) << 4;
      y[32 * j + i] = dl * float(v) - ml;
    }
  }
}

void Q6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = F16(b + 208);
  for (int j = 0; j < 16; ++j) {
    const float dl = d * float(scales[j]);
    for (int i = 0; i < 16; ++i) {
      const int k = 16 * j + i;
      const int h = k / 128, t = (k % 128) / 32, l = k % 32;
      const uint8_t lo_byte = ql[64 * h + 32 * (t % 2) + l];
      const int lo = t < 2 ? lo_byte & 15 : lo_byte >> 4;
      const int hi = (qh[32 * h + l] >> (2 * t)) & 3;
      y[k] = dl * float((lo | hi << 4) - 32);
    }
  }
}

void IQ4_XS(const uint8_t* b, float* y) {
  const float d = F16(b);
  const uint16_t scales_h = U16(b + 2);
  const uint8_t* scales_l = b + 4;
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 8; ++j) {
    const int ls = ((scales_l[j / 2] >> (4 * (j % 2))) & 15) | ((scales_h >> (2 * j)) & 3) << 4;
    const float dl = d * float(ls - 32);
    for (int i = 0; i < 32; ++i) y[32 * j + i] = dl * float(kIq4Values[Nibble(qs + 16 * j, i)]);
  }
}

using BlockFn = void (*)(const uint8_t*, float*);

BlockFn DecoderFor(DType t) {
  switch (t) {
    case DType::kQ4_0:
      return Q4_0;
    case DType::kQ4_1:
      return Q4_1;
    case DType::kQ5_0:
      return Q5_0;
    case DType::kQ5_1:
      return Q5_1;
    case DType::kQ8_0:
      return Q8_0;
    case DType::kQ2_K:
      return Q2_K;
    case DType::kQ3_K:
      return Q3_K;
    case DType::kQ4_K:
      return Q4_K;
    case DType::kQ5_K:
      return Q5_K;
    case DType::kQ6_K:
      return Q6_K;
    case DType::kIQ4_NL:
      return IQ4_NL;
    case DType::kIQ4_XS:
      return IQ4_XS;
    case DType::kMXFP4:
      return MXFP4;
    default:
      return nullptr;
  }
}

}  // namespace

bool HasSelfContainedRows(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || IsBlockFormat(t);
}

void DequantizeRow(DType t, const void* row, int64_t cols, float* out) {
  const auto* p = static_cast<const uint8_t*>(row);
  switch (t) {
    case DType::kF32:
      std::memcpy(out, p, size_t(cols) * 4);
      return;
    case DType::kF16:
      for (int64_t c = 0; c < cols; ++c) out[c] = HalfToFloat(U16(p + 2 * c));
      return;
    case DType::kBF16:
      for (int64_t c = 0; c < cols; ++c) out[c] = Bf16ToFloat(U16(p + 2 * c));
      return;
    default:
      break;
  }
  const BlockFn fn = DecoderFor(t);
  PAGED_CHECK(fn != nullptr, "DequantizeRow: ", std::string(DTypeName(t)),
              " rows are not self-contained");
  PAGED_CHECK(RowFits(t, cols), "DequantizeRow: ", cols, " values are not whole ",
              std::string(DTypeName(t)), " blocks");
  const int bv = BlockValues(t), bb = BlockBytes(t);
  for (int64_t i = 0; i < cols / bv; ++i) fn(p + i * bb, out + i * bv);
}

std::vector<int> BlockHalfFields(DType t) {
  switch (t) {
    case DType::kQ4_0:
    case DType::kQ5_0:
    case DType::kQ8_0:
    case DType::kIQ4_NL:
    case DType::kIQ4_XS:
      return {0};
    case DType::kQ4_1:
    case DType::kQ5_1:
    case DType::kQ4_K:
    case DType::kQ5_K:
      return {0, 2};
    case DType::kQ2_K:
      return {80, 82};
    case DType::kQ3_K:
      return {108};
    case DType::kQ6_K:
      return {208};
    default:
      return {};
  }
}

}  // namespace paged
