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

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"
#include "worker/engine/model_image.h"
#include "worker/engine/weight_provider.h"
#include "worker/pager/expert_cache.h"
#include "worker/pager/hybrid_plan.h"
#include "worker/pager/planner.h"
#include "worker/pager/share_board.h"

namespace paged {

struct PagerStats {
  uint64_t steps = 0;
  uint64_t h2d_weight_bytes = 0;   // layer blocks (or their device rows) copied in
  uint64_t host_weight_bytes = 0;  // weight bytes of rows the host computed in place
  uint64_t h2d_kv_bytes = 0;       // KV blocks gathered in
  uint64_t d2h_kv_bytes = 0;       // new KV rows written back
  uint64_t peer_weight_bytes = 0;  // layer blocks copied from a peer GPU's copy
  uint64_t kv_cached_steps = 0;    // steps whose KV came from the device cache
  uint64_t kv_paged_steps = 0;     // steps whose KV was paged per layer
  // Expert-level paging (docs/pager.md, "Experts"): each routed expert of a
  // chunk is a hit (in the device expert cache), a miss (copied in over the
  // link, into a slot taken from the cache) or computed by the host
  // executor in place.
  uint64_t expert_hits = 0;
  uint64_t expert_misses = 0;
  uint64_t expert_host = 0;
  uint64_t expert_mapped = 0;  // read by the device in place (PagerOptions::expert_misses_mapped)
  uint64_t expert_evictions = 0;
  uint64_t expert_admitted = 0;    // host-computed experts also copied in for later steps
  uint64_t expert_prefetched = 0;  // copied in ahead, on the next layer's predicted routing
  uint64_t h2d_expert_bytes = 0;   // of h2d_weight_bytes: experts copied in
  uint64_t host_expert_bytes = 0;  // of host_weight_bytes: experts the host computed
  // Of h2d_weight_bytes: experts the device read in place (they cross the
  // link as a copy's would, read by the kernels; not in h2d_expert_bytes).
  uint64_t mapped_expert_bytes = 0;
};

struct PagerOptions {
  // Benchmarks only: issue no copies at all (compute runs on whatever the
  // slots hold), to time compute alone. Output is meaningless.
  bool compute_only = false;

  // Sharing weight blocks with the other workers of this device and its
  // peers (share_board.h). Off when `share_segment` is empty or the backend
  // cannot share memory.
  std::string share_segment;      // the segment's name (names the board)
  uint64_t share_generation = 0;  // the segment's generation
  // A layer that another worker of this device holds is used in place
  // (true), or taken like a peer's copy into the slots (false: measures and
  // tests the peer path on one GPU).
  bool shared_in_place = true;
  // Paged layers that a peer device holds: copied from it when that link
  // measures faster than the host's (kAuto), never (kOff), or always (kForce).
  enum class PeerCopies { kAuto, kOff, kForce };
  PeerCopies peer_copies = PeerCopies::kAuto;

  // The hybrid step (docs/design.md, "Two paths to the weights"): the share
  // of each paged matrix's rows that the host computes in place, chosen per
  // step by HostShare (hybrid_plan.h) from `hybrid_policy`, the host
  // executor's measured `host_gbps` and the link bandwidth the pager
  // measures at start. Unset policy: none (every paged row is copied). The
  // engine needs a HostExecutor when rows go to the host.
  std::optional<HybridPolicy> hybrid_policy;
  std::vector<std::pair<int, double>> host_gbps;
  // HybridProfile::memory_gbps, as the operator measured it (0: unknown).
  double memory_gbps = 0;
  // Tests: the share as a function of the step's token rows, instead.
  std::function<double(int step_tokens)> host_share;

