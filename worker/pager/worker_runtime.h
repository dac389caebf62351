// A worker's runtime: the mapped segment, the backend, the memory plan, the
// pager and the engine, brought up in that order. paged-worker's logic; the
// coordinator link attaches to this.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/segment.h"
#include "worker/engine/backend.h"
#include "worker/engine/engine.h"
#include "worker/engine/host_executor.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged {

struct WorkerOptions {
  std::string segment;
  std::string device = "cpu";
  uint64_t gpu_budget = 0;  // 0: 4 GiB
  PlanLimits limits;        // budget_bytes filled from gpu_budget
  int threads = 0;
  // Sharing weight blocks with the other workers of this device and its
  // peers (worker/pager/share_board.h): auto (on for CUDA devices) | on | off.
  std::string share = "auto";
  bool shared_in_place = true;  // see PagerOptions
  PagerOptions::PeerCopies peer_copies = PagerOptions::PeerCopies::kAuto;
  // The host side (docs/hybrid.md): auto | off | a fixed host share in
  // [0, 1] (--host-compute); the host executor's threads (0: every CPU this
  // process may use) and the CPUs they are pinned to ("none", "all", "0-15").
  // Off for a CPU device (its "device" is the host).
  std::string host_compute = "auto";
  int host_threads = 0;
  std::string host_pin = "none";
  std::string host_activations = "f32";  // f32 | q8 (cpu_exec::HostExecutorOptions)
  // A sparse model's device expert cache (limits.expert_paging: experts
  // paged one by one): its eviction policy.
  ExpertEviction expert_eviction = ExpertEviction::kLfu;
  // Its misses (PagerOptions): the share the host executor computes (-1: by
  // bandwidth) and whether the others are read in place or copied.
  double expert_host_share = 1;
  bool expert_misses_mapped = false;
  bool tune_expert_share = false;  // PagerOptions::tune_expert_share
};

// The coordinator's caps on a step (paged.v1.StepCaps, asked before the
// worker plans): what its step limits left at "auto" take.
struct StepCaps {
  int max_step_tokens = 0;
  int max_step_seqs = 0;
  int max_context = 0;  // 0: the model's
};

// paged-worker's --max-step-tokens, --max-step-seqs and --max-step-kv-tokens
// as given: "auto" or a positive count.
struct StepFlags {
  std::string tokens = "auto";
  std::string seqs = "auto";
  std::string kv_tokens = "auto";
  bool any_auto() const { return tokens == "auto" || seqs == "auto" || kv_tokens == "auto"; }
};

// Fills the step limits of `limits` from `flags`: a count wins; "auto" takes
// the coordinator's cap (`caps`: null without a coordinator, or from one too
// old to say), else the standalone default (kDefaultMaxStepTokens / Seqs).
// An auto KV area stays 0 for the planner, sized over the coordinator's
// context. INVALID_ARGUMENT naming the flag for anything but auto or a
// positive count.
absl::Status ApplyStepFlags(const StepFlags& flags, const StepCaps* caps, PlanLimits* limits);

// "auto" | "off" | "force" -> PeerCopies; INVALID_ARGUMENT otherwise.
absl::StatusOr<PagerOptions::PeerCopies> ParsePeerCopies(const std::string& s);

class WorkerRuntime {
 public:
  // Maps the segment (weights read-only, KV read-write), creates the backend,
  // plans the budget (a budget too small for two slots is an error here, not
  // mid-step), registers the mapping and creates the pager and engine.
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Start(const WorkerOptions& opts);
  ~WorkerRuntime();

  // Generates n greedy tokens from BOS through the whole pipeline (on blocks
  // from the start of the pool: only before a coordinator hands them out).
  absl::StatusOr<std::vector<int32_t>> SelfCheck(int n);

  Engine& engine() { return *engine_; }
  Pager& pager() { return *pager_; }
  const MemoryPlan& plan() const { return pager_->plan(); }
  const SegmentHeader& header() const { return segment_->header(); }
  Backend& backend() { return *backend_; }
  // The host executor of the hybrid step (null when it is off: a CPU device,
  // --host-compute=off, or nothing paged).
  HostExecutor* host_executor() { return host_.get(); }
  // For people: the hybrid split, or "" without it.
  std::string DescribeHybrid() const;

 private:
  WorkerRuntime() = default;
  std::unique_ptr<SegmentMapping> segment_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<HostExecutor> host_;
  HybridPolicy policy_;
  std::unique_ptr<Pager> pager_;
  std::unique_ptr<Engine> engine_;
};

}  // namespace paged
