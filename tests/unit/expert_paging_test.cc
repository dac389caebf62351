// Expert-level paging (docs/pager.md, "Experts") on the CPU backend: the
// device expert cache's bookkeeping (ExpertCache, LRU and LFU), and tiny
// mixtures of experts run step by step with experts paged through a cache
// too small for them (misses and evictions), all cached, computed by the
// host executor in place, with dense parts resident or paged, a hybrid
// step: the same tokens and logits as the resident run, bit for bit, and
// the same host KV pool. Each step moves only its routed experts' bytes
// (checked against the double-precision reference's routing) plus the
// dense parts of the paged layers. gpt-oss too (expert biases and the
// clamped SwiGLU on the host; MXFP4 experts; the router's bias in the
// prefetch's prediction).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "store/model_source.h"
#include "tests/unit/expert_paging_util.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/gpt_oss_util.h"
#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"
#include "worker/engine/backend_factory.h"
#include "worker/pager/expert_cache.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using expert_testing::FourLayerMoe;
using expert_testing::RunOptions;
using expert_testing::RunSteps;
using expert_testing::StepRun;

// ---- the cache's bookkeeping ---------------------------------------------------

TEST(ExpertCacheTest, LruEvictsTheLeastRecentlyUsedUnpinnedSlot) {
  ExpertCache c(3, 2, 4, ExpertEviction::kLru);
  EXPECT_EQ(c.Find(0, 0), -1);
  const int a = c.Insert(0, 0), b = c.Insert(0, 1), d = c.Insert(1, 2);
  EXPECT_EQ(std::set<int>({a, b, d}).size(), 3u);
  EXPECT_EQ(c.used(), 3);
  c.UnpinAll();
  c.Use(0, 0);  // (0, 1) is now the least recent
  ExpertCache::Key gone;
  const int s = c.Insert(1, 3, &gone);
  EXPECT_EQ(s, b);
  EXPECT_EQ(gone, (ExpertCache::Key{0, 1}));
  EXPECT_EQ(c.Find(0, 1), -1);
  EXPECT_EQ(c.Find(1, 3), b);
  EXPECT_EQ(c.evictions(), 1u);
  // Pinned slots are never victims; all pinned: no slot.
  c.UnpinAll();
  c.Pin(a);
  c.Pin(b);
  EXPECT_EQ(c.Insert(1, 0, &gone), d);
  EXPECT_EQ(gone, (ExpertCache::Key{1, 2}));
  EXPECT_EQ(c.Insert(1, 1), -1);
  // A full LRU cache admits nothing it was not asked to hold.
  c.UnpinAll();
  EXPECT_FALSE(c.WorthAdmitting(1, 1));
}

TEST(ExpertCacheTest, LfuKeepsHotExpertsThroughABurstOfColdOnes) {
  ExpertCache lfu(2, 1, 8, ExpertEviction::kLfu);
  ExpertCache lru(2, 1, 8, ExpertEviction::kLru);
  for (ExpertCache* c : {&lfu, &lru}) {
    // Expert 0 is routed to often, then cold experts 1..5 once each.
    for (int i = 0; i < 5; ++i) c->Use(0, 0);
    c->Insert(0, 0);
    c->UnpinAll();
    for (int e = 1; e <= 5; ++e) {
      c->Use(0, e);
      if (c->Find(0, e) < 0) c->Insert(0, e);
      c->UnpinAll();
    }
  }
  EXPECT_GE(lfu.Find(0, 0), 0);   // frequency keeps it
  EXPECT_EQ(lru.Find(0, 0), -1);  // recency lets it go
  // Ties in frequency: the least recent goes.
  ExpertCache t(2, 1, 4, ExpertEviction::kLfu);
  t.Use(0, 0), t.Insert(0, 0);
  t.Use(0, 1), t.Insert(0, 1);
  t.UnpinAll();
  t.Use(0, 0);
  t.Use(0, 1);  // both counted twice; 0 used longer ago
  ExpertCache::Key gone;
  t.Use(0, 2);
  t.Insert(0, 2, &gone);
  EXPECT_EQ(gone, (ExpertCache::Key{0, 0}));
  // Admission: a free slot, or more uses than the victim.
  ExpertCache adm(1, 1, 4, ExpertEviction::kLfu);
  EXPECT_TRUE(adm.WorthAdmitting(0, 3));
  adm.Use(0, 0), adm.Use(0, 0), adm.Insert(0, 0);
  adm.UnpinAll();
  adm.Use(0, 3);
  EXPECT_FALSE(adm.WorthAdmitting(0, 3));  // 1 use against 2
  adm.Use(0, 3), adm.Use(0, 3);
  EXPECT_TRUE(adm.WorthAdmitting(0, 3));
}

