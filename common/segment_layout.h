// The shared-memory segment: the contract between paged-store and workers.
//
//   [ header (2 MiB) | global tensors | layer blocks | tokenizer | KV pool ]
//
// Every region starts 2 MiB aligned. Each transformer layer is ONE contiguous
// block of `layer_block_bytes` (a 2 MiB multiple) with the same internal
// layout (`layer_tensors`, offsets relative to the block), so any layer fits
// any device slot and one layer is one DMA. Workers map [0, kv_offset)
// read-only and the KV pool read-write.
//
// KV pool: layer-major. Block b of layer l starts at
//   kv_offset + (l * kv_n_blocks + b) * kv_block_bytes
// and holds K [block_tokens][n_kv_heads * head_dim] then V (same shape), in
// kv_dtype. Paging layer l's KV for a batch is a gather of that layer's blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/dtype.h"
#include "common/model_config.h"

namespace paged {

inline constexpr char kSegmentMagic[8] = {'P', 'A', 'G', 'E', 'D', 'S', 'G', '1'};
// 2: the tokenizer region holds a PGTOKEN1 bundle (common/tokenizer_bundle.h)
// with the chat template and HF tokenizer.json kinds, not a bare vocabulary.
inline constexpr uint32_t kLayoutVersion = 3;
inline constexpr uint64_t kSegmentAlign = 2ull << 20;  // 2 MiB
inline constexpr uint64_t kTensorAlign = 4096;         // tensors inside a block / region
inline constexpr uint64_t kHeaderRegionBytes = kSegmentAlign;
inline constexpr int kMaxLayerTensors = 16;
inline constexpr int kMaxGlobalTensors = 8;
inline constexpr int kTensorNameBytes = 32;

enum class SegmentState : uint32_t { kEmpty = 0, kLoading = 1, kReady = 2 };
std::string_view SegmentStateName(uint32_t state);

// Weight format of the layer matrices (the flag --weight-format; `native`
// resolves to f16 or bf16 before it gets here).
enum class WeightFormat : uint32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8 = 3, kInt4 = 4 };
std::string_view WeightFormatName(WeightFormat f);
DType WeightFormatDType(WeightFormat f);

// What the tokenizer region holds (common/tokenizer_bundle.h).
enum class TokenizerKind : uint32_t { kNone = 0, kSentencePieceGguf = 1, kHfJson = 2 };

// One tensor. For quantized dtypes `scale_offset` points at f16 scales
// [rows][ceil(cols / group)]; for the others scale_bytes == 0.
struct TensorEntry {
  char name[kTensorNameBytes];  // canonical name, NUL-terminated (see store/model_source.h)
  uint32_t dtype;               // DType
  uint32_t group;               // quantization group (values per scale), 0 if not quantized
  int64_t rows;                 // shape [rows, cols]; 1-D tensors have rows == 1
  int64_t cols;
  uint64_t offset;  // layer tensors: from the block start; globals: from the segment start
  uint64_t bytes;   // payload bytes
  uint64_t scale_offset;
  uint64_t scale_bytes;
  uint64_t checksum;  // FNV-1a 64 of payload then scales, as written

  std::string_view Name() const;
  DType Type() const { return static_cast<DType>(dtype); }
};

struct SegmentHeader {
  char magic[8];
  uint32_t layout_version;
  uint32_t header_bytes;  // sizeof(SegmentHeader) of the writer
  uint32_t state;         // SegmentState; written last with release order
  uint32_t pad0;
  uint64_t generation;  // bumped each time a store (re)builds the segment
  uint64_t total_bytes;

  // What was loaded, so that a restarted store can tell whether it matches.
  char model_path[512];
  char source_format[16];  // "safetensors" or "gguf"
  uint64_t model_fingerprint;
  uint64_t build_unix_time;

  ModelConfig model;
  uint32_t weight_format;  // WeightFormat of layer matrices
  uint32_t dense_dtype;    // DType of tok_embd / lm_head
  uint32_t norm_dtype;     // DType of norms and biases (always f32)
  uint32_t pad1;

  uint64_t globals_offset;
  uint64_t globals_bytes;
  uint32_t n_global_tensors;
  uint32_t n_layer_tensors;
  TensorEntry global_tensors[kMaxGlobalTensors];
  TensorEntry layer_tensors[kMaxLayerTensors];  // offsets relative to a block
  uint64_t layers_offset;
  uint64_t layer_block_bytes;  // stride between layer blocks (2 MiB multiple)
  uint64_t layer_used_bytes;   // bytes of a block that tensors occupy

  uint32_t tokenizer_kind;  // TokenizerKind
  uint32_t pad2;
  uint64_t tokenizer_offset;
  uint64_t tokenizer_bytes;

  uint64_t kv_offset;
  uint64_t kv_bytes;
  uint32_t kv_dtype;      // DType (f32 or f16/bf16)
  uint32_t block_tokens;  // tokens per KV block
  uint64_t kv_n_blocks;   // blocks per layer
  uint64_t kv_block_bytes;

  uint64_t header_checksum;  // FNV-1a 64 of the header up to this field
  // Weight bytes written so far: the store raises it while LOADING (relaxed
  // atomic stores; not covered by the checksum) and leaves it at the total.
  uint64_t loaded_bytes;

  uint64_t LayerOffset(int layer) const {
    return layers_offset + uint64_t(layer) * layer_block_bytes;
  }
  uint64_t KvBlockOffset(int layer, uint64_t block) const {
    return kv_offset + (uint64_t(layer) * kv_n_blocks + block) * kv_block_bytes;
  }
  const TensorEntry* FindGlobal(std::string_view name) const;
  const TensorEntry* FindLayerTensor(std::string_view name) const;
};

static_assert(sizeof(SegmentHeader) < kHeaderRegionBytes);
static_assert(std::is_trivially_copyable_v<SegmentHeader>);

uint64_t Fnv1a64(const void* data, size_t n, uint64_t seed = 1469598103934665603ull);
uint64_t HeaderChecksum(const SegmentHeader& h);

inline uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace paged
