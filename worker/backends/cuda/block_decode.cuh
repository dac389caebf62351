// Device decoders of the ggml block formats as stored (layouts and the scalar
// reference in common/block_quant.h), one traits struct per format. Included
// by block_weights.cu only.
//
// A row is cut into units: one block, or one of kSlices fixed slices of a
// block. One thread loads a unit (Load: only the bytes it needs, with the
// widest loads the format's alignment allows) and decodes it as kRuns runs of
// kRunValues (16) consecutive values of the row (RunCol: the run's first
// column within the block). Every run shares one scale (and one offset for
// the formats with a min), so Decode gives the run as
//
//   q[i] exact small integers as f32, scale, offset
//
// and the stored value is exactly what DequantizeRow computes:
//   kHasMin:  fadd(fmul(scale, q[i]), offset)   (q4_1, q5_1: q * d + m;
//             q2_k, q4_k, q5_k: dl * q - ml, offset = -ml)
//   else:     fmul(scale, q[i])                 (d * q, dl * q)
// with the same f16 -> f32 conversions and the same integer arithmetic for the
// sub-block scales (Exact below; __fmul_rn / __fadd_rn are never contracted
// into a fused multiply-add). The fused GEMV uses the same q, scale and offset
// but sums scale * (q . x) (no min) or fma(scale, q, offset) . x (min).
//
// Integers become floats without the conversion unit (a quarter of the FP32
// rate on sm_90): the byte b placed in the mantissa of 2^23 (one PRMT) is the
// float 2^23 + b exactly, and one subtraction leaves b - bias. The 4-bit
// codebooks (iq4_nl / iq4_xs, mxfp4) live in __constant__ memory; a kernel
// copies them into registers once and looks 8 entries up with 6 PRMTs.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace paged::cuda::blockq {

inline constexpr int kRunValues = 16;
inline constexpr float kMagic = 8388608.f;  // 2^23

// ---- codebooks -----------------------------------------------------------------

// Entry i of a 4-bit codebook, biased by +128, is byte i % 4 of word i / 4.
struct Codebook {
  uint32_t t[4];
};

constexpr uint32_t PackBiased(const int (&v)[16], int w) {
  return uint32_t(v[4 * w] + 128) | uint32_t(v[4 * w + 1] + 128) << 8 |
         uint32_t(v[4 * w + 2] + 128) << 16 | uint32_t(v[4 * w + 3] + 128) << 24;
}

// common/block_quant.cc's tables: iq4_nl / iq4_xs values, and e2m1 times two.
inline constexpr int kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                       1,    13,   25,  38,  53,  69,  89,  113};
inline constexpr int kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static __constant__ uint32_t kIq4Book[4] = {PackBiased(kIq4Values, 0), PackBiased(kIq4Values, 1),
                                            PackBiased(kIq4Values, 2), PackBiased(kIq4Values, 3)};
static __constant__ uint32_t kMxfp4Book[4] = {
    PackBiased(kMxfp4Values, 0), PackBiased(kMxfp4Values, 1), PackBiased(kMxfp4Values, 2),
    PackBiased(kMxfp4Values, 3)};

enum Book { kNoBook = 0, kIq4 = 1, kMxfp4 = 2 };

template <int kBook>
__device__ __forceinline__ Codebook LoadBook() {
  Codebook cb{};
  if constexpr (kBook == kIq4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) cb.t[i] = kIq4Book[i];
  } else if constexpr (kBook == kMxfp4) {
#pragma unroll
    for (int i = 0; i < 4; ++i) cb.t[i] = kMxfp4Book[i];
  }
  return cb;
}

