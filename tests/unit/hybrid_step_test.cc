// The hybrid step on the CPU backend: each paged matrix's rows split between
// the "device" (the CPU backend, from rows copied into its slots) and the
// host executor (reading the image in place). Both sides run the CPU
// executor's kernels, so a split product equals the unsplit one bit for bit:
// the output must equal the resident run's token for token and leave the
// host KV pool byte-identical, for every weight format, every share, shares
// that change from step to step (slots topped up with the rows they lack),
// resident layers and the device KV cache, and steps of many rows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/unit/golden_util.h"
#include "tests/unit/pager_util.h"
#include "worker/pager/hybrid_plan.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using testing::kMiB;
using testing::PagedRun;

class HybridStepTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    image_ = testing::StoriesImage(GetParam());
    resident_ = testing::GenerateStories(nullptr, "cpu", GetParam());
    ASSERT_EQ(resident_.tokens.size(), 200u);
  }
  MemoryPlan Plan(const std::string& resident, bool kv_cache) {
    PlanLimits l = testing::SmallLimits(4096 * kMiB);
    l.resident = resident;
    auto p = PlanMemory(*image_->image().header, l);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!kv_cache) {
      p->kv_cache_blocks = 0;
      p->kv_cache_bytes = 0;
    }
    return *p;
  }
  static PagerOptions Share(double s) {
    PagerOptions o;
    o.host_share = [s](int) { return s; };
    return o;
  }
  uint64_t LayerBytes() const { return image_->image().header->layer_used_bytes; }

  std::unique_ptr<OwnedImage> image_;
  PagedRun resident_;
};

TEST_P(HybridStepTest, SplitRowsMatchResidentForEveryShare) {
  const MemoryPlan plan = Plan("none", /*kv_cache=*/false);
  const int layers = image_->image().header->model.n_layers;
  for (double share : {0.25, 0.5, 0.75, 1.0}) {
    const PagedRun r = testing::GenerateStories(&plan, "cpu", GetParam(), Share(share));
    EXPECT_EQ(r.tokens, resident_.tokens) << "share " << share;
    EXPECT_EQ(r.kv, resident_.kv) << "host KV pool differs, share " << share;
    // Fewer bytes crossed than a whole layer per layer per step; the host
    // read the rest in place.
    EXPECT_LT(r.stats.h2d_weight_bytes, 200u * layers * LayerBytes()) << share;
    EXPECT_GT(r.stats.host_weight_bytes, 0u) << share;
  }
  const PagedRun none = testing::GenerateStories(&plan, "cpu", GetParam(), Share(0));
  EXPECT_EQ(none.tokens, resident_.tokens);
  EXPECT_EQ(none.stats.host_weight_bytes, 0u);
  EXPECT_EQ(none.stats.h2d_weight_bytes, 200u * layers * LayerBytes());
}

TEST_P(HybridStepTest, SharesThatChangeEveryStepTopUpTheSlots) {
  // 0.8, 0, 0.4, 0.8, ...: a slot copied for 0.8 then used at 0 gets its
  // missing rows first; one copied for 0 and used at 0.4 keeps its rows.
  const MemoryPlan plan = Plan("none", /*kv_cache=*/true);
  PagerOptions o;
  int calls = 0;
  o.host_share = [&calls](int) { return 0.4 * double((2 - calls++ % 3) % 3); };
  const PagedRun r = testing::GenerateStories(&plan, "cpu", GetParam(), o);
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv);
  EXPECT_GT(calls, 200);
  EXPECT_GT(r.stats.host_weight_bytes, 0u);
}

TEST_P(HybridStepTest, TheTunedShareMovesStepByStepAndChangesNoToken) {
  // --host-compute=auto: the planner's share from a profile, then the
  // tuner's probes around it, timed on this machine (any shares: the
  // output cannot depend on them).
  const MemoryPlan plan = Plan("none", /*kv_cache=*/false);
  PagerOptions o;
  o.hybrid_policy = HybridPolicy{};
  ASSERT_TRUE(o.hybrid_policy->tune);
  o.host_gbps = {{1, 60.0}};  // with a measured link: a share of about a half
  const PagedRun r = testing::GenerateStories(&plan, "cpu", GetParam(), o);
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv);
  EXPECT_GT(r.stats.host_weight_bytes, 0u);
}

TEST_P(HybridStepTest, ResidentLayersAndTheKvCacheMixWithSplitOnes) {
  const MemoryPlan plan = Plan("2", /*kv_cache=*/true);
  ASSERT_EQ(plan.n_resident, 2);
  const PagedRun r = testing::GenerateStories(&plan, "cpu", GetParam(), Share(0.5));
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv);
  EXPECT_EQ(r.stats.kv_cached_steps, 200u);
}