TEST(ExpertCacheTest, CountsDecay) {
  ExpertCache c(1, 1, 2, ExpertEviction::kLfu, /*decay_period=*/4);
  c.Use(0, 0), c.Use(0, 0), c.Use(0, 0);
  EXPECT_EQ(c.Count(0, 0), 3u);
  c.Use(0, 1);  // the 4th use halves every count
  EXPECT_EQ(c.Count(0, 0), 1u);
  EXPECT_EQ(c.Count(0, 1), 0u);
}

TEST(ExpertCacheTest, ParsesItsPolicies) {
  EXPECT_EQ(*ParseExpertEviction("lru"), ExpertEviction::kLru);
  EXPECT_EQ(*ParseExpertEviction("lfu"), ExpertEviction::kLfu);
  EXPECT_FALSE(ParseExpertEviction("fifo").ok());
  EXPECT_EQ(ExpertEvictionName(ExpertEviction::kLfu), "lfu");
}

// ---- the plan ------------------------------------------------------------------

TEST(ExpertPlanTest, DenseFirstThenTheExpertCache) {
  const auto m = reference::MakeModel(FourLayerMoe(), 51);
  auto img = OwnedImage::Build(m->src, expert_testing::F32Layout());
  ASSERT_TRUE(img.ok()) << img.status();
  const SegmentHeader& h = *(*img)->image().header;
  PlanLimits l;
  l.budget_bytes = 1ull << 30;
  l.max_step_tokens = 64;
  l.max_step_seqs = 4;
  l.max_step_kv_tokens = 256;
  l.backend = PlanBackend::kCpu;
  auto all = PlanMemory(h, l);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->experts_paged);
  EXPECT_EQ(all->total_experts, 3u * 8u);
  EXPECT_EQ(all->expert_slots, all->total_experts);  // the budget holds every expert
  EXPECT_EQ(all->n_resident, 4);                     // and every dense part
  EXPECT_NE(all->Describe().find("expert cache"), std::string::npos) << all->Describe();
  // A slot holds the largest dense part: the dense layer's block, or a
  // sparse layer's block up to its experts.
  uint64_t largest = 0;
  for (int i = 0; i < 4; ++i) largest = std::max(largest, LayerCopyBytes(h, i));
  EXPECT_EQ(LayerCopyBytes(h, 0), h.Layer(0).experts.dense_bytes);
  EXPECT_EQ(LayerCopyBytes(h, 1), h.LayerUsedBytes(1));
  EXPECT_EQ(all->slot_layer_bytes, AlignUp(largest, kTensorAlign));
  // Less budget: dense parts stay resident while the cache shrinks to one
  // layer's experts; then resident dense parts go.
  const uint64_t cache_less =
      all->total_bytes - all->kv_cache_bytes - (all->total_experts - 8) * all->expert_slot_bytes;
  l.budget_bytes = cache_less;
  auto small = PlanMemory(h, l);
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->expert_slots, 8u);
  EXPECT_EQ(small->n_resident, 4);
  l.budget_bytes = cache_less - 1;
  auto fewer = PlanMemory(h, l);
  ASSERT_TRUE(fewer.ok()) << fewer.status();
  EXPECT_LT(fewer->n_resident, 4);
  EXPECT_GE(fewer->expert_slots, 8u);
  // Whole layers (--expert-paging off): no expert cache, slots hold a layer.
  l.budget_bytes = 1ull << 30;
  l.expert_paging = false;
  auto whole = PlanMemory(h, l);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_FALSE(whole->experts_paged);
  EXPECT_EQ(whole->slot_layer_bytes, AlignUp(h.layer_used_bytes, kTensorAlign));
}

// ---- paged experts equal resident ---------------------------------------------