// The biased entries of the 8 nibbles of q: r0 = nibbles 0..3 (byte 0 low,
// byte 0 high, byte 1 low, byte 1 high), r1 = nibbles 4..7. __byte_perm reads
// the low 3 bits of each selector nibble; bit 3 picks the upper half table.
__device__ __forceinline__ void Lookup8(uint32_t q, const Codebook& cb, uint32_t& r0,
                                        uint32_t& r1) {
  const uint32_t q1 = q >> 16;
  r0 = __byte_perm(__byte_perm(cb.t[0], cb.t[1], q), __byte_perm(cb.t[2], cb.t[3], q),
                   0x3210u | ((q & 0x8888u) >> 1));
  r1 = __byte_perm(__byte_perm(cb.t[0], cb.t[1], q1), __byte_perm(cb.t[2], cb.t[3], q1),
                   0x3210u | ((q1 & 0x8888u) >> 1));
}

// ---- loads ---------------------------------------------------------------------

__device__ __forceinline__ uint32_t Ld8(const uint8_t* p) { return __ldg(p); }
__device__ __forceinline__ uint32_t Ld16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}
__device__ __forceinline__ uint32_t Ld32(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// w[i] = the little-endian word of bytes [p + 4i, p + 4i + 4), p aligned to
// kAlign bytes. Under 4: 4-byte loads from p rounded down to 4 (the bytes
// before p are in the same allocation: allocations start aligned) and the
// last (p & 3) bytes by 2- and 1-byte loads, so nothing past p + 4 NW is read;
// funnel shifts realign.
template <int NW, int kAlign>
__device__ __forceinline__ void LoadWords(const uint8_t* p, uint32_t (&w)[NW]) {
  if constexpr (kAlign >= 16 && NW % 4 == 0) {
#pragma unroll
    for (int i = 0; i < NW / 4; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p) + i);
      w[4 * i] = v.x;
      w[4 * i + 1] = v.y;
      w[4 * i + 2] = v.z;
      w[4 * i + 3] = v.w;
    }
  } else if constexpr (kAlign >= 8 && NW % 2 == 0) {
#pragma unroll
    for (int i = 0; i < NW / 2; ++i) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(p) + i);
      w[2 * i] = v.x;
      w[2 * i + 1] = v.y;
    }
  } else if constexpr (kAlign >= 4) {
#pragma unroll
    for (int i = 0; i < NW; ++i) w[i] = Ld32(p + 4 * i);
  } else {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(p);
    const uint8_t* a = reinterpret_cast<const uint8_t*>(addr & ~uintptr_t(3));
    const uint32_t mis = uint32_t(addr & 3);  // 0 or 2 when kAlign == 2
    uint32_t raw[NW + 1];
#pragma unroll
    for (int i = 0; i < NW; ++i) raw[i] = Ld32(a + 4 * i);
    const uint8_t* tail = a + 4 * NW;
    uint32_t last = 0;
    if (mis & 2) last = Ld16(tail);
    if constexpr (kAlign == 1) {
      if (mis & 1) last |= Ld8(tail + (mis & 2)) << (8 * (mis & 2));
    }
    raw[NW] = last;
#pragma unroll
    for (int i = 0; i < NW; ++i) w[i] = __funnelshift_r(raw[i], raw[i + 1], 8 * mis);
  }
}

// ---- conversions -----------------------------------------------------------------

__device__ __forceinline__ float F16(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffffu)));
}

// Byte i of v minus (base - 2^23), exactly (for base - 2^23 a small integer).
__device__ __forceinline__ float ByteF(uint32_t v, int i, float base) {
  return __fsub_rn(__uint_as_float(__byte_perm(v, 0x4b000000u, 0x7440u | unsigned(i))), base);
}

// q[4k + i] = byte i of v[k] - (base - 2^23).
__device__ __forceinline__ void Bytes16(const uint32_t (&v)[4], float base, float (&q)[16]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
#pragma unroll
    for (int i = 0; i < 4; ++i) q[4 * k + i] = ByteF(v[k], i, base);
  }
}

// The entries of the 16 low (r = 0) or high (r = 1) nibbles of the bytes of
// q[0..3] (byte 4k + i -> value 4k + i), as signed values.
__device__ __forceinline__ void Book16(const uint32_t (&q)[4], int r, const Codebook& cb,
                                       float (&out)[16]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    uint32_t r0, r1;
    Lookup8(q[k], cb, r0, r1);
    out[4 * k + 0] = ByteF(r0, r, kMagic + 128.f);
    out[4 * k + 1] = ByteF(r0, 2 + r, kMagic + 128.f);
    out[4 * k + 2] = ByteF(r1, r, kMagic + 128.f);
    out[4 * k + 3] = ByteF(r1, 2 + r, kMagic + 128.f);
  }
}

