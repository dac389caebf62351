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

// The values of paged::DType.
enum class ElemType : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3, kI4 = 4 };

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
  const void* data;    // [rows, cols] of type; int4: [rows, (cols + 1) / 2] bytes
  const void* scales;  // int8/int4: f16 [rows, ceil(cols / group)]
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