void ExpectSame(const StepRun& got, const StepRun& want, const std::string& what) {
  ASSERT_EQ(got.tokens.size(), size_t(expert_testing::kNewTokens)) << what;
  EXPECT_EQ(got.tokens, want.tokens) << what;
  EXPECT_EQ(got.logits, want.logits) << what;
  EXPECT_TRUE(got.kv == want.kv) << what << ": the host KV pool differs";
}

// qwen3_moe's features (q/k norms, q_dim != hidden, a dense layer first)
// with two sparse layers, so that one layer's experts do not hold them all.
ModelConfig Qwen3MoeThreeLayers() {
  ModelConfig c = moe_testing::Base(Arch::kQwen3Moe, 8, 3);
  c.SetMoeLayer(0, false);
  c.qk_norm = 1;
  c.norm_topk_prob = 1;
  c.head_dim = 32;
  return c;
}

// gpt-oss (moe_testing::GptOss: router and expert biases, the clamped
// SwiGLU with a limit that bites, attention sinks, q/k/v/o biases).
std::vector<ModelConfig> Configs() {
  return {FourLayerMoe(), moe_testing::Mixtral(), Qwen3MoeThreeLayers(), moe_testing::GptOss()};
}

TEST(ExpertPagingTest, PagedCachedAndHostComputedEqualResident) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  for (const ModelConfig& c : Configs()) {
    const auto m = reference::MakeModel(c, 52);
    const std::string name = DescribeConfig(c);
    RunOptions resident;
    resident.paged = false;
    const StepRun want = RunSteps(backend->get(), *m, resident);
    ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens)) << name;

    // One layer's experts: every layer evicts the previous one's.
    RunOptions paged;
    const StepRun p = RunSteps(backend->get(), *m, paged);
    ExpectSame(p, want, name + ", one layer's experts cached");
    EXPECT_GT(p.stats.back().expert_misses, 0u) << name;
    EXPECT_GT(p.stats.back().expert_evictions, 0u) << name;
    EXPECT_EQ(p.stats.back().expert_evictions, p.evictions) << name;

    // A few more slots, LRU and LFU: hits too.
    for (ExpertEviction e : {ExpertEviction::kLru, ExpertEviction::kLfu}) {
      RunOptions o;
      o.extra_expert_slots = 3;
      o.eviction = e;
      const StepRun r = RunSteps(backend->get(), *m, o);
      ExpectSame(r, want, name + ", " + std::string(ExpertEvictionName(e)));
      EXPECT_GT(r.stats.back().expert_hits, 0u) << name;
      EXPECT_GT(r.stats.back().expert_misses, 0u) << name;
    }

    // Every expert cached (preloaded): nothing copied after the start.
    RunOptions cached;
    cached.extra_expert_slots = -1;
    const StepRun all = RunSteps(backend->get(), *m, cached);
    ExpectSame(all, want, name + ", every expert cached");
    EXPECT_EQ(all.stats.back().expert_misses, 0u) << name;
    EXPECT_EQ(all.stats.back().h2d_expert_bytes, 0u) << name;
    EXPECT_GT(all.stats.back().expert_hits, 0u) << name;

    // Missing experts with one row computed by the host executor in place
    // (decode steps), those with more copied (the prefill step); dense
    // parts resident.
    for (const std::string resident_layers : {"none", "all"}) {
      RunOptions host;
      host.expert_host_rows = 1;
      host.resident = resident_layers;
      const StepRun r = RunSteps(backend->get(), *m, host);
      ExpectSame(r, want, name + ", host-computed experts, resident " + resident_layers);
      EXPECT_GT(r.stats.back().expert_host, 0u) << name;
      EXPECT_GT(r.stats.back().host_expert_bytes, 0u) << name;
    }

    // Misses read by the backend in place (the CPU backend's view of the
    // segment is the segment), none copied for the step; then half of them
    // computed by the host executor instead.
    for (const double host_share : {0.0, 0.5}) {
      RunOptions mapped;
      mapped.expert_misses_mapped = true;
      mapped.expert_host_rows = host_share > 0 ? -1 : 0;
      mapped.expert_host_share = host_share;
      const StepRun r = RunSteps(backend->get(), *m, mapped);
      const std::string what =
          absl::StrCat(name, ", misses read in place, host share ", host_share);
      ExpectSame(r, want, what);
      const PagerStats& s = r.stats.back();
      EXPECT_GT(s.expert_mapped, 0u) << what;
      EXPECT_GT(s.mapped_expert_bytes, 0u) << what;
      EXPECT_LE(s.mapped_expert_bytes, s.expert_mapped * r.plan.expert_slot_bytes) << what;
      EXPECT_EQ(s.expert_misses, 0u) << what;
      EXPECT_EQ(s.expert_host > 0, host_share > 0) << what;
    }

    // The host's share of the misses tuned on the steps: it probes other
    // shares (a tenth at a time, moving when one is faster) and the tokens
    // stay the resident run's.
    RunOptions tuned;
    tuned.expert_host_rows = -1;
    tuned.expert_host_share = 0.5;
    tuned.tune_expert_share = true;
    const StepRun t = RunSteps(backend->get(), *m, tuned);
    ExpectSame(t, want, name + ", tuned host share");
    ASSERT_EQ(t.expert_shares.size(), size_t(expert_testing::kNewTokens)) << name;
    std::set<double> shares(t.expert_shares.begin() + 1, t.expert_shares.end());
    EXPECT_TRUE(shares.count(0.5)) << name;
    EXPECT_GT(shares.size(), 1u) << name << ": the tuner never probed";
    for (double v : shares) {  // 0.5 and steps of a tenth from it
      EXPECT_GE(v, 0.0) << name;
      EXPECT_LE(v, 1.0) << name;
      EXPECT_NEAR((v - 0.5) * 10, std::round((v - 0.5) * 10), 1e-6) << name << ": " << v;
    }

    // A hybrid step (each dense matrix split with the host) and host experts.
    RunOptions hybrid;
    hybrid.expert_host_rows = 2;
    hybrid.host_share = 0.5;
    hybrid.extra_expert_slots = 2;
    ExpectSame(RunSteps(backend->get(), *m, hybrid), want, name + ", hybrid");

    // Prefetch: each sparse layer's router applied one layer early starts
    // copies of the experts it predicts (every routed expert the cache
    // lacks is still copied or host-computed when its layer comes).
    // (Under LFU a guess takes only a colder expert's slot unless it covers
    // half the layer or more, as the prompt's prediction does; LRU always
    // prefetches.)
    for (int host_rows : {0, 1}) {
      for (ExpertEviction e : {ExpertEviction::kLru, ExpertEviction::kLfu}) {
        RunOptions pre;
        pre.prefetch = true;
        pre.extra_expert_slots = 2;
        pre.expert_host_rows = host_rows;
        pre.eviction = e;
        const StepRun r = RunSteps(backend->get(), *m, pre);
        ExpectSame(r, want, name + ", prefetch");
        EXPECT_TRUE(r.plan.expert_prefetch);
        EXPECT_GT(r.plan.router_bytes, 0u);
        if (host_rows == 0) {
          EXPECT_GT(r.stats.back().expert_prefetched, 0u) << name << ", " << ExpertEvictionName(e);
        }
      }
    }

    // No preload: the cache starts empty.
    RunOptions cold;
    cold.preload = false;
    cold.extra_expert_slots = 1;
    ExpectSame(RunSteps(backend->get(), *m, cold), want, name + ", cold cache");
  }
}

