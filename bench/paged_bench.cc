// paged-bench: the engine in-process on a store segment, paged through the
// worker's pager and (when it fits) all resident; one row per phase against
// the PCIe bound it measures at start.
#include <cstdio>

#include "absl/flags/flag.h"
#include "bench/bench_runner.h"
#include "common/cli.h"
#include "common/size_flag.h"

ABSL_FLAG(std::string, model, "", "HF checkpoint directory or .gguf file");
ABSL_FLAG(std::string, segment, "", "use this store segment instead of building one from --model");
ABSL_FLAG(std::string, device, "cuda:0", "cuda:N or cpu");
ABSL_FLAG(std::string, gpu_budget, "4GiB", "device memory budget of the paged mode");
ABSL_FLAG(int, batch, 1, "sequences per step");
ABSL_FLAG(int, prompt_len, 128, "prompt tokens per sequence");
ABSL_FLAG(int, gen_len, 128, "generated tokens per sequence");
ABSL_FLAG(std::string, weight_format, "native", "native | f32 | f16 | bf16 | int8 | int4");
ABSL_FLAG(std::string, mode, "both",
          "paged | hybrid | resident | both (paged + resident) | all (the three)");
ABSL_FLAG(std::string, decode_tokens, "sampled",
          "the token each decode step feeds: sampled (the model's) | random (as llama-bench's tg "
          "does: a random-weight model repeats its tokens and its experts' routing)");
ABSL_FLAG(std::string, routing, "model",
          "sparse layers: model (the router's choice) | uniform (k experts per row at random: "
          "the worst case for the expert cache; a random-weight model routes most rows alike)");
ABSL_FLAG(bool, graphs, true,
          "resident mode: decode steps recorded once and replayed as one launch (CUDA graphs; "
          "--graphs=false: op by op)");
ABSL_FLAG(std::string, host_compute, "auto",
          "hybrid mode: the host's share of each paged matrix: auto (tuned on the steps) | planned "
          "| off | 0..1");
ABSL_FLAG(double, memory_gbs, 0,
          "hybrid mode: GB/s the host's memory gives the link and the host executor together "
          "(scripts/device/dram_share.sh), for the bound column; 0: unknown, they add");
ABSL_FLAG(int, host_threads, 0, "hybrid mode: host executor threads (0: every CPU)");
ABSL_FLAG(std::string, host_pin, "none", "hybrid mode: CPUs to pin the host executor to");
ABSL_FLAG(std::string, host_activations, "f32",
          "hybrid mode: the host products' activations: f32 (exact) | q8 (8 bits per block of 256 "
          "for q4_k / q5_k / q6_k weights, as llama.cpp's CPU path)");
ABSL_FLAG(int, slots, 2, "device slots");
ABSL_FLAG(std::string, resident, "auto", "resident layers: auto | none | all | N");
ABSL_FLAG(int, max_step_tokens, 2048, "tokens per prefill step");
ABSL_FLAG(int, threads, 0, "CPU threads");
ABSL_FLAG(std::string, experts, "on",
          "a mixture of experts: page experts one by one (on), whole layers (off), or both");
ABSL_FLAG(std::string, expert_eviction, "lfu", "the device expert cache's policy: lru | lfu");
ABSL_FLAG(double, expert_host_share, 1,
          "hybrid mode, experts paged: the share of the missing experts the host computes in "
          "place, the rest copied (-1: host / (host + link) bandwidth)");
ABSL_FLAG(std::string, expert_misses, "copy",
          "experts paged: missing experts the host does not compute are copied into a slot "
          "(copy) or read by the device's kernels in place from host memory (mapped)");
ABSL_FLAG(bool, tune_expert_share, false,
          "hybrid mode, experts paged: tune the host's share of the missing experts on the steps "
          "(from --expert-host-share)");
ABSL_FLAG(bool, expert_prefetch, false,
          "experts paged: apply each sparse layer's router one layer early and copy the "
          "experts it predicts ahead");
ABSL_FLAG(bool, json, false, "JSON output");

int main(int argc, char** argv) {
  paged::ParseFlags(
      argc, argv,
      "paged-bench --model PATH --device cuda:0 --gpu-budget BYTES --batch B --prompt-len P "
      "--gen-len G [--weight-format F] [--mode paged|hybrid|resident|both|all] [--json]");
  paged::BenchOptions o;
  o.model_path = absl::GetFlag(FLAGS_model);
  o.device = absl::GetFlag(FLAGS_device);
  o.segment = absl::GetFlag(FLAGS_segment);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  o.gen_len = absl::GetFlag(FLAGS_gen_len);
  o.weight_format = absl::GetFlag(FLAGS_weight_format);
  o.mode = absl::GetFlag(FLAGS_mode);
  o.slots = absl::GetFlag(FLAGS_slots);
  o.resident = absl::GetFlag(FLAGS_resident);
  o.max_step_tokens = absl::GetFlag(FLAGS_max_step_tokens);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.host_compute = absl::GetFlag(FLAGS_host_compute);
  o.memory_gbps = absl::GetFlag(FLAGS_memory_gbs);
  if (o.memory_gbps < 0) {
    std::fprintf(stderr, "paged-bench: --memory-gbs must be >= 0\n");
    return 2;
  }
  o.decode_tokens = absl::GetFlag(FLAGS_decode_tokens);
  o.routing = absl::GetFlag(FLAGS_routing);
  o.graphs = absl::GetFlag(FLAGS_graphs);
  o.host_threads = absl::GetFlag(FLAGS_host_threads);
  o.host_pin = absl::GetFlag(FLAGS_host_pin);
  o.host_activations = absl::GetFlag(FLAGS_host_activations);
  o.experts = absl::GetFlag(FLAGS_experts);
  o.expert_eviction = absl::GetFlag(FLAGS_expert_eviction);
  o.expert_prefetch = absl::GetFlag(FLAGS_expert_prefetch);
  o.expert_host_share = absl::GetFlag(FLAGS_expert_host_share);
  o.expert_misses = absl::GetFlag(FLAGS_expert_misses);
  o.tune_expert_share = absl::GetFlag(FLAGS_tune_expert_share);
  auto budget = paged::ParseByteSize(absl::GetFlag(FLAGS_gpu_budget), "gpu-budget");
  if (budget.ok()) o.gpu_budget = *budget;
  absl::StatusOr<paged::BenchReport> r =
      !budget.ok() ? absl::StatusOr<paged::BenchReport>(budget.status())
      : o.model_path.empty() && o.segment.empty()
          ? absl::InvalidArgumentError("--model or --segment is required")
          : paged::RunBench(o);
  if (!r.ok()) {
    std::fprintf(stderr, "paged-bench: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = {
        {"h2d_gbs", r->h2d_gbs}, {"d2h_gbs", r->d2h_gbs}, {"rows", nlohmann::json::array()}};
    for (const auto& row : r->rows) j["rows"].push_back(row.ToJson());
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s", paged::FormatReport(o, *r).c_str());
  }
  return 0;
}
