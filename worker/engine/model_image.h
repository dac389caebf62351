// The model as the engine reads it: a segment header, the read-only weight
// region and the KV pool. Comes from a mapped shared segment (workers) or
// from a private in-process build (paged-run, tests).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/segment.h"
#include "common/vocab.h"
#include "store/segment_builder.h"
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
};

ModelImage ImageOf(const SegmentMapping& m);

// A segment built in this process's memory: no shared memory, no store.
class OwnedImage {
 public:
  ~OwnedImage();
  static absl::StatusOr<std::unique_ptr<OwnedImage>> Build(const std::string& model_path,
                                                           const LayoutOptions& layout,
                                                           int threads = 0);
  static absl::StatusOr<std::unique_ptr<OwnedImage>> Build(const ModelSource& src,
                                                           const LayoutOptions& layout,
                                                           int threads = 0);
  const ModelImage& image() const { return image_; }
  const Vocab& vocab() const { return vocab_; }

 private:
  OwnedImage() = default;
  // Page-aligned anonymous memory, so that a backend can register it for DMA
  // like a shared segment.
  struct Mapping {
    uint8_t* data = nullptr;
    uint64_t bytes = 0;
    ~Mapping();
  };
  Mapping mem_;
  SegmentHeader header_{};
  ModelImage image_;
  Vocab vocab_;
};

}  // namespace paged