// Each step copies only its routed experts that the cache misses, plus the
// dense parts of the paged layers: per step, weight bytes = dense parts +
// (misses + admissions) x one expert, and every routed expert (the
// reference's top-k at the step's positions) is a hit, a miss or
// host-computed, once per layer.
TEST(ExpertPagingTest, BytesMovedAreTheRoutedExpertsAndTheDenseParts) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const ModelConfig c = FourLayerMoe();
  const auto m = reference::MakeModel(c, 53);
  RunOptions resident;
  resident.paged = false;
  const StepRun want = RunSteps(backend->get(), *m, resident);
  ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens));
  // The reference's routing at every position the steps computed.
  std::vector<int32_t> seq = expert_testing::Prompt();
  seq.insert(seq.end(), want.tokens.begin(), want.tokens.end() - 1);
  reference::MoeTrace trace;
  reference::Reference(*m, seq, &trace);
  ASSERT_EQ(trace.picked.size(), size_t(c.n_layers));
  // Steps: the prompt, then one position each.
  std::vector<std::pair<size_t, size_t>> steps = {{0, expert_testing::Prompt().size()}};
  for (size_t p = expert_testing::Prompt().size(); p < seq.size(); ++p) steps.push_back({p, p + 1});

  for (int host_rows : {0, 1}) {
    RunOptions o;
    o.extra_expert_slots = 2;
    o.expert_host_rows = host_rows;
    const StepRun r = RunSteps(backend->get(), *m, o);
    ExpectSame(r, want, "host rows " + std::to_string(host_rows));
    ASSERT_EQ(r.stats.size(), steps.size());
    auto img = OwnedImage::Build(m->src, expert_testing::F32Layout());
    ASSERT_TRUE(img.ok());
    const SegmentHeader& h = *(*img)->image().header;
    uint64_t dense = 0, whole = 0;
    for (int l = 0; l < c.n_layers; ++l) {
      dense += LayerCopyBytes(h, l);
      whole += h.LayerUsedBytes(l);
    }
    const uint64_t expert_bytes = h.Layer(0).experts.expert_bytes;
    PagerStats prev;
    for (size_t s = 0; s < steps.size(); ++s) {
      const PagerStats& now = r.stats[s];
      uint64_t routed = 0;
      for (int l = 0; l < c.n_layers; ++l) {
        std::set<int> want_experts;
        if (c.IsMoeLayer(l)) {
          for (size_t p = steps[s].first; p < steps[s].second; ++p)
            for (int e : trace.picked[size_t(l)][p]) want_experts.insert(e);
        }
        EXPECT_EQ(r.asked[s][size_t(l)], want_experts) << "step " << s << " layer " << l;
        routed += want_experts.size();
      }
      const uint64_t hits = now.expert_hits - prev.expert_hits,
                     misses = now.expert_misses - prev.expert_misses,
                     host = now.expert_host - prev.expert_host,
                     admitted = now.expert_admitted - prev.expert_admitted;
      EXPECT_EQ(hits + misses + host, routed) << "step " << s;
      EXPECT_EQ(now.h2d_expert_bytes - prev.h2d_expert_bytes, (misses + admitted) * expert_bytes)
          << "step " << s;
      EXPECT_EQ(now.h2d_weight_bytes - prev.h2d_weight_bytes,
                dense + (misses + admitted) * expert_bytes)
          << "step " << s;
      EXPECT_EQ(now.host_expert_bytes - prev.host_expert_bytes, host * expert_bytes)
          << "step " << s;
      // Far below whole layers: a decode step routes 2 of 8 experts a layer.
      if (s > 0) {
        EXPECT_LT(now.h2d_weight_bytes - prev.h2d_weight_bytes, whole / 2) << "step " << s;
      }
      prev = now;
    }
    EXPECT_GT(host_rows == 0 ? prev.expert_misses : prev.expert_host, 0u);
  }
}

