// gpt-oss on CUDA (label gpu; skips without a GPU): the checkpoints of
// tests/unit/gpt_oss_test.cc through the CUDA backend against the
// double-precision reference. f32 (the CUDA-core attention kernel, f32 KV,
// decode rows one split), and with head_dim 64 in f16 / native MXFP4 (the
// tensor-core prefill kernel with sinks, MXFP4 expert products); a context
// long enough for split-K decode rows (sinks in the merge).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/unit/golden_util.h"
#include "tests/unit/gpt_oss_util.h"
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

// Every position by decode and the whole prompt in one prefill step on
// cuda:0, against the reference.
void ExpectCudaMatchesReference(const reference::Model& m, const std::string& dir,
                                const char* format, int n_tokens, double tol) {
  const ModelConfig& c = m.src.config;
  const std::vector<int32_t> tokens = reference::Tokens(n_tokens, c.vocab);
  const reference::Rows want = reference::Reference(m, tokens);
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.01;
  layout.block_tokens = 16;
  double worst = 0;
  ASSERT_NO_FATAL_FAILURE(
      worst = testing::ExpectDecodeMatches(dir, layout, "cuda:0", tokens, want, tol, format));
  auto lm2 = LocalModel::Load(dir, layout, "cuda:0", 2);
  ASSERT_TRUE(lm2.ok()) << lm2.status();
  const double prefill =
      testing::RelativeError(reference::Prefill(**lm2, tokens, n_tokens), want.back());
  EXPECT_LT(prefill, tol) << format << " prefill";
  std::printf("%s on cuda (%s): largest relative error %.2g, prefill %.2g\n",
              DescribeConfig(c).c_str(), format, worst, prefill);
}

TEST(GptOssGpuTest, F32CheckpointMatchesReferenceOnCuda) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  auto m = reference::MakeModel(moe_testing::GptOss(), 61);
  testing::TempDir dir;
  gpt_oss_testing::WriteGptOssHf(*m, dir.path(), /*mxfp4=*/false);
  ExpectCudaMatchesReference(*m, dir.path(), "f32", 20, 1e-4);
}

// head_dim 64 (gpt-oss's own), MXFP4 experts. f32 (decoded experts, f32
// cache): 300 tokens (context 512) make decode rows of several splits, the
// sinks join the split-K merge; against the reference.
TEST(GptOssGpuTest, HeadDim64LongContextOnCuda) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  ModelConfig c = moe_testing::GptOss();
  c.head_dim = 64;
  c.rope_factor = 32.f;  // 32 x 16 positions
  c.rope_attn_factor = float(0.1 * std::log(32.0) + 1);
  c.max_context = 512;
  auto m = reference::MakeModel(c, 62);
  testing::TempDir dir;
  gpt_oss_testing::WriteGptOssHf(*m, dir.path(), /*mxfp4=*/true);
  ExpectCudaMatchesReference(*m, dir.path(), "f32", 300, 1e-4);
}

// The same model native (MXFP4 experts kept, bf16 / f16 attention and an
// f16 cache: the tensor-core prefill kernel with sinks) and in f16: CUDA
// against the CPU backend on the same segment (the reference is a 16-bit
// rounding away; a routing near-tie could flip there, not here).
TEST(GptOssGpuTest, HeadDim64NativeAndF16MatchCpu) {
  if (!HaveGpu()) GTEST_SKIP() << "no GPU";
  ModelConfig c = moe_testing::GptOss();
  c.head_dim = 64;
  auto m = reference::MakeModel(c, 63);
  testing::TempDir dir;
  gpt_oss_testing::WriteGptOssHf(*m, dir.path(), /*mxfp4=*/true);
  const std::vector<int32_t> tokens = reference::Tokens(40, c.vocab);
  for (const char* format : {"native", "f16"}) {
    LayoutOptions layout;
    layout.weight_format = format;
    layout.kv_gib = 0.01;
    std::vector<std::vector<float>> decode[2];  // cpu, cuda: every position
    std::vector<float> prefill[2];              // the last position, one step
    for (int d = 0; d < 2; ++d) {
      const char* device = d == 0 ? "cpu" : "cuda:0";
      auto lm = LocalModel::Load(dir.path(), layout, device, 2);
      ASSERT_TRUE(lm.ok()) << lm.status();
      auto got = TeacherForcedLogits(*(*lm)->engine, tokens, (*lm)->kv_blocks());
      ASSERT_TRUE(got.ok()) << got.status();
      decode[d] = *got;
      auto lm2 = LocalModel::Load(dir.path(), layout, device, 2);
      ASSERT_TRUE(lm2.ok()) << lm2.status();
      prefill[d] = reference::Prefill(**lm2, tokens, int(tokens.size()));
    }
    auto f64 = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    ASSERT_EQ(decode[1].size(), decode[0].size());
    for (size_t p = 0; p < decode[0].size(); ++p)
      EXPECT_LT(testing::RelativeError(decode[1][p], f64(decode[0][p])), 1e-3)
          << format << " position " << p;
    EXPECT_LT(testing::RelativeError(prefill[1], f64(prefill[0])), 1e-3) << format << " prefill";
  }
}

}  // namespace
}  // namespace paged