  // Expert-level paging (the plan's experts_paged): the device expert
  // cache's eviction policy, and which missing experts the host executor
  // computes in place instead of copying them: those with at most
  // `expert_host_rows` routed rows (0: none; -1, auto: where the host's
  // measured throughput at that many rows, host_gbps, beats the link).
  // The engine needs a HostExecutor when any do (gpt-oss's too: their
  // biases come from the segment with them).
  ExpertEviction expert_eviction = ExpertEviction::kLfu;
  int expert_host_rows = 0;
  // Auto (-1) only: of the misses the host could take, the share it takes
  // (fewest rows first), the rest copied so that both paths work at once;
  // < 0: host / (host + link) bandwidth at one row. 1 by default: on the H100
  // machine splitting a batch-1 step's misses was slower than the host
  // taking them all (both paths read the same DRAM; docs/BENCHMARKS.md).
  double expert_host_share = 1;
  // Missing experts the host does not compute: read by the device's kernels
  // in place from the registered segment (over the link, no copy, no slot:
  // Backend::MappedHostView) instead of copied into a slot first. A batch-1
  // step then splits its misses between the host's products and the
  // device's, both reading host memory, with no copy to wait for. Pager::
  // Create fails where the backend cannot read host memory in place. Off
  // by default: the H100 machine's grouped expert kernels read host memory
  // at about 21 GB/s, slower than copying (docs/BENCHMARKS.md).
  bool expert_misses_mapped = false;
  // Auto host experts: tune their share on the steps, per step size, from
  // expert_host_share (or the bandwidth split where that is < 0) with a
  // ShareTuner timing whole steps. The best share moves with the host's
  // arithmetic: measured at batch 1, 1 with f32 activations, 0.7 with 8-bit
  // ones (docs/BENCHMARKS.md).
  bool tune_expert_share = false;
  // Fill the cache at start, layer by layer, as far as it holds (when it
  // holds every expert, nothing is copied afterwards).
  bool preload_experts = true;
};

// --expert-misses: "copy" (false) | "mapped" (true, PagerOptions::
// expert_misses_mapped); --expert-host-share: 0..1, or -1 (by bandwidth).
// INVALID_ARGUMENT naming the flag otherwise.
absl::StatusOr<bool> ParseExpertMisses(std::string_view s);
absl::Status CheckExpertHostShare(double share);

// What sharing did at start (all zero when it is off).
struct SharingReport {
  bool enabled = false;
  bool globals_shared = false;          // the globals came from another worker
  int layers_shared = 0;                // layers used in place from another worker of this device
  int layers_published = 0;             // resident layers this worker offers the others
  int peer_layers = 0;                  // paged layers a peer holds
  bool peer_used = false;               // ...and copied from it instead of the host
  double host_gbps = 0, peer_gbps = 0;  // measured at start when both were candidates
  uint64_t shared_bytes = 0;            // device memory used in place, not allocated
  std::string Describe() const;
};

class Pager final : public WeightProvider {
 public:
  // `host`: the segment as this process maps it (weights read-only, KV pool
  // read-write); registered with the backend for DMA here.
  static absl::StatusOr<std::unique_ptr<Pager>> Create(Backend* backend, const ModelImage& host,
                                                       const MemoryPlan& plan,
                                                       PagerOptions options = {});
  ~Pager() override;

  const GlobalWeights& globals() const override { return globals_; }
  uint64_t pool_blocks() const override { return host_.header->kv_n_blocks; }
  absl::Status BeginStep(const StepBatch& batch, std::vector<int32_t>* block_ids) override;
  absl::Status FinishStep() override;
  absl::StatusOr<LayerWeights> AcquireLayer(int layer) override;
  void ReleaseLayer(int layer) override;
  absl::StatusOr<KvLayerView> AcquireKv(int layer) override;
  void ReleaseKv(int layer, const int32_t* slots, int n) override;
  absl::Status AcquireExperts(int layer, const int32_t* rows, int n_experts,
                              ExpertRef* out) override;
  void ReleaseExperts(int layer) override;
  WeightRef PrefetchRouter(int layer) override;
  const float* PrefetchRouterBias(int layer) override;
  void PrefetchExperts(int layer, const int32_t* rows, int n_experts) override;

