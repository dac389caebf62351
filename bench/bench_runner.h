// paged-bench's measurements: the engine in-process on a store segment,
// paged through the worker's pager (and all resident when the model fits),
// against the PCIe bound the tool measures itself.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

struct BenchOptions {
  std::string model_path;
  std::string segment;  // an existing store segment to use instead of building one
  std::string device = "cuda:0";
  uint64_t gpu_budget = 4ull << 30;
  int batch = 1;
  int prompt_len = 128;
  int gen_len = 128;
  std::string weight_format = "native";
  // paged | hybrid | resident | both (paged + resident) | all (the three);
  // resident only when it fits. hybrid: the paged mode with the host
  // executor computing a share of each paged matrix (--host-compute).
  std::string mode = "both";
  std::string host_compute = "auto";  // the hybrid mode's policy (hybrid_plan.h)
  double memory_gbps = 0;             // hybrid: HybridProfile::memory_gbps, given (0: unknown)
  int host_threads = 0;
  std::string host_pin = "none";
  std::string host_activations = "f32";
  int slots = 2;
  std::string resident = "auto";
  int threads = 0;
  int max_step_tokens = 2048;
  // A sparse model (docs/pager.md, "Experts"): page experts one by one
  // through the device expert cache (on), whole layers (off), or both, the
  // whole-layer run labelled "layers".
  std::string experts = "on";
  std::string expert_eviction = "lfu";  // lru | lfu
  bool expert_prefetch = false;         // predict the next layer's experts, copy ahead
  double expert_host_share = 1;  // hybrid: PagerOptions::expert_host_share (-1: by bandwidth)
  // Missing experts not computed by the host: copied into a slot (copy) or
  // read by the device in place (mapped: PagerOptions::expert_misses_mapped).
  std::string expert_misses = "copy";
  bool tune_expert_share = false;  // hybrid: PagerOptions::tune_expert_share
  // The token each decode step feeds: the one the model sampled (sampled), or
  // a random one (random: as llama-bench's tg test does; a model of random
  // weights tends to repeat its tokens, and with them a sparse layer's
  // routing, which would flatter an expert cache).
  std::string decode_tokens = "sampled";
  // Sparse layers: "model" (the router's choice) or "uniform" (k experts per
  // row at random: Engine::set_uniform_routing, the worst case for a cache).
  std::string routing = "model";
  // Resident mode: decode steps recorded once and replayed (Engine step
  // graphs, on a backend that records them).
  bool graphs = true;
};

// One table row.
struct BenchRow {
  std::string mode;   // "paged" / "resident"
  std::string phase;  // "decode" / "prefill"
  int batch = 0;
  double step_ms = 0;  // median step time
  double tokens_per_s = 0;
  double h2d_mb = 0, d2h_mb = 0;  // per step
  double achieved_gbs = 0;        // (H2D bytes per step) / step time
  double bound_ms = 0;            // link bound of a step
  double bound_fraction = 0;      // bound / step time
  double compute_ms = 0;          // the same step with no copies
  double hidden_fraction = 0;     // of the copy time, hidden under compute
  double device_peak_gib = 0;
  double host_mb = 0;     // hybrid: weight MB per step the host read in place
  double host_share = 0;  // hybrid: the step's host share of each paged matrix
  // Per token of the phase: H2D MB (weights and KV). Experts paged: of the
  // routed experts, the share found in the device cache and the share the
  // host computed in place (the rest were copied in).
  double h2d_mb_per_token = 0;
  double expert_hit_rate = 0, expert_host_rate = 0, expert_mapped_rate = 0;
  bool experts_paged = false;
  // Hybrid: the host path per step (Engine::HostPathTimes): executor
  // dispatches, ms waiting for their inputs, computing, enqueueing uploads.
  double host_products = 0, host_wait_ms = 0, host_compute_ms = 0, host_upload_ms = 0;
  // Sparse layers (Engine::HostPathTimes).
  double host_attention_ms = 0, host_route_ms = 0, host_acquire_ms = 0, host_launch_ms = 0;
  nlohmann::json ToJson() const;
};

struct BenchReport {
  double h2d_gbs = 0, d2h_gbs = 0;  // measured link bandwidth
  std::string plan;                 // MemoryPlan::Describe()
  std::string hybrid;               // the hybrid split (DescribeHybrid), hybrid mode
  std::vector<BenchRow> rows;
};

absl::StatusOr<BenchReport> RunBench(const BenchOptions& opts);
std::string FormatReport(const BenchOptions& opts, const BenchReport& r);

}  // namespace paged
