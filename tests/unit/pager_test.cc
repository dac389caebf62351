// The pager on the CPU backend (host buffers stand in for device slots, the
// copies run on the backend's copy threads): paged output equals resident
// output token for token, for 2 slots, 3 slots and all resident, with KV
// paged per layer and KV cached; the host KV pool (the truth) ends up exactly
// as a resident run leaves it.
#include "worker/pager/pager.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "tests/unit/pager_util.h"
#include "tokenizer/sp_tokenizer.h"
#include "worker/backends/cpu/cpu_backend.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using ::testing::HasSubstr;

using testing::kMiB;
using testing::PagedRun;
using testing::SmallLimits;
using testing::StoriesImage;

PagedRun Generate200(const MemoryPlan* plan) {
  return testing::GenerateStories(plan, "cpu", "f32");
}

class PagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
    resident_ = Generate200(nullptr);
    ASSERT_EQ(resident_.tokens.size(), 200u);
    header_ = StoriesImage()->image().header;  // geometry only
    image_ = StoriesImage();
  }
  MemoryPlan Plan(uint64_t budget, const std::string& resident, int slots, bool kv_cache) {
    PlanLimits l = SmallLimits(budget);
    l.resident = resident;
    l.slots = slots;
    auto p = PlanMemory(*image_->image().header, l);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!kv_cache) {
      p->kv_cache_blocks = 0;
      p->kv_cache_bytes = 0;
    }
    return *p;
  }
  PagedRun resident_;
  const SegmentHeader* header_ = nullptr;
  std::unique_ptr<OwnedImage> image_;
};

TEST_F(PagerTest, TwoSlotsNoResidentLayersKvPagedMatchesResident) {
  const MemoryPlan plan = Plan(4096 * kMiB, "none", 2, /*kv_cache=*/false);
  ASSERT_EQ(plan.n_resident, 0);
  const PagedRun r = Generate200(&plan);
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv) << "host KV pool differs from the resident run's";
  // Every step copied every layer in, gathered KV per layer, wrote rows back.
  EXPECT_EQ(r.stats.steps, 200u);
  EXPECT_EQ(r.stats.kv_paged_steps, 200u);
  EXPECT_EQ(r.stats.h2d_weight_bytes, 200u * 5 * image_->image().header->layer_used_bytes);
  EXPECT_GT(r.stats.h2d_kv_bytes, 0u);
  EXPECT_EQ(r.stats.d2h_kv_bytes, 200u * 5 * 2 * 32 * 4);  // rows x layers x (K,V) x kv_dim x f32
}

TEST_F(PagerTest, ThreeSlotsWithKvCacheMatchesResident) {
  const MemoryPlan plan = Plan(4096 * kMiB, "none", 3, /*kv_cache=*/true);
  ASSERT_GT(plan.kv_cache_blocks, 0u);
  const PagedRun r = Generate200(&plan);
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv);
  EXPECT_EQ(r.stats.kv_cached_steps, 200u);
}

TEST_F(PagerTest, SomeResidentLayersMatchResident) {
  const MemoryPlan plan = Plan(4096 * kMiB, "2", 2, /*kv_cache=*/false);
  ASSERT_EQ(plan.n_resident, 2);
  const PagedRun r = Generate200(&plan);
  EXPECT_EQ(r.tokens, resident_.tokens);
  EXPECT_EQ(r.kv, resident_.kv);
  EXPECT_EQ(r.stats.h2d_weight_bytes, 200u * 3 * image_->image().header->layer_used_bytes);
}

TEST_F(PagerTest, AllResidentThroughThePagerMatches) {
  for (bool cache : {false, true}) {
    const MemoryPlan plan = Plan(4096 * kMiB, "all", 2, cache);
    ASSERT_EQ(plan.n_paged(), 0);
    const PagedRun r = Generate200(&plan);
    EXPECT_EQ(r.tokens, resident_.tokens) << "kv cache " << cache;
    EXPECT_EQ(r.kv, resident_.kv);
    EXPECT_EQ(r.stats.h2d_weight_bytes, 0u);
  }
}

