// Types shared by the CUDA launchers and the backend class. No CUDA headers
// and no abseil: the .cu files include this with nvcc, the backend with g++.
// The mirror structs below repeat the layout of worker/engine/types.h (the
// backend static_asserts that they match) so kernels need not see abseil.
#pragma once

#include <cstdint>

// The CUDA runtime's own declaration (driver_types.h), repeated so that the
// launcher headers need no CUDA include.
typedef struct CUstream_st* cudaStream_t;

namespace paged::cuda {

// A cudaError_t value: 0 is cudaSuccess. Launchers return the first error of
// the API calls and launches they make.
using CudaError = int;

// The values of paged::DType: plain and group-quantized types, then the ggml
// block formats (common/block_quant.h), read as stored.
enum class ElemType : uint32_t {
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
inline constexpr ElemType kLastElemType = ElemType::kMXFP4;

inline bool IsBlockElem(ElemType t) {
  return uint32_t(t) >= uint32_t(ElemType::kQ4_0) && uint32_t(t) <= uint32_t(kLastElemType);
}

// Bytes of one element of f32 / f16 / bf16 / int8 (KV caches, activations).
inline int ElemBytes(ElemType t) { return t == ElemType::kF32 ? 4 : t == ElemType::kI8 ? 1 : 2; }

// paged::AttnSeq.
struct AttnSeqView {
  int32_t q_offset;
  int32_t n_new;
  int32_t start_pos;
  int32_t table_offset;
};

// paged::SamplingParams.
struct SamplingParamsView {
  float temperature;
  int32_t top_k;
  float top_p;
  uint64_t seed;
};

// A weight matrix [rows, cols] in device memory (paged::WeightRef).
struct MatrixView {
  const void* data;    // [rows, cols] of type; int4: [rows, (cols + 1) / 2] bytes; a block
                       // format: [rows, cols / block values] blocks, rows contiguous
  const void* scales;  // int8/int4: f16 [rows, ceil(cols / group)]; null for the others
  ElemType type;
  int group;
  int64_t rows;
  int64_t cols;
};

// One layer's paged KV cache (paged::KvLayerView): block b holds K
// [block_tokens][kv_dim] at base + b * block_bytes and V right after it.
struct KvView {
  void* base;
  ElemType type;  // f32, f16 or bf16
  int block_tokens;
  int kv_dim;
  uint64_t block_bytes;
  uint64_t n_blocks;
};

}  // namespace paged::cuda