  const MemoryPlan& plan() const { return plan_; }
  // The device expert cache (null unless experts are paged).
  const ExpertCache* expert_cache() const { return expert_cache_.get(); }
  const PagerStats& stats() const { return stats_; }
  const SharingReport& sharing() const { return sharing_; }
  // Host -> device GB/s of one layer copy, measured at start (best of 3);
  // 0 when nothing is paged.
  double link_gbps() const { return link_gbps_; }
  // What the hybrid split is chosen from (link_gbps 0 when nothing is paged).
  const HybridProfile& hybrid_profile() const { return profile_; }
  // The host share of the last step begun (0 without the hybrid step).
  double step_share() const { return step_share_; }
  // --host-compute=auto: the share the tuner holds for steps of n token
  // rows (ShareTuner; -1: none tuned) and whether it has settled.
  double tuned_share(int n) const { return tuner_.Current(n); }
  bool share_settled(int n) const { return tuner_.Settled(n); }
  // Auto host experts: the share of their misses the host took in the last
  // step begun, and (tune_expert_share) the share the tuner holds for
  // steps of n rows (-1: none tuned) and whether it has settled.
  double expert_step_share() const;
  double tuned_expert_share(int n) const { return expert_tuner_.Current(n); }
  bool expert_share_settled(int n) const { return expert_tuner_.Settled(n); }
  uint64_t device_bytes() const { return device_bytes_; }

 private:
  Pager(Backend* backend, const ModelImage& host, const MemoryPlan& plan, PagerOptions options);
  absl::Status Init();
  absl::StatusOr<void*> Alloc(uint64_t bytes);
  // Device memory holding `bytes` of host block `src`, board entry `id`:
  // imported when a live worker of this device published it, else (when
  // `make`) allocated, uploaded and published; nullptr when neither.
  absl::StatusOr<const uint8_t*> Obtain(int id, const uint8_t* src, uint64_t bytes, bool make,
                                        bool* imported);
  // Paged layers a peer device holds: imports them and decides whether to
  // copy from there (measuring both links under kAuto).
  absl::Status SetUpPeers();
  // GB/s of one layer copied into slot 0 from `peer` (or from the host when
  // null: layer `layer` of the segment).
  absl::StatusOr<double> TimeLayerCopy(const uint8_t* peer, int layer);
  LayerWeights WeightsAt(int layer, const uint8_t* block) const;
  // Rows [0, DeviceRows(rows, share)) of a matrix are the device's when the
  // host computes `share` of them (whole tiles of rows).
  static int64_t DeviceRows(int64_t rows, double share);
  // Enqueues on copy-in what slot s needs of `layer`'s block for host share
  // `share` beyond what it holds: have_share < 0 (a fresh copy): every
  // vector and the device rows of each matrix; else the device rows of
  // `share` that `have_share` did not have.
  // Returns the bytes it enqueued.
  uint64_t CopyLayerRows(int s, int layer, double have_share, double share);
  void IssueWeightCopy(uint64_t g);
  void IssueKvGather(int layer);
  KvLayerView DeviceKv(int layer) const;
  // What a device copy of `layer` holds: its dense part when experts are
  // paged, else its whole block.
  uint64_t CopyBytes(int layer) const;
  // Sets up the expert cache: its slots, the link measured on one expert
  // (when no layer is paged), and the preload.
  absl::Status InitExperts();
  // Whether the host computes a missing expert with `rows` routed rows.
  bool HostTakes(int rows) const;
  // Auto host experts: the share of the misses the host could take that it
  // does take (PagerOptions::expert_host_share, else host / (host + link)
  // bandwidth at one row).
  double ExpertHostShare() const;
  // Enqueues on copy-in expert e of `layer` into expert slot `slot`.
  void CopyExpert(int layer, int e, int slot);
  int KvArea(int layer) const {
    return int((kv_seq_base_ + uint64_t(layer)) % uint64_t(kv_areas_.size()));
  }

