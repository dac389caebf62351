// The memory plan sized to the workload (issue 16): the auto KV area holds at
// least one full context, never costs a resident layer and grows into the
// budget the layers leave, up to what a step can reference; the workspace
// follows the step caps and the backend (no cuBLAS slack on the CPU); the
// worker's auto step flags take the coordinator's caps.
#include "worker/pager/planner.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "client/pagectl/presets.h"
#include "store/segment_builder.h"
#include "tests/unit/pager_util.h"
#include "worker/pager/worker_runtime.h"

namespace paged {
namespace {

using ::testing::HasSubstr;
using testing::kMiB;
constexpr uint64_t kGiB = 1ull << 30;

// The segment header of a real model's shape (weights never materialized):
// `preset` as pagectl make-model knows it, stored as f16.
std::unique_ptr<SegmentHeader> PresetHeader(const std::string& preset, double kv_gib = 16) {
  const absl::StatusOr<Preset> p = FindPreset(preset);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return nullptr;
  ModelSource src;
  src.path = preset;
  src.format = "synthetic";
  src.config = PresetModelConfig(*p);
  const ModelConfig& c = src.config;
  auto add = [&](const std::string& name, int layer, int64_t rows, int64_t cols) {
    SourceTensor t;
    t.name = name;
    t.layer = layer;
    t.type = SourceType::kF16;
    t.rows = rows;
    t.cols = cols;
    t.bytes = uint64_t(rows * cols) * 2;
    src.tensors.push_back(t);
  };
  add("tok_embd", -1, c.vocab, c.hidden);
  add("output_norm", -1, 1, c.hidden);
  if (!c.tied_embeddings) add("output", -1, c.vocab, c.hidden);
  for (int l = 0; l < c.n_layers; ++l) {
    add("attn_norm", l, 1, c.hidden);
    add("wq", l, c.q_dim(), c.hidden);
    add("wk", l, c.kv_dim(), c.hidden);
    add("wv", l, c.kv_dim(), c.hidden);
    add("wo", l, c.hidden, c.q_dim());
    add("ffn_norm", l, 1, c.hidden);
    add("w_gate", l, c.ffn, c.hidden);
    add("w_up", l, c.ffn, c.hidden);
    add("w_down", l, c.hidden, c.ffn);
  }
  LayoutOptions layout;
  layout.weight_format = "f16";
  layout.kv_gib = kv_gib;
  auto h = PlanSegment(src, layout);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? *std::move(h) : nullptr;
}

// The coordinator's default caps (paged --max-step-tokens / --max-seqs-per-step).
PlanLimits ServingLimits(uint64_t budget) {
  PlanLimits l;
  l.budget_bytes = budget;
  l.max_step_tokens = 512;
  l.max_step_seqs = 32;
  return l;
}

TEST(PlannerTest, AutoKvAreaNeverCostsALayerAndHoldsOneContext) {
  auto h = PresetHeader("llama-7b");
  ASSERT_NE(h, nullptr);
  const int context = h->model.max_context;
  ASSERT_EQ(context, 4096);
  const uint64_t bt = h->block_tokens;
  const uint64_t one_context = (uint64_t(context) + bt - 1) / bt + 32;
  const uint64_t layer = h->layer_used_bytes;
  for (uint64_t budget = 3 * kGiB; budget <= 12 * kGiB; budget += 128 * kMiB) {
    PlanLimits l = ServingLimits(budget);
    auto autop = PlanMemory(*h, l);
    ASSERT_TRUE(autop.ok()) << autop.status();
    l.max_step_kv_tokens = context;  // the least an auto area may be
    auto least = PlanMemory(*h, l);
    ASSERT_TRUE(least.ok()) << least.status();
    SCOPED_TRACE(autop->Describe());
    EXPECT_TRUE(autop->kv_area_auto);
    EXPECT_EQ(autop->n_resident, least->n_resident);
    EXPECT_EQ(autop->kv_area_min_blocks, one_context);
    EXPECT_GE(autop->slot_kv_blocks, one_context);
    EXPECT_LE(autop->slot_kv_blocks, autop->kv_area_max_blocks);
    EXPECT_LE(autop->kv_area_max_blocks, 32 * uint64_t(context) / bt);  // every sequence full
    EXPECT_LE(autop->kv_area_max_blocks, h->kv_n_blocks);
    EXPECT_LE(autop->total_bytes, budget);
    // What the layers leave goes to the area first: below its cap nothing is
    // left for the KV cache, and what stays unplanned is under a layer.
    if (autop->slot_kv_blocks < autop->kv_area_max_blocks) {
      EXPECT_EQ(autop->kv_cache_blocks, 0u);
      if (autop->n_paged() > 0) {
        EXPECT_LT(budget - autop->total_bytes, layer);
      }
    }
    // The old default (16384 rows a step) never keeps more layers.
    l.max_step_kv_tokens = kDefaultMaxStepKvTokens;
    auto old = PlanMemory(*h, l);
    ASSERT_TRUE(old.ok()) << old.status();
    EXPECT_LE(old->n_resident, autop->n_resident);
  }
}

TEST(PlannerTest, AtFourGiBTheAutoAreaKeepsTheLayerTheOldDefaultCost) {
  auto h = PresetHeader("llama-7b");
  ASSERT_NE(h, nullptr);
  PlanLimits l = ServingLimits(4 * kGiB);
  auto autop = PlanMemory(*h, l);
  ASSERT_TRUE(autop.ok()) << autop.status();
  l.max_step_kv_tokens = h->model.max_context;
  auto one = PlanMemory(*h, l);
  ASSERT_TRUE(one.ok()) << one.status();
  l.max_step_kv_tokens = kDefaultMaxStepKvTokens;
  auto old = PlanMemory(*h, l);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(autop->n_resident, one->n_resident) << autop->Describe() << one->Describe();
  EXPECT_GT(autop->n_resident, old->n_resident) << autop->Describe() << old->Describe();
  // The budget the layers leave holds more than one context's area.
  EXPECT_GT(autop->slot_kv_blocks, one->slot_kv_blocks) << autop->Describe();
  EXPECT_THAT(autop->Describe(), HasSubstr("KV area"));
  EXPECT_THAT(autop->Describe(), HasSubstr("auto: one context (4096 tokens)"));
}

TEST(PlannerTest, AutoKvAreaStopsAtWhatAStepCanReadThenTheCacheGetsTheRest) {
  PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
  auto img = testing::StoriesImage();
  const SegmentHeader& h = *img->image().header;
  PlanLimits l = ServingLimits(64 * kMiB);
  l.backend = PlanBackend::kCpu;
  l.max_step_seqs = 2;
  auto p = PlanMemory(h, l);
  ASSERT_TRUE(p.ok()) << p.status();
  const uint64_t context_blocks =
      (uint64_t(h.model.max_context) + h.block_tokens - 1) / h.block_tokens;
  EXPECT_EQ(p->n_paged(), 0);
  EXPECT_EQ(p->kv_area_max_blocks, std::min<uint64_t>(2 * context_blocks, h.kv_n_blocks));
  EXPECT_EQ(p->slot_kv_blocks, p->kv_area_max_blocks);
  EXPECT_GT(p->kv_cache_blocks, 0u);
  EXPECT_THAT(p->Describe(), HasSubstr("auto: all a step can read, 2 sequences x 2048 tokens"));
  // With more sequences than the pool holds, the pool is the cap.
  l.max_step_seqs = 32;
  p = PlanMemory(h, l);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kv_area_max_blocks, h.kv_n_blocks);
  EXPECT_EQ(p->slot_kv_blocks, h.kv_n_blocks);
  EXPECT_THAT(p->Describe(), HasSubstr("the whole KV pool"));
  // A context given by the coordinator bounds the area instead of the model's.
  l.max_step_seqs = 2;
  l.max_context = 256;
  p = PlanMemory(h, l);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->kv_area_min_blocks, 512 / h.block_tokens + 2);  // 512 step tokens > 256
  EXPECT_EQ(p->kv_area_max_blocks, p->kv_area_min_blocks);
}