// Bits 0..3 of x moved to bit 0 of bytes 0..3.
__device__ __forceinline__ uint32_t Spread4(uint32_t x) { return (x * 0x00204081u) & 0x01010101u; }

// 2^(e - 128): half the E8M0 scale (the mxfp4 table holds twice the value);
// e 0 and 1 are the f32 subnormals 2^-128 and 2^-127.
__device__ __forceinline__ float E8M0Half(uint32_t e) {
  return __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
}

// Byte (2 (t & 1) + p) of w: the scale of run t of a slice with parity p,
// where a slice's 4 (q2_k, q3_k, q6_k) scales are bytes 2t + p of 8.
__device__ __forceinline__ uint32_t RunByte(uint32_t w, int t, int p) {
  return (w >> (8 * (2 * (t & 1) + p))) & 0xffu;
}

// ---- the formats ------------------------------------------------------------------
//
// Each: kValues / kBytes per block, kAlign (the alignment of every block when
// the row data is aligned to it), kSlices units per block, kRuns runs of 16
// per unit, kHasMin, kBook; Raw, Load(block, slice), RunCol(slice, run),
// Decode(raw, slice, run, codebook, q, scale, offset). Value k of a block
// below is the k-th value of block_quant.h's description.

// 32 values d * (nibble - 8); one unit: values 0..15 (low nibbles), 16..31.
struct Q4_0 {
  static constexpr int kValues = 32, kBytes = 18, kAlign = 2, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t d, q[4];
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    r.d = Ld16(b);
    LoadWords<4, 2>(b + 2, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = (w.q[k] >> (4 * r)) & 0x0f0f0f0fu;
    Bytes16(v, kMagic + 8.f, q);
    scale = F16(w.d);
    offset = 0.f;
  }
};

// 32 values nibble * d + m.
struct Q4_1 {
  static constexpr int kValues = 32, kBytes = 20, kAlign = 4, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = true;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t dm, q[4];
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    r.dm = Ld32(b);
    LoadWords<4, 4>(b + 4, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = (w.q[k] >> (4 * r)) & 0x0f0f0f0fu;
    Bytes16(v, kMagic, q);
    scale = F16(w.dm);
    offset = F16(w.dm >> 16);
  }
};

// 32 values d * ((nibble | bit k of qh << 4) - 16).
struct Q5_0 {
  static constexpr int kValues = 32, kBytes = 22, kAlign = 2, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t d, w[5];  // w[0]: qh, w[1..4]: qs
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    r.d = Ld16(b);
    LoadWords<5, 2>(b + 2, r.w);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[k] = ((w.w[1 + k] >> (4 * r)) & 0x0f0f0f0fu) | Spread4((w.w[0] >> (16 * r + 4 * k)) & 15u)
                                                           << 4;
    }
    Bytes16(v, kMagic + 16.f, q);
    scale = F16(w.d);
    offset = 0.f;
  }
};

// 32 values (nibble | bit k of qh << 4) * d + m.
struct Q5_1 {
  static constexpr int kValues = 32, kBytes = 24, kAlign = 8, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = true;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t w[6];  // d | m << 16, qh, qs[16]
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    LoadWords<6, 8>(b, r.w);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[k] = ((w.w[2 + k] >> (4 * r)) & 0x0f0f0f0fu) | Spread4((w.w[1] >> (16 * r + 4 * k)) & 15u)
                                                           << 4;
    }
    Bytes16(v, kMagic, q);
    scale = F16(w.w[0]);
    offset = F16(w.w[0] >> 16);
  }
};

