// How the engine gets layer l's weights and layer l's KV blocks. The engine
// asks; the provider decides where they come from: all resident
// (ResidentProvider), or paged through device slots (the pager).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/engine/types.h"

namespace paged {

class WeightProvider {
 public:
  virtual ~WeightProvider() = default;

  // Embeddings, final norm, lm_head: always resident.
  virtual const GlobalWeights& globals() const = 0;

  // True when every layer's weights and KV stay at the same backend
  // addresses for the provider's life, with no host rows, and acquiring or
  // releasing them enqueues nothing: a decode step's ops can then be
  // recorded once and replayed (Backend graphs). ResidentProvider.
  virtual bool fixed() const { return false; }

  // KV blocks of the store's pool a step may name (block ids < this).
  virtual uint64_t pool_blocks() const = 0;

  // A step begins. `block_ids` holds the batch's block tables concatenated
  // (pool ids, in batch order, each table cut to the blocks the step
  // touches); the provider rewrites them in place to the ids of the KV views
  // it will hand out (identity for a resident pool).
  virtual absl::Status BeginStep(const StepBatch& batch, std::vector<int32_t>* block_ids) {
    return absl::OkStatus();
  }
  // Every op of the step is enqueued; returns once the provider's own work of
  // the step (KV write-back) is complete.
  virtual absl::Status FinishStep() { return absl::OkStatus(); }

  // Layer l's weights, usable by ops enqueued after this call.
  virtual absl::StatusOr<LayerWeights> AcquireLayer(int layer) = 0;
  // The step's ops on layer l are enqueued; the provider may reuse its
  // memory once they have run.
  virtual void ReleaseLayer(int layer) {}

  // Expert-level paging (docs/pager.md, "Experts"), for a sparse layer whose
  // AcquireLayer weights say `experts.by_request`: once the router of a
  // chunk has run, `rows[e]` is the number of the chunk's rows routed to
  // expert e (n_experts entries). Fills out[e] for every expert with rows
  // (the others are left alone): usable by ops enqueued after this call,
  // until ReleaseExperts(layer).
  virtual absl::Status AcquireExperts(int layer, const int32_t* rows, int n_experts,
                                      ExpertRef* out) {
    return absl::UnimplementedError("this provider hands out whole layers");
  }
  // The chunk's ops on the experts are enqueued.
  virtual void ReleaseExperts(int layer) {}
  // Expert prefetch: the router of sparse layer `layer` in backend memory
  // (f32 [n_experts, hidden]) when the provider prefetches its experts, else
  // rows == 0. The engine applies it to a chunk's normed rows one sparse
  // layer early (the residual stream changes little from one layer to the
  // next) and hands the predicted routing to PrefetchExperts, which may
  // start copies; it changes what is cached, never a result.
  virtual WeightRef PrefetchRouter(int layer) { return {}; }
  // That router's bias (gpt-oss: f32 [n_experts]) in host memory, or null:
  // the engine adds it to the predicted logits on the host.
  virtual const float* PrefetchRouterBias(int layer) { return nullptr; }
  virtual void PrefetchExperts(int layer, const int32_t* rows, int n_experts) {}

  // Layer l's KV as the step's block tables index it.
  virtual absl::StatusOr<KvLayerView> AcquireKv(int layer) = 0;
  // The step wrote new KV rows of layer l (slots: host copy of the step's
  // slot ids, n of them); a provider with a host copy writes them back.
  virtual void ReleaseKv(int layer, const int32_t* slots, int n) {}
};

}  // namespace paged