// gpt-oss's released experts: MXFP4 blocks kept in the segment ("native":
// attention in f16), computed by the host executor in place (its MXFP4
// kernel, with the expert biases and the clamped SwiGLU): the resident
// run's tokens and logits bit for bit and its host KV pool.
TEST(ExpertPagingTest, GptOssMxfp4ExpertsHostComputedEqualResident) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const auto m = reference::MakeModel(moe_testing::GptOss(), 55);
  testing::TempDir dir;
  gpt_oss_testing::WriteGptOssHf(*m, dir.path(), /*mxfp4=*/true);
  auto src = OpenModel(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  {
    LayoutOptions layout = expert_testing::F32Layout();
    layout.weight_format = "native";
    auto img = OwnedImage::Build(**src, layout);
    ASSERT_TRUE(img.ok()) << img.status();
    const SegmentHeader& h = *(*img)->image().header;
    for (int i = 0; i < kExpertTensors; ++i)
      ASSERT_EQ(h.Layer(0).experts.tensors[i].Type(), DType::kMXFP4);
  }
  RunOptions resident;
  resident.paged = false;
  resident.weight_format = "native";
  const StepRun want = RunSteps(backend->get(), **src, resident);
  ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens));
  for (const std::string resident_layers : {"none", "all"}) {
    RunOptions host;
    host.weight_format = "native";
    host.expert_host_rows = 1;
    host.resident = resident_layers;
    const StepRun r = RunSteps(backend->get(), **src, host);
    ExpectSame(r, want, "mxfp4, host-computed experts, resident " + resident_layers);
    EXPECT_GT(r.stats.back().expert_host, 0u);
    EXPECT_GT(r.stats.back().host_expert_bytes, 0u);
  }
  // Every expert of the prefill too (8 rows), and a hybrid step.
  RunOptions all_host;
  all_host.weight_format = "native";
  all_host.expert_host_rows = 64;
  all_host.host_share = 0.5;
  const StepRun r = RunSteps(backend->get(), **src, all_host);
  ExpectSame(r, want, "mxfp4, every expert on the host, hybrid");
  EXPECT_EQ(r.stats.back().expert_misses, 0u);
}

