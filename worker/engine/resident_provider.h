// Every weight and the whole KV pool in backend memory: the simplest
// provider, and the comparison point for the pager. On a backend that shares
// host memory (CPU) it uses the image in place; otherwise it uploads the
// weights and allocates a KV cache with the pool's block ids.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/model_image.h"
#include "worker/engine/weight_provider.h"

namespace paged {

class ResidentProvider final : public WeightProvider {
 public:
  // kv_blocks: how many pool blocks to keep on the device (0 = the whole pool).
  static absl::StatusOr<std::unique_ptr<ResidentProvider>> Create(Backend* backend,
                                                                  const ModelImage& image,
                                                                  uint64_t kv_blocks = 0);
  ~ResidentProvider() override;

  const GlobalWeights& globals() const override { return globals_; }
  bool fixed() const override { return true; }
  uint64_t pool_blocks() const override { return kv_.empty() ? 0 : kv_[0].n_blocks; }
  absl::StatusOr<LayerWeights> AcquireLayer(int layer) override;
  absl::StatusOr<KvLayerView> AcquireKv(int layer) override;

  uint64_t device_bytes() const { return device_bytes_; }

 private:
  ResidentProvider(Backend* backend, const ModelImage& image) : backend_(backend), image_(image) {}
  absl::Status Init(uint64_t kv_blocks);
  // Rebases a host pointer of the image into the device copy.
  const void* Rebase(const void* host) const;

  Backend* backend_;
  ModelImage image_;
  GlobalWeights globals_;
  std::vector<LayerWeights> layers_;
  std::vector<KvLayerView> kv_;
  BackendBuffer weights_dev_;  // copy of the image's [0, kv_offset) (empty when in place)
  BackendBuffer kv_dev_;
  uint64_t device_bytes_ = 0;
};

}  // namespace paged
