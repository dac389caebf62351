// The engine's per-architecture features on the CPU reference backend against
// an independent forward pass in double written here from the definitions
// (transformers' modeling code): sliding windows (mistral, gemma's local
// layers), q/k norms (qwen3, gemma3), sandwich norms, GeGLU, embedding scale,
// attention and final soft-caps, query_pre_attn_scalar (gemma2/3), a local
// RoPE base (gemma3), linear / yarn / longrope RoPE with their attention
// factors. Weights are random, f32, in memory (no file).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

using reference::MakeModel;
using reference::Model;
using reference::Prefill;
using reference::Reference;
using reference::Rows;
using reference::Tokens;

// ---- the engine ------------------------------------------------------------

std::unique_ptr<LocalModel> Load(const Model& m, int block_tokens = 4) {
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  layout.block_tokens = block_tokens;  // small: windows and contexts cross blocks
  auto lm = LocalModel::Load(m.src, layout, "cpu", 2);
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

// Every position's logits, one decode step each.
std::vector<std::vector<float>> Decode(LocalModel& lm, const std::vector<int32_t>& tokens) {
  auto r = TeacherForcedLogits(*lm.engine, tokens, lm.kv_blocks());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::vector<std::vector<float>>{};
}

ModelConfig Base(Arch arch) { return reference::SmallConfig(arch, 3); }

// Every position by decode steps, and the last by chunked prefill, against
// the reference: f32 arithmetic against double, so about 1e-6 relative; the
// bound is the golden tests' 1e-4.
void ExpectMatchesReference(const ModelConfig& c, int n_tokens, uint32_t seed) {
  ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c);
  const auto m = MakeModel(c, seed);
  auto lm = Load(*m);
  ASSERT_NE(lm, nullptr);
  const std::vector<int32_t> tokens = Tokens(n_tokens, c.vocab);
  const Rows want = Reference(*m, tokens);
  const auto got = Decode(*lm, tokens);
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t p = 0; p < got.size(); ++p) {
    const double err = testing::RelativeError(got[p], want[p]);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-4) << DescribeConfig(c) << " pos " << p;
  }
  std::printf("%s\n  largest relative error over %d positions: %.2g\n", DescribeConfig(c).c_str(),
              n_tokens, worst);
  for (int chunk : {n_tokens, 5}) {
    auto lm2 = Load(*m);
    EXPECT_LT(testing::RelativeError(Prefill(*lm2, tokens, chunk), want.back()), 1e-4)
        << "prefill in chunks of " << chunk;
  }
}

// Mistral with a window shorter than the context: positions past the window
// differ from the windowless model's, the ones before it do not, and both
// match the reference; decode, one-shot and chunked prefill agree.
TEST(ArchEngineTest, SlidingWindowAppliedAndMatchesReference) {
  ModelConfig c = Base(Arch::kMistral);
  c.sliding_window = 6;  // not a multiple of the 4-token blocks
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, true);
  const int n = 24;
  ExpectMatchesReference(c, n, 31);

  ModelConfig full = c;
  full.sliding_window = 0;
  ExpectMatchesReference(full, n, 31);
  const auto m_win = MakeModel(c, 31), m_full = MakeModel(full, 31);  // the same weights
  auto windowed = Load(*m_win), unwindowed = Load(*m_full);
  const std::vector<int32_t> tokens = Tokens(n, c.vocab);
  const auto a = Decode(*windowed, tokens), b = Decode(*unwindowed, tokens);
  ASSERT_EQ(a.size(), size_t(n));
  ASSERT_EQ(b.size(), size_t(n));
  for (int p = 0; p < n; ++p) {
    const std::vector<double> bd(b[size_t(p)].begin(), b[size_t(p)].end());
    const double diff = testing::RelativeError(a[size_t(p)], bd);
    if (p < c.sliding_window) {
      EXPECT_EQ(diff, 0.0) << "position " << p << " sees no more than the window";
    } else {
      EXPECT_GT(diff, 1e-3) << "position " << p << ": the window changed nothing";
    }
  }
}