// 32 values d * int8.
struct Q8_0 {
  static constexpr int kValues = 32, kBytes = 34, kAlign = 2, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t d, q[8];
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    r.d = Ld16(b);
    LoadWords<8, 2>(b + 2, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = w.q[4 * r + k] ^ 0x80808080u;  // int8 + 128
    Bytes16(v, kMagic + 128.f, q);
    scale = F16(w.d);
    offset = 0.f;
  }
};

// 32 values d * kIq4Values[nibble].
struct IQ4_NL {
  static constexpr int kValues = 32, kBytes = 18, kAlign = 2, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kIq4;
  using Raw = Q4_0::Raw;
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) { return Q4_0::Load(b, s); }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook& cb,
                                                float (&q)[16], float& scale, float& offset) {
    Book16(w.q, r, cb, q);
    scale = F16(w.d);
    offset = 0.f;
  }
};

// 32 values kMxfp4Values[nibble] * 2^(e - 128).
struct MXFP4 {
  static constexpr int kValues = 32, kBytes = 17, kAlign = 1, kSlices = 1, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kMxfp4;
  struct Raw {
    uint32_t e, q[4];
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    r.e = Ld8(b);
    LoadWords<4, 1>(b + 1, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int r) { return 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int r, const Codebook& cb,
                                                float (&q)[16], float& scale, float& offset) {
    Book16(w.q, r, cb, q);
    scale = E8M0Half(w.e);
    offset = 0.f;
  }
};

// 256 values in 16 sub-blocks of 16. Slice s = 2h + p (h = k / 128, p =
// k % 32 / 16): qs bytes [16s, 16s + 16), whose 2-bit fields t = 0..3 are
// the runs at 128h + 32t + 16p, sub-block j = 8h + 2t + p.
struct Q2_K {
  static constexpr int kValues = 256, kBytes = 84, kAlign = 4, kSlices = 4, kRuns = 4;
  static constexpr bool kHasMin = true;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t q[4], sc[2], dm;  // sc: scales[8h, 8h + 8)
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    Raw r;
    LoadWords<4, 4>(b + 16 + 16 * s, r.q);
    LoadWords<2, 4>(b + 8 * (s >> 1), r.sc);
    r.dm = Ld32(b + 80);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int t) {
    return 128 * (s >> 1) + 32 * t + 16 * (s & 1);
  }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int t, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = (w.q[k] >> (2 * t)) & 0x03030303u;
    Bytes16(v, kMagic, q);
    const uint32_t sb = RunByte(w.sc[t >> 1], t, s & 1);
    scale = __fmul_rn(F16(w.dm), float(sb & 15u));
    offset = -__fmul_rn(F16(w.dm >> 16), float(sb >> 4));
  }
};

// q2_k's geometry plus the high bit from hmask[k % 32] (bit 4h + t) and
// 6-bit scales.
struct Q3_K {
  static constexpr int kValues = 256, kBytes = 110, kAlign = 2, kSlices = 4, kRuns = 4;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t q[4], hm[4], sc[3], d;  // hm: hmask[16p, 16p + 16)
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    Raw r;
    LoadWords<4, 2>(b + 32 + 16 * s, r.q);
    LoadWords<4, 2>(b + 16 * (s & 1), r.hm);
    LoadWords<3, 2>(b + 96, r.sc);
    r.d = Ld16(b + 108);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int t) { return Q2_K::RunCol(s, t); }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int t, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    const int h = s >> 1, p = s & 1;
    uint32_t v[4];  // q + 4: the 2 low bits, plus 4 where the hmask bit is set
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[k] = ((w.q[k] >> (2 * t)) & 0x03030303u) | ((w.hm[k] >> (4 * h + t)) & 0x01010101u) << 2;
    }
    Bytes16(v, kMagic + 4.f, q);
    // Sub-block j = 8h + 2t + p: low 4 bits from scales[2t + p] (high nibble
    // when h = 1), high 2 from scales[8 + j % 4] >> 2 (j / 4).
    const uint32_t lo = (RunByte(w.sc[t >> 1], t, p) >> (4 * h)) & 15u;
    const uint32_t hi = (RunByte(w.sc[2], t, p) >> (2 * (2 * h + (t >> 1)))) & 3u;
    scale = __fmul_rn(F16(w.d), float(int(lo | hi << 4) - 32));
    offset = 0.f;
  }
};