TEST_F(PagerTest, BatchOnScatteredBlocksMatchesResidentWithKvPaged) {
  auto tok = SpTokenizer::Create(image_->vocab());
  const std::vector<std::string> texts = {"Lily wanted to play", "The cat sat on the mat.",
                                          "One day", "Tom and his mom went to the store."};
  auto run = [&](bool paged) {
    auto img = StoriesImage();
    auto backend = MakeCpuBackend(2);
    std::unique_ptr<WeightProvider> provider;
    if (paged) {
      const MemoryPlan plan = Plan(4096 * kMiB, "none", 2, /*kv_cache=*/false);
      provider = std::move(*Pager::Create(backend.get(), img->image(), plan));
    } else {
      provider = std::move(*ResidentProvider::Create(backend.get(), img->image()));
    }
    Engine engine(backend.get(), provider.get(), img->image().config(), 16);
    std::vector<SeqStep> seqs(texts.size());
    int32_t next_block = 7;  // scattered: every third block
    for (size_t i = 0; i < texts.size(); ++i) {
      seqs[i].seq_id = int64_t(i);
      seqs[i].tokens = tok->Encode(texts[i], true);
      for (int b = 0; b < 4; ++b, next_block += 3) seqs[i].block_table.push_back(next_block);
    }
    std::vector<std::vector<int32_t>> got(texts.size());
    for (int step = 0; step < 24; ++step) {
      StepBatch batch;
      std::vector<size_t> which;
      for (size_t i = 0; i < texts.size(); ++i) {
        if (int(i) <= step) {
          batch.seqs.push_back(seqs[i]);
          which.push_back(i);
        }
      }
      auto out = engine.Step(batch);
      EXPECT_TRUE(out.ok()) << out.status();
      if (out.ok()) testing::FeedBack(*out, which, &seqs, &got);
    }
    return got;
  };
  EXPECT_EQ(run(true), run(false));
}

// A sequence leaves this worker's pager (its link broke), advances on another
// worker over the same host pool, and comes back: the device KV cache must
// not serve the rows it held from before; the output equals a resident run.
TEST_F(PagerTest, ASequenceThatAdvancedElsewhereIsRefilledFromTheHost) {
  auto img = StoriesImage();
  auto backend = MakeCpuBackend(2);
  const MemoryPlan cached = Plan(4096 * kMiB, "none", 2, /*kv_cache=*/true);
  auto here = Pager::Create(backend.get(), img->image(), cached);
  auto there = Pager::Create(backend.get(), img->image(), cached);
  ASSERT_TRUE(here.ok() && there.ok());
  Engine a(backend.get(), here->get(), img->image().config(), 16);
  Engine b(backend.get(), there->get(), img->image().config(), 16);
  SeqStep s;
  s.seq_id = 9;
  s.tokens = {1};
  for (int blk = 0; blk < 13; ++blk) s.block_table.push_back(blk);
  std::vector<int32_t> got;
  // 0-19 here, 20-39 there, 40-79 here again.
  for (int step = 0; step < 80; ++step) {
    Engine& e = step >= 20 && step < 40 ? b : a;
    auto out = e.Step(StepBatch{{s}});
    ASSERT_TRUE(out.ok()) << out.status();
    got.push_back(out->next_tokens[0]);
    s.start_pos += int32_t(s.tokens.size());
    s.tokens = {out->next_tokens[0]};
  }
  EXPECT_EQ(got, std::vector<int32_t>(resident_.tokens.begin(), resident_.tokens.begin() + 80));
}

TEST(PlannerTest, BudgetTooSmallIsAClearErrorAndMoreBudgetMeansMoreResidentLayers) {
  PAGED_REQUIRE_FIXTURE(testing::Stories260KPath(), "../shared/models/stories260K.gguf");
  auto img = StoriesImage();
  const SegmentHeader& h = *img->image().header;
  // The least budget: globals, workspace and two slots (no KV cache).
  PlanLimits none = SmallLimits(4096 * kMiB);
  none.resident = "none";
  auto least = PlanMemory(h, none);
  ASSERT_TRUE(least.ok()) << least.status();
  const uint64_t min_budget = least->total_bytes - least->kv_cache_bytes;
  auto small = PlanMemory(h, SmallLimits(min_budget - 1));
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("too small"));
  // From there, in steps under a layer's size, up to every layer resident.
  int last = -1;
  for (uint64_t budget = min_budget; budget < min_budget + 8 * h.layer_used_bytes;
       budget += h.layer_used_bytes / 3) {
    auto p = PlanMemory(h, SmallLimits(budget));
    ASSERT_TRUE(p.ok()) << budget << " bytes: " << p.status();
    EXPECT_LE(p->total_bytes, p->budget_bytes);
    EXPECT_GE(p->n_resident, last);
    last = p->n_resident;
    EXPECT_EQ(std::count(p->resident.begin(), p->resident.end(), true), p->n_resident);
  }
  EXPECT_EQ(last, 5);
  PlanLimits bad = SmallLimits(296 * kMiB);
  bad.slots = 1;
  EXPECT_EQ(PlanMemory(h, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = SmallLimits(296 * kMiB);
  bad.resident = "six";
  EXPECT_THAT(std::string(PlanMemory(h, bad).status().message()), HasSubstr("--resident=six"));
}

}  // namespace
}  // namespace paged
