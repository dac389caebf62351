// The shared-memory segment: the contract between paged-store and workers.
//
//   [ header (2 MiB) | global tensors | layer blocks | tokenizer | KV pool ]
//
// Every region starts 2 MiB aligned. Each transformer layer is ONE contiguous
// block; blocks are `layer_block_bytes` apart (the largest layer rounded up to
// 2 MiB), so any layer fits any device slot and one layer is one DMA. Each
// layer has its own tensor table (`layers[l]`, offsets relative to its block):
// layers may differ in their tensors' types and sizes (a GGUF Q4_K_M file
// keeps some layers' matrices in Q6_K). Workers map [0, kv_offset) read-only
// and the KV pool read-write.
//
// KV pool: layer-major. Block b of layer l starts at
//   kv_offset + (l * kv_n_blocks + b) * kv_block_bytes
// and holds K [block_tokens][n_kv_heads * head_dim] then V (same shape), in
// kv_dtype. Paging layer l's KV for a batch is a gather of that layer's blocks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "common/dtype.h"
#include "common/model_config.h"

namespace paged {

inline constexpr char kSegmentMagic[8] = {'P', 'A', 'G', 'E', 'D', 'S', 'G', '1'};
// 2: the tokenizer region holds a PGTOKEN1 bundle (common/tokenizer_bundle.h)
// with the chat template and HF tokenizer.json kinds, not a bare vocabulary.
// 3: loaded_bytes. 4: one tensor table per layer (was one shared by all), the
// ggml block formats, WeightFormat::kNative. 5: the experts of sparse layers
// (LayerTable::experts) and the mixture-of-experts fields of ModelConfig.
// 6: gpt_oss's fields of ModelConfig (biases, attention sinks, the clamped
// SwiGLU).
inline constexpr uint32_t kLayoutVersion = 6;
inline constexpr uint64_t kSegmentAlign = 2ull << 20;  // 2 MiB
inline constexpr uint64_t kTensorAlign = 4096;         // tensors inside a block / region
inline constexpr uint64_t kHeaderRegionBytes = kSegmentAlign;
inline constexpr int kMaxLayerTensors = 24;
inline constexpr int kMaxSegmentLayers = 256;  // layer tables in the header
inline constexpr int kMaxGlobalTensors = 8;
inline constexpr int kTensorNameBytes = 32;

enum class SegmentState : uint32_t { kEmpty = 0, kLoading = 1, kReady = 2 };
std::string_view SegmentStateName(uint32_t state);

// Weight format of the layer matrices (the flag --weight-format). `native`
// resolves to f16, bf16 or int8 (GGUF Q8_0) when the checkpoint's matrices
// have one such type; kNative is what it resolves to for a GGUF file with
// block-format tensors: every tensor keeps its own type (see each entry).
enum class WeightFormat : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kInt8 = 3,
  kInt4 = 4,
  kNative = 5,
};
std::string_view WeightFormatName(WeightFormat f);
// The one dtype of the layer matrices; kNative has none (f16 is returned).
DType WeightFormatDType(WeightFormat f);

// What the tokenizer region holds (common/tokenizer_bundle.h).
enum class TokenizerKind : uint32_t { kNone = 0, kSentencePieceGguf = 1, kHfJson = 2 };

// One tensor. For quantized dtypes (int8, int4) `scale_offset` points at f16
// scales [rows][ceil(cols / group)]; for the others (block formats included:
// their scales are inside the blocks) scale_bytes == 0.
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

// The tensors of each expert of a sparse layer, in this order.
inline constexpr int kExpertTensors = 3;
inline constexpr const char* kExpertTensorNames[kExpertTensors] = {"exp_gate", "exp_up",
                                                                   "exp_down"};

// The experts of a sparse layer (docs/store.md). The layer block holds its
// dense part (attention, norms, router, shared expert: the layer's own
// tensor table) in [0, dense_bytes), then one block per expert: expert e's
// matrices (exp_gate, exp_up [expert_ffn, hidden], exp_down [hidden,
// expert_ffn]) lie together at offset + e * stride, so one expert is one copy.
// Every expert of a layer has the same types and so the same layout: the
// entries below give each tensor's place inside an expert's block.
struct ExpertTable {
  uint32_t n_experts;     // 0: a dense layer
  uint32_t n_tensors;     // kExpertTensors when n_experts > 0
  uint64_t dense_bytes;   // the dense part: [0, dense_bytes) of the block
  uint64_t offset;        // expert 0's block, from the layer block's start (kTensorAlign)
  uint64_t stride;        // bytes from one expert's block to the next (kTensorAlign multiple)
  uint64_t expert_bytes;  // bytes one expert's tensors occupy (<= stride)
  // Offsets relative to an expert's block; the checksum covers that tensor
  // of every expert, expert 0 first.
  TensorEntry tensors[kExpertTensors];

  uint64_t ExpertOffset(int e) const { return offset + uint64_t(e) * stride; }
  const TensorEntry* Find(std::string_view name) const;
};

// One layer's tensors, offsets relative to the layer's block.
struct LayerTable {
  uint32_t n_tensors;
  uint32_t pad;
  uint64_t used_bytes;  // bytes of the block its tensors (and experts) occupy
  TensorEntry tensors[kMaxLayerTensors];
  ExpertTable experts;  // n_experts == 0 for a dense layer

  const TensorEntry* Find(std::string_view name) const;
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
  uint32_t dense_dtype;    // DType of tok_embd (and lm_head, but under kNative see its entry)
  uint32_t norm_dtype;     // DType of norms and biases (always f32)
  uint32_t pad1;

  uint64_t globals_offset;
  uint64_t globals_bytes;
  uint32_t n_global_tensors;
  uint32_t pad3;
  TensorEntry global_tensors[kMaxGlobalTensors];
  uint64_t layers_offset;
  uint64_t layer_block_bytes;  // stride between layer blocks: the largest layer, 2 MiB multiple
  uint64_t layer_used_bytes;   // the largest layers[l].used_bytes: what a device slot holds

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

  LayerTable layers[kMaxSegmentLayers];  // [model.n_layers] used, the rest zero

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
  // Layer `layer`'s table (0 <= layer < model.n_layers <= kMaxSegmentLayers
  // in a validated header).
  const LayerTable& Layer(int layer) const { return layers[layer]; }
  const TensorEntry* LayerTensor(int layer, std::string_view name) const {
    return layers[layer].Find(name);
  }
  uint64_t LayerUsedBytes(int layer) const { return layers[layer].used_bytes; }
};

// Copies of it are heap objects (about 640 KiB): PeekSegmentHeader and
// PlanSegment return unique_ptrs.
static_assert(sizeof(SegmentHeader) < kHeaderRegionBytes);
static_assert(std::is_trivially_copyable_v<SegmentHeader>);

uint64_t Fnv1a64(const void* data, size_t n, uint64_t seed = 1469598103934665603ull);

inline uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace paged