TEST(PlannerTest, WorkspaceFollowsTheStepAndTheBackend) {
  PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
  auto img = testing::StoriesImage();
  const SegmentHeader& h = *img->image().header;
  PlanLimits l = ServingLimits(4 * kGiB);
  l.backend = PlanBackend::kCpu;
  auto cpu = PlanMemory(h, l);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_LT(cpu->workspace_bytes, 4 * kMiB) << cpu->Describe();
  EXPECT_EQ(cpu->workspace_library_bytes, 0u);
  // paged-bench's default workload: one sequence, a 128-token prompt.
  l.max_step_tokens = 128;
  l.max_step_seqs = 1;
  auto bench = PlanMemory(h, l);
  ASSERT_TRUE(bench.ok()) << bench.status();
  EXPECT_LT(bench->workspace_bytes, 1 * kMiB) << bench->Describe();
  // CUDA adds cuBLAS's 32 MiB workspace and page rounding, sized to the
  // model: far under the old fixed 160 MiB for a tiny one.
  l.backend = PlanBackend::kCuda;
  auto cuda = PlanMemory(h, l);
  ASSERT_TRUE(cuda.ok()) << cuda.status();
  EXPECT_GE(cuda->workspace_library_bytes, 32 * kMiB);
  EXPECT_LT(cuda->workspace_bytes, 64 * kMiB) << cuda->Describe();
  EXPECT_THAT(cuda->Describe(), HasSubstr("cuBLAS workspace"));
  // The workspace grows with the step.
  l.max_step_tokens = 2048;
  l.max_step_seqs = 64;
  auto big = PlanMemory(h, l);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_GT(big->workspace_bytes, cuda->workspace_bytes);
}

