#include "worker/engine/resident_provider.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {

absl::StatusOr<std::unique_ptr<ResidentProvider>> ResidentProvider::Create(Backend* backend,
                                                                           const ModelImage& image,
                                                                           uint64_t kv_blocks) {
  std::unique_ptr<ResidentProvider> p(new ResidentProvider(backend, image));
  RETURN_IF_ERROR(p->Init(kv_blocks));
  return p;
}

ResidentProvider::~ResidentProvider() = default;

const void* ResidentProvider::Rebase(const void* host) const {
  if (host == nullptr || !weights_dev_) return host;
  return weights_dev_.as<const uint8_t>() + (static_cast<const uint8_t*>(host) - image_.weights);
}

absl::Status ResidentProvider::Init(uint64_t kv_blocks) {
  const SegmentHeader& h = *image_.header;
  const int n_layers = h.model.n_layers;
  if (!backend_->shares_host_memory()) {
    // One upload of everything before the KV pool: globals and layer blocks.
    const uint64_t bytes = h.kv_offset;
    ASSIGN_OR_RETURN(weights_dev_, backend_->Allocate(bytes));
    backend_->Upload(weights_dev_.get(), image_.weights, bytes);
    device_bytes_ += bytes;
  }
  auto rebase = [&](WeightRef w) {
    w.data = Rebase(w.data);
    w.scales = Rebase(w.scales);
    return w;
  };
  globals_.tok_embd = rebase(image_.Global("tok_embd"));
  globals_.output_norm = static_cast<const float*>(Rebase(image_.Global("output_norm").data));
  globals_.output = h.model.tied_embeddings ? globals_.tok_embd : rebase(image_.Global("output"));
  layers_.resize(size_t(n_layers));
  for (int l = 0; l < n_layers; ++l) {
    layers_[size_t(l)] =
        image_.LayerAt(l, static_cast<const uint8_t*>(Rebase(image_.weights + h.LayerOffset(l))));
  }
  kv_.resize(size_t(n_layers));
  for (int l = 0; l < n_layers; ++l) kv_[size_t(l)] = image_.KvLayer(l);
  if (!backend_->shares_host_memory()) {
    // A device KV cache indexed by the pool's block ids (blocks [0, kv_blocks)).
    const uint64_t blocks =
        kv_blocks == 0 ? h.kv_n_blocks : std::min<uint64_t>(kv_blocks, h.kv_n_blocks);
    const uint64_t per_layer = blocks * h.kv_block_bytes;
    if (per_layer > 0) {
      ASSIGN_OR_RETURN(kv_dev_, backend_->Allocate(per_layer * uint64_t(n_layers)));
      device_bytes_ += per_layer * uint64_t(n_layers);
    }
    for (int l = 0; l < n_layers; ++l) {
      kv_[size_t(l)].base = kv_dev_.as<uint8_t>() + per_layer * uint64_t(l);
      kv_[size_t(l)].n_blocks = blocks;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LayerWeights> ResidentProvider::AcquireLayer(int layer) {
  if (layer < 0 || layer >= int(layers_.size()))
    return absl::OutOfRangeError(absl::StrCat("layer ", layer, " of ", layers_.size()));
  return layers_[size_t(layer)];
}

absl::StatusOr<KvLayerView> ResidentProvider::AcquireKv(int layer) {
  if (layer < 0 || layer >= int(kv_.size()))
    return absl::OutOfRangeError(absl::StrCat("layer ", layer, " of ", kv_.size()));
  return kv_[size_t(layer)];
}

}  // namespace paged
