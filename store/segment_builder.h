// Laying out a model in the segment (pure: plan the header) and writing it
// (fill the planned regions from a ModelSource).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"
#include "store/model_source.h"

namespace paged {

struct LayoutOptions {
  std::string weight_format = "native";  // native | f32 | f16 | bf16 | int8 | int4
  double kv_gib = 1.0;                   // KV pool size
  int block_tokens = 16;                 // tokens per KV block
  int int8_group = 0;                    // 0: default (64; 32 for GGUF Q8_0 sources)
  int int4_group = 0;                    // 0: default (32)
  // The untied lm_head's store type: auto (the dense type of the embeddings)
  // | f16 | bf16 | int8 | int4. A quantized lm_head takes half or a quarter
  // of the device memory an f16 one does (docs/hybrid.md), which buys
  // resident layers; it rounds the logits once more.
  std::string lm_head_format = "auto";
};

// Resolves "native": kNative for a GGUF file with block-format tensors
// other than Q8_0 (each tensor keeps its type), else the checkpoint's 16-bit
// type (f32 checkpoints become f16; GGUF Q8_0 becomes int8).
absl::StatusOr<WeightFormat> ResolveWeightFormat(const ModelSource& src, std::string_view flag);

// Plans the whole segment: every offset and size of the header, with state
// EMPTY, generation 0 and no checksum. Pure function of its inputs. The
// header is large (per-layer tables): it comes on the heap.
absl::StatusOr<std::unique_ptr<SegmentHeader>> PlanSegment(const ModelSource& src,
                                                           const LayoutOptions& opts);

// Called after each tensor; returning false stops the fill (CANCELLED).
using ProgressFn = std::function<bool(uint64_t done_bytes, uint64_t total_bytes)>;

// Writes globals, layer blocks and the tokenizer into `base` (a mapping of
// plan.total_bytes) following `plan`; fills every tensor's checksum in
// `plan`. The KV pool is left as it is (zero in a fresh segment).
absl::Status FillSegment(const ModelSource& src, SegmentHeader& plan, uint8_t* base, int threads,
                         const ProgressFn& progress);

// Payload + scale bytes of all weights the plan moves into the segment.
uint64_t WeightBytes(const SegmentHeader& plan);

}  // namespace paged