// Scale and min of sub-block j (0..7) of q4_k / q5_k from the header words
// hd[1..3] (scales[0..12)).
__device__ __forceinline__ void ScaleMinK4(const uint32_t (&hd)[4], int j, uint32_t& sc,
                                           uint32_t& m) {
  const int sh = 8 * (j & 3);
  const uint32_t a = (hd[1] >> sh) & 0xffu;  // scales[j % 4]
  const uint32_t b = (hd[2] >> sh) & 0xffu;  // scales[j % 4 + 4]
  const uint32_t c = (hd[3] >> sh) & 0xffu;  // scales[j % 4 + 8]
  if (j < 4) {
    sc = a & 63u;
    m = b & 63u;
  } else {
    sc = (c & 15u) | (a >> 6) << 4;
    m = (c >> 4) | (b >> 6) << 4;
  }
}

// 256 values in 8 sub-blocks of 32. Slice s (g = s / 2, p = s % 2): qs bytes
// [16s, 16s + 16); low nibbles are run 0 (sub-block 2g, columns 64g + 16p +
// [0, 16)), high nibbles run 1 (sub-block 2g + 1, 32 columns on).
struct Q4_K {
  static constexpr int kValues = 256, kBytes = 144, kAlign = 16, kSlices = 8, kRuns = 2;
  static constexpr bool kHasMin = true;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t hd[4], q[4];  // hd: d | dmin << 16, scales[12]
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    Raw r;
    LoadWords<4, 16>(b, r.hd);
    LoadWords<4, 16>(b + 16 + 16 * s, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int r) {
    return 64 * (s >> 1) + 32 * r + 16 * (s & 1);
  }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = (w.q[k] >> (4 * r)) & 0x0f0f0f0fu;
    Bytes16(v, kMagic, q);
    uint32_t sc, m;
    ScaleMinK4(w.hd, 2 * (s >> 1) + r, sc, m);
    scale = __fmul_rn(F16(w.hd[0]), float(sc));
    offset = -__fmul_rn(F16(w.hd[0] >> 16), float(m));
  }
};

// q4_k plus bit j of qh[k % 32] as the value's bit 4.
struct Q5_K {
  static constexpr int kValues = 256, kBytes = 176, kAlign = 16, kSlices = 8, kRuns = 2;
  static constexpr bool kHasMin = true;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t hd[4], qh[4], q[4];  // qh: qh[16p, 16p + 16)
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    Raw r;
    LoadWords<4, 16>(b, r.hd);
    LoadWords<4, 16>(b + 16 + 16 * (s & 1), r.qh);
    LoadWords<4, 16>(b + 48 + 16 * s, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int r) { return Q4_K::RunCol(s, r); }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int r, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    const int j = 2 * (s >> 1) + r;
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      v[k] = ((w.q[k] >> (4 * r)) & 0x0f0f0f0fu) | ((w.qh[k] >> j) & 0x01010101u) << 4;
    Bytes16(v, kMagic, q);
    uint32_t sc, m;
    ScaleMinK4(w.hd, j, sc, m);
    scale = __fmul_rn(F16(w.hd[0]), float(sc));
    offset = -__fmul_rn(F16(w.hd[0] >> 16), float(m));
  }
};

