// Mixtures of experts on CUDA (label gpu; skips without a GPU): the
// ScatterAddRows op against the CPU backend, and mixtral / qwen2_moe /
// qwen3_moe checkpoints (f32) against the double-precision reference, as
// tests/unit/moe_test.cc checks them on the CPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/unit/expert_paging_util.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"
#include "worker/device.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

bool HaveGpu() { return !ListGpus().empty() && MakeBackend("cuda:0").ok(); }

TEST(MoeGpuTest, ScatterAddRowsMatchesCpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  auto gpu = MakeBackend("cuda:0");
  auto cpu = MakeBackend("cpu", 1);
  ASSERT_TRUE(gpu.ok() && cpu.ok());
  const int n = 5, dim = 300, out_rows = 9;
  std::vector<float> y(size_t(n * dim)), out(size_t(out_rows * dim));
  for (size_t i = 0; i < y.size(); ++i) y[i] = float(i % 17) * 0.25f - 2.f;
  for (size_t i = 0; i < out.size(); ++i) out[i] = float(i % 5);
  const std::vector<int32_t> rows = {8, 0, 3, 4, 7};
  const std::vector<float> w = {0.5f, -1.f, 0.125f, 2.f, 0.3f};
  std::vector<float> want = out;
  (*cpu)->ScatterAddRows(y.data(), rows.data(), w.data(), n, dim, want.data());
  auto d_y = (*gpu)->Allocate(y.size() * 4), d_out = (*gpu)->Allocate(out.size() * 4),
       d_rows = (*gpu)->Allocate(rows.size() * 4), d_w = (*gpu)->Allocate(w.size() * 4);
  ASSERT_TRUE(d_y.ok() && d_out.ok() && d_rows.ok() && d_w.ok());
  (*gpu)->Upload(d_y->get(), y.data(), y.size() * 4);
  (*gpu)->Upload(d_out->get(), out.data(), out.size() * 4);
  (*gpu)->Upload(d_rows->get(), rows.data(), rows.size() * 4);
  (*gpu)->Upload(d_w->get(), w.data(), w.size() * 4);
  (*gpu)->ScatterAddRows(d_y->as<float>(), d_rows->as<int32_t>(), d_w->as<float>(), n, dim,
                         d_out->as<float>());
  std::vector<float> got(out.size());
  (*gpu)->Download(got.data(), d_out->get(), got.size() * 4);
  ASSERT_TRUE((*gpu)->Synchronize().ok());
  EXPECT_EQ(got, want);  // one rounded multiply-add per element on both
}

TEST(MoeGpuTest, CheckpointsMatchReferenceOnCuda) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  for (const ModelConfig& c :
       {moe_testing::Mixtral(), moe_testing::Qwen2Moe(), moe_testing::Qwen3Moe()}) {
    const auto m = reference::MakeModel(c, 47);
    testing::TempDir dir;
    moe_testing::WriteHf(*m, dir.path(), /*fused=*/true);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 12; ++i) tokens.push_back(int32_t((i * 37 + 11) % c.vocab));
    const reference::Rows want = reference::Reference(*m, tokens);
    LayoutOptions layout;
    layout.weight_format = "f32";
    layout.kv_gib = 0.002;
    layout.block_tokens = 4;
    ASSERT_NO_FATAL_FAILURE(testing::ExpectDecodeMatches(dir.path(), layout, "cuda:0", tokens, want,
                                                         1e-4, DescribeConfig(c)));
  }
}