TEST_P(HybridStepTest, AStepOfManyRowsSplitsLikeOneRow) {
  // A 9-token prompt in one step, then decode, with the share at 0.5 for
  // every step.
  const std::vector<int32_t> prompt = {1, 403, 407, 261, 378, 429, 302, 261, 422};
  const PagedRun want = testing::GenerateStories(nullptr, "cpu", GetParam(), {}, prompt);
  const MemoryPlan plan = Plan("none", /*kv_cache=*/false);
  const PagedRun r = testing::GenerateStories(&plan, "cpu", GetParam(), Share(0.5), prompt);
  EXPECT_EQ(r.tokens, want.tokens);
  EXPECT_EQ(r.kv, want.kv);
}

// The HF golden models carry what stories260K lacks (q/k/v biases of
// qwen2, GQA, a tied lm_head): each, resident and split, from the same prompt.
struct GoldenRun {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> kv;
  uint64_t host_bytes = 0;
  bool embedding_on_host = false;
  uint64_t globals_bytes = 0;
};

GoldenRun RunGolden(const std::string& dir, bool split) {
  LayoutOptions layout;
  layout.kv_gib = 0.001;
  auto img = OwnedImage::Build(dir, layout);
  EXPECT_TRUE(img.ok()) << img.status();
  if (!img.ok()) return {};
  const ModelImage& image = (*img)->image();
  auto backend = MakeExecCpuBackend(2);
  std::unique_ptr<WeightProvider> provider;
  Pager* pager = nullptr;
  std::unique_ptr<HostExecutor> host;
  if (split) {
    PlanLimits l = testing::SmallLimits(4096 * kMiB);
    l.resident = "none";
    l.embedding_on_host = true;  // an untied model's table stays on the host
    auto plan = PlanMemory(*image.header, l);
    EXPECT_TRUE(plan.ok()) << plan.status();
    PagerOptions o;
    o.host_share = [](int) { return 0.5; };
    auto p = Pager::Create(backend.get(), image, *plan, o);
    EXPECT_TRUE(p.ok()) << p.status();
    pager = p->get();
    provider = std::move(*p);
    cpu_exec::ExecPoolOptions eo;
    eo.threads = 2;
    host = cpu_exec::MakeHostExecutor(eo);
  } else {
    provider = std::move(*ResidentProvider::Create(backend.get(), image));
  }
  Engine engine(backend.get(), provider.get(), image.config(), int(image.header->block_tokens));
  engine.set_host_executor(host.get());
  GenerateRequest req;
  req.prompt = {1, 5, 9, 14};
  req.max_new_tokens = 20;
  req.stop_at_eos = false;
  auto r = Generate(engine, req, image.header->kv_n_blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  GoldenRun out;
  if (r.ok()) out.tokens = r->tokens;
  if (pager != nullptr) {
    out.host_bytes = pager->stats().host_weight_bytes;
    out.embedding_on_host = pager->plan().embedding_on_host;
    out.globals_bytes = pager->plan().globals_bytes;
  }
  const SegmentHeader& h = *image.header;
  const uint64_t blocks = (24 + h.block_tokens - 1) / h.block_tokens;
  for (int l = 0; l < h.model.n_layers; ++l) {
    const uint8_t* base = image.kv + (h.KvBlockOffset(l, 0) - h.kv_offset);
    out.kv.insert(out.kv.end(), base, base + blocks * h.kv_block_bytes);
  }
  return out;
}

// The untied ones also keep their embedding table on the host (the engine
// gathers the step's rows there): it leaves the device's globals.
TEST(HybridStepGoldenTest, BiasesGqaAndTiedEmbeddingsSplitLikeTheRest) {
  for (const std::string& name : testing::GoldenCases()) {
    const GoldenRun want = RunGolden(testing::GoldenDir(name), false);
    const GoldenRun got = RunGolden(testing::GoldenDir(name), true);
    ASSERT_EQ(want.tokens.size(), 20u) << name;
    EXPECT_EQ(got.tokens, want.tokens) << name;
    EXPECT_EQ(got.kv, want.kv) << name;
    EXPECT_GT(got.host_bytes, 0u) << name;
    LayoutOptions layout;
    auto img = OwnedImage::Build(testing::GoldenDir(name), layout);
    ASSERT_TRUE(img.ok());
    const SegmentHeader& h = *(*img)->image().header;
    const TensorEntry* emb = h.FindGlobal("tok_embd");
    ASSERT_NE(emb, nullptr);
    EXPECT_EQ(got.embedding_on_host, !h.model.tied_embeddings) << name;
    if (got.embedding_on_host) {
      EXPECT_LE(got.globals_bytes, h.globals_bytes - emb->bytes) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, HybridStepTest,
                         ::testing::Values("f32", "f16", "bf16", "int8", "int4"));

}  // namespace
}  // namespace paged
