// The pager: a WeightProvider that keeps a few layers resident and streams
// the others through S device slots, copying layer l+S-1 ahead while layer l
// computes, and that pages KV per layer (or keeps it in a device cache),
// writing back only each step's new KV rows. The host copy (the segment) is
// always the truth.
//
// Queues (Backend::Queue): copy-in carries layer blocks and KV gathers,
// write-back carries new KV rows to the host, compute runs the engine; events
// order them and a step ends only after its write-back has completed. Nothing
// synchronizes the whole device.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/model_image.h"
#include "worker/engine/weight_provider.h"
#include "worker/pager/planner.h"

namespace paged {

struct PagerStats {
  uint64_t steps = 0;
  uint64_t h2d_weight_bytes = 0;  // layer blocks copied in
  uint64_t h2d_kv_bytes = 0;      // KV blocks gathered in
  uint64_t d2h_kv_bytes = 0;      // new KV rows written back
  uint64_t kv_cached_steps = 0;   // steps whose KV came from the device cache
  uint64_t kv_paged_steps = 0;    // steps whose KV was paged per layer
};

struct PagerOptions {
  // Benchmarks only: issue no copies at all (compute runs on whatever the
  // slots hold), to time compute alone. Output is meaningless.
  bool compute_only = false;
};

class Pager final : public WeightProvider {
 public:
  // `host`: the segment as this process maps it (weights read-only, KV pool
  // read-write); registered with the backend for DMA here.
  static absl::StatusOr<std::unique_ptr<Pager>> Create(Backend* backend, const ModelImage& host,
                                                       const MemoryPlan& plan, PagerOptions options = {});
  ~Pager() override;

  const GlobalWeights& globals() const override { return globals_; }
  uint64_t pool_blocks() const override { return host_.header->kv_n_blocks; }
  absl::Status BeginStep(const StepBatch& batch, std::vector<int32_t>* block_ids) override;
  absl::Status FinishStep() override;
  absl::StatusOr<LayerWeights> AcquireLayer(int layer) override;
  void ReleaseLayer(int layer) override;
  absl::StatusOr<KvLayerView> AcquireKv(int layer) override;
  void ReleaseKv(int layer, const int32_t* slots, int n) override;

  const MemoryPlan& plan() const { return plan_; }
  const PagerStats& stats() const { return stats_; }
  uint64_t device_bytes() const { return device_bytes_; }

 private:
  Pager(Backend* backend, const ModelImage& host, const MemoryPlan& plan, PagerOptions options);
  absl::Status Init();
  absl::StatusOr<void*> Alloc(uint64_t bytes);
  LayerWeights WeightsAt(int layer, const uint8_t* block) const;
  void IssueWeightCopy(uint64_t g);
  void IssueKvGather(int layer);
  KvLayerView DeviceKv(int layer) const;
  int KvArea(int layer) const { return int((kv_seq_base_ + uint64_t(layer)) % uint64_t(kv_areas_.size())); }

  Backend* backend_;
  ModelImage host_;
  MemoryPlan plan_;
  PagerOptions options_;
  int n_layers_ = 0;
  std::vector<void*> owned_;
  std::vector<void*> registered_;
  uint64_t device_bytes_ = 0;

  GlobalWeights globals_;
  std::vector<const uint8_t*> resident_block_;  // per layer: device block, or null when paged

  // Weight slots: a ring in the order of the paged layers, across steps.
  std::vector<int> paged_layers_;
  std::vector<uint8_t*> slot_mem_;
  std::vector<int> slot_layer_;
  std::vector<int> slot_copied_, slot_free_;  // events
  uint64_t next_issue_ = 0, next_use_ = 0;
  int current_slot_ = -1;

  // KV: a device cache (blocks of every layer) or per-layer areas.
  bool kv_cached_ = false;
  uint8_t* kv_cache_ = nullptr;
  std::unordered_map<int32_t, int32_t> cache_ids_;  // pool block -> cache block
  std::unordered_map<int64_t, int32_t> prev_next_pos_;  // previous step: sequence -> its next position
  std::vector<int32_t> cache_free_;
  int cache_filled_ = -1;  // event
  bool cache_fill_pending_ = false;
  std::vector<uint8_t*> kv_areas_;
  std::vector<int> area_ready_, area_free_;  // events
  uint64_t kv_seq_base_ = 0;
  std::vector<int32_t> step_host_blocks_, step_dev_blocks_;  // distinct blocks of the step
  std::vector<int32_t> step_gather_host_, step_gather_dev_;  // of those, blocks with committed rows
  std::vector<int32_t> step_host_slots_;                     // new rows' pool slots
  int kv_written_ = -1, wb_done_ = -1;                       // events

  PagerStats stats_;
};

}  // namespace paged
