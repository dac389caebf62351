// A segment built in this process's memory from a model file: no shared
// memory, no store (paged-run, tests, benchmarks). The offline path: it links
// the model readers, which a worker never does.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/vocab.h"
#include "store/segment_builder.h"
#include "worker/engine/model_image.h"

namespace paged {

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
  ModelImage image_;
  Vocab vocab_;
};

}  // namespace paged
