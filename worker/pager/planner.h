// The worker's memory plan: how a device budget is spent. Pure function of
// the segment header and the limits; printed at start and reported to the
// coordinator.
//
//   budget = globals (embeddings, final norm, lm_head; always resident)
//          + workspace (activations of the largest step, backend scratch)
//          + S slots x (one layer block + one layer's KV for the largest step)
//          + resident layers (as many as fit, `--resident auto`)
//          + device KV cache (what is left, in KV blocks of every layer)
//
// Per byte of device memory, a resident layer saves one byte of H2D per step,
// and so does a cached KV byte (the batch's KV of a layer is read every step).
// Resident layers are preferred: their saving does not depend on the batch or
// its contexts, and cached KV must first be filled. KV that does not fit the
// cache is paged per layer through the slots' KV areas.
//
// An auto KV area (max_step_kv_tokens 0) never costs a resident layer: the
// layers are planned with the smallest area (one full context, plus a
// partial block per sequence), then the budget left over, which holds no
// further layer, grows the areas up to the most one step can reference
// (every sequence at full context, or the whole KV pool); what is left after
// that is the device KV cache.
//
// A mixture of experts with experts paged (docs/pager.md, "Experts"): the
// slots and resident layers hold layers' dense parts, and a device expert
// cache of at least one layer's experts is part of the least plan; once the
// dense parts are placed, the cache takes what is left, up to every expert,
// before the KV areas grow and the KV cache.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"
#include "common/step.h"

namespace paged {

// The backend a plan is for. Its scratch differs: the CUDA backend keeps
// 16-bit copies of activations, dequantized weights, attention partials and
// cuBLAS's workspace, and cudaMalloc rounds large buffers up to whole pages;
// the CPU backend needs none of that beyond the engine's activations.
enum class PlanBackend { kCuda, kCpu };

struct PlanLimits {
  uint64_t budget_bytes = 0;
  int slots = 2;                                // S >= 2 (when any layer is paged)
  std::string resident = "auto";                // auto | none | all | N (count)
  int max_step_tokens = kDefaultMaxStepTokens;  // new tokens in the largest step
  int max_step_seqs = kDefaultMaxStepSeqs;      // sequences in the largest step
  // Context tokens (KV rows) a step may read; 0: auto (the header comment).
  int max_step_kv_tokens = 0;
  // Positions of the longest sequence the auto KV area must hold; 0: the
  // model's context.
  int max_context = 0;
  PlanBackend backend = PlanBackend::kCuda;
  // Backend scratch beyond the engine's activations (dequantized weights,
  // 16-bit activation copies, attention partials, library workspace):
  // estimated by the planner for `backend` when 0.
  uint64_t backend_scratch_bytes = 0;
  // Blocks another worker of this device already holds (its share board):
  // used in place, so they cost this worker's budget nothing.
  bool globals_shared = false;
  // The embedding table stays in host memory (the engine gathers its rows
  // there: an untied model with a host executor); it costs no device memory.
  bool embedding_on_host = false;
  std::vector<bool> layers_shared;  // per layer; empty: none
  // Layers a peer GPU of this host holds (its share board): this worker's
  // own resident layers are chosen among the others first, so that what it
  // pages can come from the peer over the faster GPU link.
  std::vector<bool> layers_on_peers;  // per layer; empty: none
  // A model with sparse layers: page experts one by one through a device
  // expert cache (docs/pager.md, "Experts"); false: whole layers, experts
  // included, as for a dense model.
  bool expert_paging = true;
  // ...and prefetch them: a device copy of every sparse layer's router, so
  // that the engine predicts a layer's experts one layer early.
  bool expert_prefetch = false;
  // Where in the depth the even spread of resident layers starts, as a
  // fraction in [0, 1): workers of different GPUs starting together (index /
  // GPUs) hold different layers.
  double rotation = 0;
};

struct MemoryPlan {
  uint64_t budget_bytes = 0;
  uint64_t globals_bytes = 0;
  uint64_t workspace_bytes = 0;
  uint64_t workspace_library_bytes = 0;  // of it: cuBLAS workspace, cudaMalloc rounding (CUDA)
  int max_step_tokens = 0;               // the step the workspace is sized for
  int max_step_seqs = 0;
  int slots = 0;
  uint64_t slot_layer_bytes = 0;  // one layer block
  uint64_t slot_kv_blocks = 0;    // KV blocks one slot's KV area holds (one layer)
  uint64_t slot_bytes = 0;        // layer + KV area
  // How the KV area was sized: auto (from the context and the budget) or
  // --max-step-kv-tokens; auto's bounds; and why, for people.
  bool kv_area_auto = false;
  uint64_t kv_area_min_blocks = 0;  // auto: one context (+ a partial block per sequence)
  uint64_t kv_area_max_blocks = 0;  // auto: the most one step can reference
  std::string kv_area_reason;
  int n_resident = 0;              // own resident layers + shared ones
  std::vector<bool> resident;      // per layer (shared ones included)
  int n_shared = 0;                // layers another worker of the device holds
  bool globals_shared = false;     // globals_bytes is then 0
  bool embedding_on_host = false;  // the embedding table is not in globals_bytes
  uint64_t resident_bytes = 0;     // this worker's own resident layers
  uint64_t kv_cache_blocks = 0;    // device KV cache: blocks per layer (every layer)
  uint64_t kv_cache_bytes = 0;
  uint64_t total_bytes = 0;  // <= budget_bytes
  // Bytes one decode pass moves over the link for the weights (paged layers;
  // with experts paged, their dense parts plus, at batch 1 and uniform
  // routing, the routed experts the cache misses).
  uint64_t paged_weight_bytes_per_step = 0;
  // Expert-level paging (PlanLimits::expert_paging on a sparse model): the
  // slots and resident layers hold layers' dense parts (attention, norms,
  // router, shared expert); every expert comes through a device cache of
  // `expert_slots` slots, at least one layer's experts, at most all.
  bool experts_paged = false;
  uint64_t expert_slot_bytes = 0;  // the largest expert's block
  uint64_t expert_slots = 0;
  uint64_t expert_cache_bytes = 0;
  uint64_t total_experts = 0;  // of every sparse layer
  bool expert_prefetch = false;
  uint64_t router_bytes = 0;  // the routers' device copies (prefetch), in globals' place

  int n_paged() const { return int(resident.size()) - n_resident; }
  std::string Describe() const;  // multi-line, for people
};

// The part of the segment's globals region that goes to the device: all of
// it, or, with the embedding on the host, the region after the embedding
// table (the builder places it first). `embedding_excluded` says which.
struct DeviceGlobals {
  uint64_t offset = 0;  // from the segment start
  uint64_t bytes = 0;
  bool embedding_excluded = false;
};
DeviceGlobals DeviceGlobalsOf(const SegmentHeader& h, bool embedding_on_host);

// What a layer's device copy holds when experts are paged: a sparse layer's
// dense part (its block up to the experts), a dense layer's whole block.
uint64_t LayerCopyBytes(const SegmentHeader& h, int layer);

// INVALID_ARGUMENT for bad limits; RESOURCE_EXHAUSTED ("budget too small")
// when even globals + workspace + two slots do not fit.
absl::StatusOr<MemoryPlan> PlanMemory(const SegmentHeader& h, const PlanLimits& limits);

}  // namespace paged
