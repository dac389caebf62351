// The model as the engine reads it: a segment header, the read-only weight
// region and the KV pool. Comes from a mapped shared segment (workers) or
// from a private in-process build (worker/offline/owned_image.h: paged-run,
// tests, benchmarks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/segment.h"
#include "worker/engine/types.h"

namespace paged {

struct ModelImage {
  const SegmentHeader* header = nullptr;
  const uint8_t* weights = nullptr;  // segment start (header, globals, layers)
  uint8_t* kv = nullptr;             // the KV pool (header->kv_bytes)

  const ModelConfig& config() const { return header->model; }
  // Host views of the weights (pointers into `weights`).
  WeightRef Global(std::string_view name) const;  // rows == 0 when absent
  WeightRef LayerTensor(int layer, std::string_view name) const;
  const float* LayerVector(int layer, std::string_view name) const;  // f32 norms / biases, or null
  KvLayerView KvLayer(int layer) const;                              // block ids = the pool's
  // Every tensor of layer `layer` (experts included) as they lie in a copy
  // of its block at `block` (the segment's own, a device slot, a resident
  // copy): the layer's table applied to that address.
  LayerWeights LayerAt(int layer, const uint8_t* block) const;
  // One expert of sparse layer `layer` as it lies in a copy of its block at
  // `expert_block` (the segment's, at the layer block + ExpertOffset(e), or
  // a device expert slot): every expert of a layer has the same layout.
  ExpertRef ExpertAt(int layer, const uint8_t* expert_block) const;
};

ModelImage ImageOf(const SegmentMapping& m);

}  // namespace paged