// 8-bit activations (q4_k / q5_k / q6_k in integers) on both sides: the CPU
// backend's products (`cpu-q8`) and the host executor's. A llama-quantize
// Q4_K_M file (tests/golden/arch/moe_gguf/) read as stored, its experts
// paged, cached or host-computed (one row each: their input shared, so
// quantized once), equals the resident run bit for bit, as with f32.
TEST(ExpertPagingTest, Q4KExpertsWithQ8ActivationsHostComputedEqualResident) {
  auto backend = MakeBackend("cpu-q8", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const std::string path = testing::ArchDir("moe_gguf") + "/qwen3moe-q4_k_m.gguf";
  auto src = OpenModel(path);
  ASSERT_TRUE(src.ok()) << path << ": " << src.status()
                        << " (made by scripts/make_moe_gguf_fixtures.py)";
  const std::vector<int32_t> prompt = {1, 41, 20, 62, 32, 17, 52, 28};  // vocab 64
  RunOptions resident;
  resident.paged = false;
  resident.weight_format = "native";
  resident.prompt = prompt;
  const StepRun want = RunSteps(backend->get(), **src, resident);
  ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens));
  for (const std::string resident_layers : {"none", "all"}) {
    RunOptions host = resident;
    host.paged = true;
    host.expert_host_rows = 1;
    host.q8_activations = true;
    host.resident = resident_layers;
    const StepRun r = RunSteps(backend->get(), **src, host);
    ExpectSame(r, want, "q4_k q8, host-computed experts, resident " + resident_layers);
    EXPECT_GT(r.stats.back().expert_host, 0u);
  }
  // The host executor on f32 activations computes other numbers: the test
  // above compares something.
  RunOptions f32_host = resident;
  f32_host.paged = true;
  f32_host.expert_host_rows = 1;
  const StepRun f = RunSteps(backend->get(), **src, f32_host);
  ASSERT_EQ(f.logits.size(), want.logits.size());
  EXPECT_NE(std::memcmp(f.logits.data(), want.logits.data(), f.logits.size() * sizeof(float)), 0);
}

// The prefetch's prediction includes the next router's bias: with a bias
// that always routes to expert 3 and never to expert 0, every prediction
// holds 3 and never 0 (the bias-free logits would pick them at random).
TEST(ExpertPagingTest, GptOssPrefetchPredictsWithTheRouterBias) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const ModelConfig c = moe_testing::GptOss();
  auto m = reference::MakeModel(c, 56);
  for (size_t i = 0; i < m->src.tensors.size(); ++i) {
    if (m->src.tensors[i].name != "router_b") continue;
    std::vector<float>& b = *m->storage[i];
    b[3] += 50.f;
    b[0] -= 50.f;
  }
  RunOptions resident;
  resident.paged = false;
  const StepRun want = RunSteps(backend->get(), *m, resident);
  ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens));
  for (int host_rows : {0, 1}) {
    RunOptions pre;
    pre.prefetch = true;
    pre.extra_expert_slots = 2;
    pre.expert_host_rows = host_rows;
    pre.eviction = ExpertEviction::kLru;
    const StepRun r = RunSteps(backend->get(), *m, pre);
    ExpectSame(r, want, "prefetch, host rows " + std::to_string(host_rows));
    // Layers 1..3, each predicted one layer early, every step.
    ASSERT_EQ(r.predicted.size(), size_t((c.n_layers - 1) * expert_testing::kNewTokens));
    for (size_t i = 0; i < r.predicted.size(); ++i) {
      const auto& p = r.predicted[i];
      EXPECT_TRUE(p.experts.count(3)) << "prediction " << i << " of layer " << p.layer;
      EXPECT_FALSE(p.experts.count(0)) << "prediction " << i << " of layer " << p.layer;
    }
    // The routing itself agrees: every step asked for 3, never 0.
    for (size_t s = 0; s < r.asked.size(); ++s) {
      for (int l = 0; l < c.n_layers; ++l) {
        EXPECT_TRUE(r.asked[s][size_t(l)].count(3)) << "step " << s << " layer " << l;
        EXPECT_FALSE(r.asked[s][size_t(l)].count(0)) << "step " << s << " layer " << l;
      }
    }
  }
}