  Backend* backend_;
  ModelImage host_;
  MemoryPlan plan_;
  PagerOptions options_;
  int n_layers_ = 0;
  std::vector<BackendBuffer> owned_;  // slots, KV areas, resident blocks, the KV cache
  std::vector<void*> registered_;
  uint64_t device_bytes_ = 0;

  GlobalWeights globals_;
  std::vector<const uint8_t*> resident_block_;  // per layer: device block, or null when paged
  std::vector<const uint8_t*> peer_block_;      // per layer: a peer's copy to page from, or null

  std::unique_ptr<ShareBoard> board_;  // this device's; null: no sharing
  std::vector<void*> imported_;        // ImportMemory'd, closed at the end
  SharingReport sharing_;
  double link_gbps_ = 0;
  HybridProfile profile_;

  // Weight slots: a ring in the order of the paged layers, across steps.
  std::vector<int> paged_layers_;
  std::vector<uint8_t*> slot_mem_;
  std::vector<int> slot_layer_;
  std::vector<bool> slot_from_peer_;
  std::vector<double> slot_share_;    // host share the slot's copy was made for
  std::vector<uint64_t> slot_bytes_;  // bytes copied into the slot for its layer
  ShareTuner tuner_;
  bool tune_share_ = false;
  int step_rows_ = 0;
  std::chrono::steady_clock::time_point step_begin_;
  double step_share_ = 0;  // host share of the current step
  std::vector<BackendEvent> slot_copied_, slot_free_;
  uint64_t next_issue_ = 0, next_use_ = 0;
  int current_slot_ = -1;

  // Experts (plan_.experts_paged): the cache's slots in one buffer, which
  // expert each holds, and the events that order a slot's copy and use.
  bool experts_paged_ = false;
  bool host_experts_ = false;  // missing experts may go to the host executor
  uint8_t* expert_mem_ = nullptr;
  // The segment's weights as the device reads them in place, or null
  // (PagerOptions::expert_misses_mapped).
  const uint8_t* mapped_weights_ = nullptr;
  std::unique_ptr<ExpertCache> expert_cache_;
  std::vector<int32_t> expert_need_;  // a chunk's missing experts
  double host_carry_ = 0;             // the host's quota of misses: the fraction carried over
  // PagerOptions::tune_expert_share: the tuner and the share of the step
  // begun (timed by step_rows_ / step_begin_ with the dense share's).
  ShareTuner expert_tuner_;
  bool tune_experts_ = false;
  double expert_share_ = 1;
  std::vector<WeightRef> routers_;  // per layer: its router's device copy (prefetch)
  BackendEvent experts_copied_, experts_free_;

  // KV: a device cache (blocks of every layer) or per-layer areas.
  bool kv_cached_ = false;
  uint8_t* kv_cache_ = nullptr;
  std::unordered_map<int32_t, int32_t> cache_ids_;  // pool block -> cache block
  std::unordered_map<int64_t, int32_t>
      prev_next_pos_;  // previous step: sequence -> its next position
  std::vector<int32_t> cache_free_;
  BackendEvent cache_filled_;
  bool cache_fill_pending_ = false;
  std::vector<uint8_t*> kv_areas_;
  std::vector<BackendEvent> area_ready_, area_free_;
  uint64_t kv_seq_base_ = 0;
  std::vector<int32_t> step_host_blocks_, step_dev_blocks_;  // distinct blocks of the step
  std::vector<int32_t> step_gather_host_, step_gather_dev_;  // of those, blocks with committed rows
  std::vector<int32_t> step_host_slots_;                     // new rows' pool slots
  BackendEvent kv_written_, wb_done_;

  PagerStats stats_;
};

}  // namespace paged
