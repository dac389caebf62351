// A model loaded in this process with everything resident: image, backend,
// provider and engine in one object (paged-run, tests, benchmarks).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/owned_image.h"

namespace paged {

struct LocalModel {
  std::unique_ptr<OwnedImage> image;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<ResidentProvider> provider;
  std::unique_ptr<Engine> engine;

  uint64_t kv_blocks() const { return image->image().header->kv_n_blocks; }
  const ModelConfig& config() const { return image->image().config(); }

  static absl::StatusOr<std::unique_ptr<LocalModel>> Load(const ModelSource& src,
                                                          const LayoutOptions& layout,
                                                          const std::string& device,
                                                          int threads = 0);
  static absl::StatusOr<std::unique_ptr<LocalModel>> Load(const std::string& path,
                                                          const LayoutOptions& layout,
                                                          const std::string& device,
                                                          int threads = 0);
};

}  // namespace paged