// Expert-level paging on CUDA (docs/pager.md, "Experts"): experts paged
// through a cache of one layer's experts (misses and evictions), a few more
// slots (hits), every expert cached, dense parts resident: the resident
// run's tokens and logits bit for bit (the same kernels on the same bytes)
// and its host KV pool. Experts the host executor computes (its products
// are not cuBLAS's): the same tokens, logits within 1e-4 (gpt-oss's too:
// its expert biases read from the segment, the clamped SwiGLU). Experts
// the kernels read in place from host memory: bit for bit.
TEST(MoeGpuTest, ExpertPagingMatchesResidentOnCuda) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  auto gpu = MakeBackend("cuda:0");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  for (const ModelConfig& c :
       {expert_testing::FourLayerMoe(), moe_testing::Mixtral(), moe_testing::GptOss()}) {
    const auto m = reference::MakeModel(c, 57);
    const std::string name = DescribeConfig(c);
    expert_testing::RunOptions resident;
    resident.paged = false;
    const expert_testing::StepRun want = expert_testing::RunSteps(gpu->get(), *m, resident);
    ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens)) << name;
    struct Case {
      std::string what;
      int extra;
      std::string resident;
    };
    for (const Case& k : {Case{"one layer's experts", 0, "none"}, Case{"3 more slots", 3, "none"},
                          Case{"every expert", -1, "none"}, Case{"dense resident", 0, "all"}}) {
      expert_testing::RunOptions o;
      o.extra_expert_slots = k.extra;
      o.resident = k.resident;
      const expert_testing::StepRun r = expert_testing::RunSteps(gpu->get(), *m, o);
      EXPECT_EQ(r.tokens, want.tokens) << name << ", " << k.what;
      EXPECT_EQ(r.logits, want.logits) << name << ", " << k.what;
      EXPECT_TRUE(r.kv == want.kv) << name << ", " << k.what << ": the host KV pool differs";
      if (k.extra == 0) {
        EXPECT_GT(r.stats.back().expert_evictions, 0u) << name;
      }
    }
    // Misses read by the kernels in place from the registered segment:
    // the same kernels on the same bytes, bit for bit.
    expert_testing::RunOptions mapped;
    mapped.expert_misses_mapped = true;
    const expert_testing::StepRun mr = expert_testing::RunSteps(gpu->get(), *m, mapped);
    EXPECT_GT(mr.stats.back().expert_mapped, 0u) << name;
    EXPECT_EQ(mr.stats.back().expert_misses, 0u) << name;
    EXPECT_EQ(mr.tokens, want.tokens) << name << ", experts read in place";
    EXPECT_EQ(mr.logits, want.logits) << name << ", experts read in place";
    EXPECT_TRUE(mr.kv == want.kv) << name << ", experts read in place: the host KV pool differs";
    // Host-computed experts (the host's arithmetic: logits near), alone and
    // beside experts read in place (half the misses each).
    for (const bool with_mapped : {false, true}) {
      expert_testing::RunOptions host;
      host.expert_host_rows = with_mapped ? -1 : 1;
      host.expert_host_share = with_mapped ? 0.5 : 1;
      host.expert_misses_mapped = with_mapped;
      const std::string what =
          name + (with_mapped ? ", host-computed and read in place" : ", host-computed experts");
      const expert_testing::StepRun r = expert_testing::RunSteps(gpu->get(), *m, host);
      EXPECT_GT(r.stats.back().expert_host, 0u) << what;
      EXPECT_EQ(r.stats.back().expert_mapped > 0, with_mapped) << what;
      EXPECT_EQ(r.tokens, want.tokens) << what;
      ASSERT_EQ(r.logits.size(), want.logits.size());
      for (size_t i = 0; i < r.logits.size(); ++i)
        EXPECT_NEAR(r.logits[i], want.logits[i], 1e-4 * std::max(1.f, std::abs(want.logits[i])))
            << what << ", step " << i;
    }
  }
}

// The routed experts in grouped launches (Backend::ExpertFfn on CUDA: f16
// experts of mixtral's shape, gpt-oss's MXFP4 experts with their biases and
// clamped SwiGLU): experts paged through a cache that evicts give the
// resident run's tokens and logits bit for bit and its host KV pool; the
// one-by-one path (PAGED_CUDA_GROUPED_EXPERTS=0, x cast to f16 for cuBLAS
// where a product has more than 8 rows) the same tokens, logits within 1e-3.
TEST(MoeGpuTest, GroupedExpertsOnCuda) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  auto gpu = MakeBackend("cuda:0");
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  setenv("PAGED_CUDA_GROUPED_EXPERTS", "0", 1);
  auto single = MakeBackend("cuda:0");
  unsetenv("PAGED_CUDA_GROUPED_EXPERTS");
  ASSERT_TRUE(single.ok()) << single.status();
  struct Case {
    ModelConfig c;
    std::string format;
  };
  for (const Case& k :
       {Case{moe_testing::Mixtral(), "f16"}, Case{moe_testing::GptOss(), "native"}}) {
    const auto m = reference::MakeModel(k.c, 58);
    const std::string name = DescribeConfig(k.c) + " " + k.format;
    expert_testing::RunOptions resident;
    resident.paged = false;
    resident.weight_format = k.format;
    const expert_testing::StepRun want = expert_testing::RunSteps(gpu->get(), *m, resident);
    ASSERT_EQ(want.tokens.size(), size_t(expert_testing::kNewTokens)) << name;
    expert_testing::RunOptions paged;
    paged.weight_format = k.format;
    const expert_testing::StepRun r = expert_testing::RunSteps(gpu->get(), *m, paged);
    EXPECT_GT(r.stats.back().expert_evictions, 0u) << name;
    EXPECT_EQ(r.tokens, want.tokens) << name << ", experts paged";
    EXPECT_EQ(r.logits, want.logits) << name << ", experts paged";
    EXPECT_TRUE(r.kv == want.kv) << name << ": the host KV pool differs";
    const expert_testing::StepRun one = expert_testing::RunSteps(single->get(), *m, resident);
    EXPECT_EQ(one.tokens, want.tokens) << name << ", one expert at a time";
    ASSERT_EQ(one.logits.size(), want.logits.size());
    for (size_t i = 0; i < one.logits.size(); ++i)
      EXPECT_NEAR(one.logits[i], want.logits[i], 1e-3 * std::max(1.f, std::abs(want.logits[i])))
          << name << ", one expert at a time, step " << i;
  }
}

}  // namespace
}  // namespace paged