// A window of 1: each token attends to itself only.
TEST(ArchEngineTest, WindowOfOne) {
  ModelConfig c = Base(Arch::kMistral);
  c.sliding_window = 1;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, true);
  ExpectMatchesReference(c, 9, 32);
}

TEST(ArchEngineTest, Qwen3QkNormsAndWideHeads) {
  ModelConfig c = Base(Arch::kQwen3);
  c.head_dim = 32;  // q_dim 128 != hidden 64
  c.qk_norm = 1;
  c.rope_theta = 1000000.f;
  ExpectMatchesReference(c, 12, 33);
}

TEST(ArchEngineTest, Gemma2SandwichGegluSoftCapsAlternatingWindows) {
  ModelConfig c = Base(Arch::kGemma2);
  c.n_layers = 4;
  c.sandwich_norm = 1;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.embed_scale = std::sqrt(64.f);
  c.attn_scale = float(1 / std::sqrt(24.0));  // query_pre_attn_scalar 24 != head_dim
  c.attn_softcap = 1.5f;                      // small, so that it bites on these weights
  c.final_softcap = 2.f;
  c.tied_embeddings = 1;
  c.sliding_window = 5;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, l % 2 == 0);
  ExpectMatchesReference(c, 20, 34);
}

TEST(ArchEngineTest, Gemma3QkNormsLocalRopeBaseLinearGlobalScaling) {
  ModelConfig c = Base(Arch::kGemma3);
  c.n_layers = 3;
  c.qk_norm = 1;
  c.sandwich_norm = 1;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.embed_scale = std::sqrt(64.f);
  c.attn_scale = 0.25f;
  c.tied_embeddings = 1;
  c.rope_theta = 1000000.f;
  c.rope_local_theta = 10000.f;
  c.rope_scaling = RopeScaling::kLinear;
  c.rope_factor = 8.f;
  c.sliding_window = 4;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, (l + 1) % 3 != 0);
  ExpectMatchesReference(c, 17, 35);
}

TEST(ArchEngineTest, Qwen2YarnWithAttentionFactor) {
  ModelConfig c = Base(Arch::kQwen2);
  c.qkv_bias = 1;
  c.rope_theta = 1000000.f;
  c.rope_scaling = RopeScaling::kYarn;
  c.rope_factor = 4.f;
  c.rope_original_max_pos = 32;
  c.rope_attn_factor = float(0.1 * std::log(4.0) + 1);
  ExpectMatchesReference(c, 40, 36);  // past the original context
}

TEST(ArchEngineTest, Phi3LongRope) {
  ModelConfig c = Base(Arch::kPhi3);
  c.rope_scaling = RopeScaling::kLongRope;
  c.rope_original_max_pos = 16;
  c.rope_attn_factor = 1.2f;
  c.n_rope_factors = c.head_dim / 2;
  for (int i = 0; i < c.n_rope_factors; ++i) c.rope_factors[i] = 1.f + 0.4f * float(i);
  ExpectMatchesReference(c, 20, 37);
}

// A config whose layers lack the norms it asks for fails the step, and says so.
TEST(ArchEngineTest, MissingNormsAreAnErrorNotACrash) {
  ModelConfig c = Base(Arch::kQwen3);
  const auto m = MakeModel(c, 38);  // no q_norm / k_norm tensors
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  auto lm = LocalModel::Load(m->src, layout, "cpu", 1);
  ASSERT_TRUE(lm.ok()) << lm.status();
  // The segment's copy of the config now asks for q/k norms it does not have.
  ModelConfig wants = c;
  wants.qk_norm = 1;
  Engine engine((*lm)->backend.get(), (*lm)->provider.get(), wants, (*lm)->engine->block_tokens());
  SeqStep s;
  s.seq_id = 1;
  s.tokens = {1, 2};
  s.block_table = {0};
  auto r = engine.Step(StepBatch{{s}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("lacks the q/k or sandwich norms"), std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace paged