// Whole layers (expert paging off) still page and equal resident.
TEST(ExpertPagingTest, WholeLayersWhenOff) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const auto m = reference::MakeModel(FourLayerMoe(), 54);
  RunOptions resident;
  resident.paged = false;
  RunOptions off;
  off.expert_paging = false;
  const StepRun r = RunSteps(backend->get(), *m, off);
  ExpectSame(r, RunSteps(backend->get(), *m, resident), "whole layers");
  EXPECT_FALSE(r.plan.experts_paged);
  EXPECT_EQ(r.stats.back().expert_hits + r.stats.back().expert_misses, 0u);
}

// Auto host experts split the misses: the host computes its share of them
// (fewest rows first), the link copies the rest, in the same step; the
// output stays the resident run's.
TEST(ExpertPagingTest, AutoHostExpertsShareTheMissesWithTheLink) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const auto m = reference::MakeModel(FourLayerMoe(), 56);
  RunOptions resident;
  resident.paged = false;
  const StepRun want = RunSteps(backend->get(), *m, resident);
  for (double share : {1.0, 0.5, 0.0}) {
    RunOptions o;
    o.expert_host_rows = -1;
    o.expert_host_share = share;
    const StepRun r = RunSteps(backend->get(), *m, o);
    ExpectSame(r, want, "auto host experts, share " + std::to_string(share));
    const PagerStats& s = r.stats.back();
    const double host = double(s.expert_host), all = double(s.expert_host + s.expert_misses);
    ASSERT_GT(all, 0);
    if (share == 1.0) {
      EXPECT_EQ(s.expert_misses, 0u);
    }
    if (share == 0.0) {
      EXPECT_EQ(s.expert_host, 0u);
    }
    if (share == 0.5) {
      EXPECT_GT(host / all, 0.3) << s.expert_host << " of " << all;
      EXPECT_LT(host / all, 0.7) << s.expert_host << " of " << all;
    }
  }
}

// paged-bench --routing=uniform: rows go to k experts at random (seeded, so
// a run repeats), spreading over more of each layer's experts than the
// router's choice; experts paged still equal resident under it.
TEST(ExpertPagingTest, UniformRoutingIsSeededAndSpreads) {
  auto backend = MakeBackend("cpu", 2);
  ASSERT_TRUE(backend.ok()) << backend.status();
  const auto m = reference::MakeModel(FourLayerMoe(), 55);
  auto spread = [](const StepRun& r) {
    size_t n = 0;  // distinct experts asked per sparse layer, summed
    for (size_t l = 0; l < r.asked.front().size(); ++l) {
      std::set<int> u;
      for (const auto& step : r.asked) u.insert(step[l].begin(), step[l].end());
      n += u.size();
    }
    return n;
  };
  RunOptions resident;
  resident.paged = false;
  resident.uniform_routing = 9;
  RunOptions paged;
  paged.uniform_routing = 9;
  const StepRun a = RunSteps(backend->get(), *m, paged);
  ExpectSame(a, RunSteps(backend->get(), *m, resident), "uniform routing, experts paged");
  EXPECT_EQ(RunSteps(backend->get(), *m, paged).asked, a.asked) << "not seeded";
  const StepRun b = RunSteps(backend->get(), *m, RunOptions{});
  EXPECT_NE(a.asked, b.asked);
  // 3 sparse layers of 8 experts, top-2, over the prompt and the decode steps.
  EXPECT_GE(spread(a), spread(b));
  EXPECT_GE(spread(a), size_t(3 * 7));
}

}  // namespace
}  // namespace paged