TEST(PlannerTest, BadStepLimitsAreInvalid) {
  PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
  auto img = testing::StoriesImage();
  const SegmentHeader& h = *img->image().header;
  PlanLimits l = ServingLimits(64 * kMiB);
  l.max_step_kv_tokens = 100;  // under the 512 step tokens
  EXPECT_EQ(PlanMemory(h, l).status().code(), absl::StatusCode::kInvalidArgument);
  l.max_step_kv_tokens = -1;
  EXPECT_EQ(PlanMemory(h, l).status().code(), absl::StatusCode::kInvalidArgument);
  l.max_step_kv_tokens = 0;
  l.max_context = -5;
  EXPECT_EQ(PlanMemory(h, l).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StepFlagsTest, AutoTakesTheCoordinatorsCapsAndACountWins) {
  PlanLimits l;
  const StepCaps caps{96, 3, 1024};
  ASSERT_TRUE(ApplyStepFlags(StepFlags{}, &caps, &l).ok());
  EXPECT_EQ(l.max_step_tokens, 96);
  EXPECT_EQ(l.max_step_seqs, 3);
  EXPECT_EQ(l.max_step_kv_tokens, 0);  // auto: the planner sizes it
  EXPECT_EQ(l.max_context, 1024);
  ASSERT_TRUE(ApplyStepFlags(StepFlags{"300", "auto", "4096"}, &caps, &l).ok());
  EXPECT_EQ(l.max_step_tokens, 300);
  EXPECT_EQ(l.max_step_seqs, 3);
  EXPECT_EQ(l.max_step_kv_tokens, 4096);
  // No coordinator (or an older one): the standalone defaults.
  ASSERT_TRUE(ApplyStepFlags(StepFlags{}, nullptr, &l).ok());
  EXPECT_EQ(l.max_step_tokens, kDefaultMaxStepTokens);
  EXPECT_EQ(l.max_step_seqs, kDefaultMaxStepSeqs);
  EXPECT_EQ(l.max_context, 0);
  const absl::Status bad = ApplyStepFlags(StepFlags{"auto", "lots", "auto"}, nullptr, &l);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.message()), HasSubstr("--max-step-seqs=lots"));
  EXPECT_FALSE(ApplyStepFlags(StepFlags{"0", "auto", "auto"}, nullptr, &l).ok());
}

}  // namespace
}  // namespace paged