// 256 values in 16 sub-blocks of 16. Slice s = 2h + p: l = k % 32 in
// [16p, 16p + 16); run t (columns 128h + 32t + 16p) takes nibble t / 2 of
// ql[64h + 32 (t % 2) + l] and bits 2t of qh[32h + l].
struct Q6_K {
  static constexpr int kValues = 256, kBytes = 210, kAlign = 2, kSlices = 4, kRuns = 4;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t ql0[4], ql1[4], qh[4], sc[2], d;  // sc: scales[8h, 8h + 8)
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    const int h = s >> 1, p = s & 1;
    Raw r;
    LoadWords<4, 2>(b + 64 * h + 16 * p, r.ql0);
    LoadWords<4, 2>(b + 64 * h + 32 + 16 * p, r.ql1);
    LoadWords<4, 2>(b + 128 + 32 * h + 16 * p, r.qh);
    LoadWords<2, 2>(b + 192 + 8 * h, r.sc);
    r.d = Ld16(b + 208);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int t) { return Q2_K::RunCol(s, t); }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int t, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
    uint32_t v[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t l = (t & 1) ? w.ql1[k] : w.ql0[k];
      v[k] = ((l >> (4 * (t >> 1))) & 0x0f0f0f0fu) | ((w.qh[k] >> (2 * t)) & 0x03030303u) << 4;
    }
    Bytes16(v, kMagic + 32.f, q);
    const int8_t sc = int8_t(RunByte(w.sc[t >> 1], t, s & 1));
    scale = __fmul_rn(F16(w.d), float(sc));
    offset = 0.f;
  }
};

// 256 values in 8 sub-blocks of 32 with 6-bit scales and the iq4 codebook.
// Slice s = sub-block j: qs bytes [16j, 16j + 16), low nibbles then high.
struct IQ4_XS {
  static constexpr int kValues = 256, kBytes = 136, kAlign = 8, kSlices = 8, kRuns = 2;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kIq4;
  struct Raw {
    uint32_t hd[2], q[4];  // hd: d | scales_h << 16, scales_l[4]
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int s) {
    Raw r;
    LoadWords<2, 8>(b, r.hd);
    LoadWords<4, 8>(b + 8 + 16 * s, r.q);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int s, int r) { return 32 * s + 16 * r; }
  static __device__ __forceinline__ void Decode(const Raw& w, int s, int r, const Codebook& cb,
                                                float (&q)[16], float& scale, float& offset) {
    Book16(w.q, r, cb, q);
    const uint32_t ls = ((w.hd[1] >> (4 * s)) & 15u) | ((w.hd[0] >> (16 + 2 * s)) & 3u) << 4;
    scale = __fmul_rn(F16(w.hd[0]), float(int(ls) - 32));
    offset = 0.f;
  }
};

// The stored values of a decoded run, bit for bit DequantizeRow's.
template <class F>
__device__ __forceinline__ void Exact(float (&q)[16], float scale, float offset) {
#pragma unroll
  for (int i = 0; i < kRunValues; ++i)
    q[i] = F::kHasMin ? __fadd_rn(__fmul_rn(scale, q[i]), offset) : __fmul_rn(scale, q[i]);
}

// ---- plain 16-bit rows ------------------------------------------------------------
//
// Not block formats: the grouped GEMV (LaunchGroupedGemv) reads f16 and bf16
// experts through the same traits, a "block" being 16 values (32 bytes),
// scale 1 (the product sums q . x as is).

template <bool kBf16>
struct Plain16 {
  static constexpr int kValues = 16, kBytes = 32, kAlign = 16, kSlices = 1, kRuns = 1;
  static constexpr bool kHasMin = false;
  static constexpr int kBook = kNoBook;
  struct Raw {
    uint32_t w[8];
  };
  static __device__ __forceinline__ Raw Load(const uint8_t* b, int) {
    Raw r;
    LoadWords<8, 16>(b, r.w);
    return r;
  }
  static __device__ __forceinline__ int RunCol(int, int) { return 0; }
  static __device__ __forceinline__ void Decode(const Raw& w, int, int, const Codebook&,
                                                float (&q)[16], float& scale, float& offset) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if constexpr (kBf16) {
        q[2 * k] = __uint_as_float(w.w[k] << 16);
        q[2 * k + 1] = __uint_as_float(w.w[k] & 0xffff0000u);
      } else {
        q[2 * k] = F16(w.w[k]);
        q[2 * k + 1] = F16(w.w[k] >> 16);
      }
    }
    scale = 1.f;
    offset = 0.f;
  }
};
using F16Rows = Plain16<false>;
using BF16Rows = Plain16<true>;

}  // namespace paged::cuda::blockq
