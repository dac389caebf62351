// gpt-oss (transformers' GptOssForCausalLM) end to end on the CPU backend:
// HF checkpoints written here as transformers 5 saves them (experts fused
// as x @ W with gate and up interleaved, f32) and as the released
// checkpoints hold them (MXFP4 blocks and scales), read by the store, run
// by the engine and compared with the double-precision forward pass of
// tests/unit/reference_model.h: attention sinks, q/k/v/o biases,
// alternating sliding-window layers, yarn without truncation, the router's
// bias and top-k-then-softmax, expert biases and the clamped SwiGLU; a GGUF
// file as llama.cpp's converter writes it. The config reader on the
// released config.json and on the class defaults.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "store/convert.h"
#include "store/hf_checkpoint.h"
#include "store/model_source.h"
#include "store/safetensors_writer.h"
#include "tests/unit/gguf_builder.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/gpt_oss_util.h"
#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

using gpt_oss_testing::ConfigJson;
using gpt_oss_testing::WriteGptOssHf;
using moe_testing::GptOss;
using nlohmann::json;
using reference::MakeModel;
using reference::Model;
using reference::MoeTrace;
using reference::Prefill;
using reference::Reference;
using reference::Rows;
using reference::Tokens;

LayoutOptions Layout(const char* format) {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.004;
  layout.block_tokens = 4;  // contexts cross blocks
  return layout;
}

// Every position by decode steps, the whole prompt in one prefill step and
// in chunks of 5, against the reference, within `tol` (relative).
void ExpectMatchesReference(const Model& m, const std::string& dir, const char* format,
                            int n_tokens, double tol) {
  const ModelConfig& c = m.src.config;
  const std::vector<int32_t> tokens = Tokens(n_tokens, c.vocab);
  MoeTrace trace;
  const Rows want = Reference(m, tokens, &trace);
  double worst = 0;
  ASSERT_NO_FATAL_FAILURE(
      worst = testing::ExpectDecodeMatches(dir, Layout(format), "cpu", tokens, want, tol, format));
  std::printf("%s (%s)\n  largest relative error over %d positions: %.2g\n",
              DescribeConfig(c).c_str(), format, n_tokens, worst);
  for (int chunk : {n_tokens, 5}) {
    auto lm2 = LocalModel::Load(dir, Layout(format), "cpu", 2);
    ASSERT_TRUE(lm2.ok()) << lm2.status();
    EXPECT_LT(testing::RelativeError(Prefill(**lm2, tokens, chunk), want.back()), tol)
        << format << ", prefill in chunks of " << chunk;
  }
  // Several rows shared an expert in the one-step prefill.
  ASSERT_EQ(trace.counts.size(), size_t(c.n_layers));
  for (int l = 0; l < c.n_layers; ++l)
    EXPECT_GE(*std::max_element(trace.counts[size_t(l)].begin(), trace.counts[size_t(l)].end()), 2);
}

// 20 tokens: past the window (5) of the even layers and past yarn's
// original context (16).
constexpr int kTokens = 20;

TEST(GptOssTest, FusedCheckpointMatchesReference) {
  auto m = MakeModel(GptOss(), 51);
  testing::TempDir dir;
  WriteGptOssHf(*m, dir.path(), /*mxfp4=*/false);
  auto src = OpenModel(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& got = (*src)->config;
  EXPECT_EQ(got.arch, Arch::kGptOss);
  EXPECT_EQ(got.rope_yarn_truncate, 0);
  EXPECT_EQ(got.max_context, 64);
  EXPECT_EQ(got.swiglu_limit, 0.5f);
  // The interleaved, transposed views read back as the expert's rows.
  std::vector<float> row(size_t(got.hidden));
  SourceRowToFloat(*(*src)->Find("exp_up", 3, 2), 5, row.data());
  const std::vector<float>& up = m->Get("exp_up", 3, 2);
  EXPECT_TRUE(std::equal(row.begin(), row.end(), up.begin() + 5 * got.hidden));
  std::vector<float> bias(size_t(got.expert_ffn));
  SourceRowToFloat(*(*src)->Find("exp_gate_b", 1), 3, bias.data());
  const std::vector<float>& gate_b = m->Get("exp_gate_b", 1);
  EXPECT_TRUE(std::equal(bias.begin(), bias.end(), gate_b.begin() + 3 * got.expert_ffn));
  ExpectMatchesReference(*m, dir.path(), "f32", kTokens, 1e-4);
}

// The released checkpoints' MXFP4 experts: decoded to f32 at load (exactly
// the values the reference computes with), or kept as MXFP4 blocks
// ("native": the expert blocks hold mxfp4; the attention goes to f16).
TEST(GptOssTest, Mxfp4CheckpointMatchesReference) {
  auto m = MakeModel(GptOss(), 52);
  testing::TempDir dir;
  WriteGptOssHf(*m, dir.path(), /*mxfp4=*/true);
  auto src = OpenModel(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config;
  for (const char* name : {"exp_gate", "exp_up", "exp_down"}) {
    const SourceTensor* t = (*src)->Find(name, 2, 3);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, SourceType::kMXFP4);
    std::vector<float> row(size_t(t->cols));
    const std::vector<float>& want = m->Get(name, 2, 3);
    for (int64_t r : {int64_t(0), t->rows - 1}) {
      SourceRowToFloat(*t, r, row.data());
      EXPECT_TRUE(std::equal(row.begin(), row.end(), want.begin() + r * t->cols)) << name << r;
    }
  }
  ExpectMatchesReference(*m, dir.path(), "f32", kTokens, 1e-4);
  {
    auto lm = LocalModel::Load(dir.path(), Layout("native"), "cpu", 2);
    ASSERT_TRUE(lm.ok()) << lm.status();
    const SegmentHeader& h = *(*lm)->image->image().header;
    for (int i = 0; i < kExpertTensors; ++i)
      EXPECT_EQ(h.Layer(0).experts.tensors[i].Type(), DType::kMXFP4);
    EXPECT_EQ(h.Layer(0).Find("attn_sinks")->Type(), DType::kF32);
    EXPECT_EQ(h.Layer(0).Find("exp_down_b")->Type(), DType::kF32);
    EXPECT_EQ(h.Layer(0).Find("router")->Type(), DType::kF32);
    EXPECT_EQ(c.n_experts, 4);
  }
  ExpectMatchesReference(*m, dir.path(), "native", kTokens, 1e-2);
}

// The features are not idle in these tests: without the sinks, the clamp
// or the window the reference's logits move far more than the tolerance.
TEST(GptOssTest, SinksClampAndWindowChangeTheLogits) {
  auto m = MakeModel(GptOss(), 51);
  const std::vector<int32_t> tokens = Tokens(kTokens, 128);
  const Rows base = Reference(*m, tokens);
  auto moved = [&](auto&& change) {
    ModelConfig& c = m->src.config;
    const ModelConfig saved = c;
    change(c);
    const Rows other = Reference(*m, tokens);
    c = saved;
    std::vector<float> last(other.back().begin(), other.back().end());
    return testing::RelativeError(last, base.back());
  };
  EXPECT_GT(moved([](ModelConfig& c) { c.attn_sinks = 0; }), 1e-2);
  EXPECT_GT(moved([](ModelConfig& c) { c.swiglu_limit = 1e9f; }), 1e-2);
  EXPECT_GT(moved([](ModelConfig& c) { c.sliding_window = 0; }), 1e-2);
  EXPECT_GT(moved([](ModelConfig& c) { c.rope_yarn_truncate = 1; }), 1e-4);
}

// `m` as llama.cpp's converter writes a gpt-oss GGUF ("gpt-oss"): gate and
// up separate, the experts 3-D (ne = [cols, rows, experts]), their biases
// 2-D, sinks as attn_sinks.weight, the MLP's input norm as
// post_attention_norm, yarn as rope.scaling keys, f32.
std::string GgufOf(const Model& m) {
  const ModelConfig& c = m.src.config;
  const std::string a = "gpt-oss";
  testing::GgufBuilder b;
  moe_testing::AddGgufShape(b, a, c, c.expert_ffn)
      .U32(a + ".attention.sliding_window", uint32_t(c.sliding_window))
      .F32(a + ".rope.freq_base", c.rope_theta)
      .String(a + ".rope.scaling.type", "yarn")
      .F32(a + ".rope.scaling.factor", c.rope_factor)
      .U32(a + ".rope.scaling.original_context_length", uint32_t(c.rope_original_max_pos))
      .U32(a + ".vocab_size", uint32_t(c.vocab))
      .U32(a + ".expert_count", uint32_t(c.n_experts))
      .U32(a + ".expert_used_count", uint32_t(c.n_experts_used))
      .U32(a + ".expert_feed_forward_length", uint32_t(c.expert_ffn));
  auto tensor = [&](const std::string& name, const std::string& canonical, int l) {
    moe_testing::AddGgufTensor(b, m, name, canonical, l);
  };
  tensor("token_embd.weight", "tok_embd", -1);
  tensor("output_norm.weight", "output_norm", -1);
  tensor("output.weight", "output", -1);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (auto [g, n] : std::vector<std::pair<std::string, std::string>>{
             {"attn_norm.weight", "attn_norm"},
             {"attn_q.weight", "wq"},
             {"attn_k.weight", "wk"},
             {"attn_v.weight", "wv"},
             {"attn_q.bias", "bq"},
             {"attn_k.bias", "bk"},
             {"attn_v.bias", "bv"},
             {"attn_output.weight", "wo"},
             {"attn_output.bias", "bo"},
             {"attn_sinks.weight", "attn_sinks"},
             {"post_attention_norm.weight", "ffn_norm"},
             {"ffn_gate_inp.weight", "router"},
             {"ffn_gate_inp.bias", "router_b"},
             {"ffn_gate_exps.bias", "exp_gate_b"},
             {"ffn_up_exps.bias", "exp_up_b"},
             {"ffn_down_exps.bias", "exp_down_b"}})
      tensor(p + g, n, l);
    moe_testing::AddGgufExperts(b, m, l);
  }
  return b.Build();
}

// A GGUF file follows llama.cpp: its yarn rounds the correction range to
// whole pairs (ggml_rope_yarn_corr_dims), the SwiGLU's limit is 7.
TEST(GptOssTest, GgufMatchesReference) {
  ModelConfig c = GptOss();
  c.rope_yarn_truncate = 1;
  c.swiglu_limit = 7.f;
  auto m = MakeModel(c, 54);
  testing::TempDir dir;
  const std::string path = dir.File("model.gguf");
  testing::WriteFile(path, GgufOf(*m));
  auto src = OpenModel(path);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& got = (*src)->config;
  EXPECT_EQ(got.arch, Arch::kGptOss);
  EXPECT_TRUE(got.attn_sinks && got.o_bias && got.qkv_bias && got.router_bias && got.expert_bias);
  EXPECT_EQ(got.rope_yarn_truncate, 1);
  EXPECT_EQ(got.sliding_window, 5);
  for (int l = 0; l < c.n_layers; ++l) {
    EXPECT_EQ(got.IsSlidingLayer(l), l % 2 == 0) << l;
    EXPECT_TRUE(got.IsMoeLayer(l)) << l;
  }
  ExpectMatchesReference(*m, path, "f32", kTokens, 1e-4);
}

// The released gpt-oss-20b config.json (transformers 4.x form).
constexpr char kGptOss20bConfig[] = R"({
  "architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
  "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu",
  "hidden_size": 2880, "initial_context_length": 4096, "initializer_range": 0.02,
  "intermediate_size": 2880,
  "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention",
    "sliding_attention", "full_attention", "sliding_attention", "full_attention",
    "sliding_attention", "full_attention", "sliding_attention", "full_attention",
    "sliding_attention", "full_attention", "sliding_attention", "full_attention",
    "sliding_attention", "full_attention", "sliding_attention", "full_attention",
    "sliding_attention", "full_attention", "sliding_attention", "full_attention"],
  "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
  "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8,
  "num_local_experts": 32, "output_router_logits": false, "pad_token_id": 199999,
  "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn",
    "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0,
    "original_max_position_embeddings": 4096, "rope_type": "yarn", "truncate": false},
  "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128,
  "swiglu_limit": 7.0, "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0",
  "use_cache": true, "vocab_size": 201088})";

TEST(GptOssTest, ReleasedConfigAndClassDefaults) {
  auto c = ParseHfConfig(kGptOss20bConfig, "config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kGptOss);
  EXPECT_EQ(c->n_layers, 24);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->q_dim(), 4096);
  EXPECT_EQ(c->n_experts, 32);
  EXPECT_EQ(c->n_experts_used, 4);
  EXPECT_EQ(c->expert_ffn, 2880);
  EXPECT_EQ(c->norm_topk_prob, 1);
  EXPECT_TRUE(c->qkv_bias && c->o_bias && c->attn_sinks && c->router_bias && c->expert_bias);
  EXPECT_EQ(c->swiglu_limit, 7.f);
  EXPECT_EQ(c->swiglu_alpha, 1.702f);
  EXPECT_EQ(c->sliding_window, 128);
  EXPECT_TRUE(c->IsSlidingLayer(0));
  EXPECT_FALSE(c->IsSlidingLayer(1));
  EXPECT_TRUE(c->IsSlidingLayer(22));
  EXPECT_EQ(c->rope_scaling, RopeScaling::kYarn);
  EXPECT_EQ(c->rope_theta, 150000.f);
  EXPECT_EQ(c->rope_factor, 32.f);
  EXPECT_EQ(c->rope_original_max_pos, 4096);
  EXPECT_EQ(c->rope_yarn_truncate, 0);
  EXPECT_NEAR(c->rope_attn_factor, 0.1 * std::log(32.0) + 1, 1e-6);
  EXPECT_EQ(c->max_context, 131072);
  for (int l = 0; l < 24; ++l) EXPECT_TRUE(c->IsMoeLayer(l));

  // GptOssConfig's defaults: head_dim 64, window 128 on the even layers,
  // yarn x32 over 4096 positions, theta 150000, 128 experts top-4.
  auto d = ParseHfConfig(R"({"model_type": "gpt_oss", "hidden_size": 256,
      "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
      "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 131072})",
                         "config.json");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->head_dim, 64);
  EXPECT_EQ(d->sliding_window, 128);
  EXPECT_TRUE(d->IsSlidingLayer(0) && !d->IsSlidingLayer(1) && d->IsSlidingLayer(2));
  EXPECT_EQ(d->rope_scaling, RopeScaling::kYarn);
  EXPECT_EQ(d->rope_theta, 150000.f);
  EXPECT_EQ(d->rope_factor, 32.f);
  EXPECT_EQ(d->rope_yarn_truncate, 0);
  EXPECT_EQ(d->n_experts, 128);
  EXPECT_EQ(d->n_experts_used, 4);
  EXPECT_EQ(d->swiglu_limit, 7.f);
  EXPECT_TRUE(d->qkv_bias && d->o_bias);

  // attention_bias false: no q/k/v/o biases (the sinks stay).
  json j = json::parse(kGptOss20bConfig);
  j["attention_bias"] = false;
  auto nb = ParseHfConfig(j.dump(), "config.json");
  ASSERT_TRUE(nb.ok()) << nb.status();
  EXPECT_FALSE(nb->qkv_bias || nb->o_bias);
  EXPECT_TRUE(nb->attn_sinks);
}

// What a broken checkpoint gets: a one-line error naming the tensor.
TEST(GptOssTest, BadExpertTensorsAreNamed) {
  auto m = MakeModel(GptOss(), 53);
  testing::TempDir dir;
  WriteGptOssHf(*m, dir.path(), /*mxfp4=*/true);
  auto ok = OpenModel(dir.path());
  ASSERT_TRUE(ok.ok()) << ok.status();
  // The fused experts with the linear-layer orientation [E, 2F, H].
  json j = ConfigJson(m->src.config, false);
  j["intermediate_size"] = 16;  // 2F = 32 != the file's
  testing::WriteFile(dir.File("config.json"), j.dump());
  auto bad = OpenModel(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("gate_up_proj"), std::string::npos) << bad.status();
  // Blocks without their scales.
  testing::TempDir dir2;
  std::vector<SafetensorsEntry> entries = {
      {"model.layers.0.mlp.experts.down_proj_blocks", "U8", {4, 64, 1, 16}}};
  testing::WriteFile(dir2.File("config.json"), ConfigJson(m->src.config, true).dump());
  auto w = SafetensorsWriter::Create(dir2.File("model.safetensors"), entries);
  ASSERT_TRUE(w.ok()) << w.status();
  const std::vector<uint8_t> zeros(4 * 64 * 16);
  ASSERT_TRUE((*w)->Append(zeros.data(), zeros.size()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
  auto lone = OpenModel(dir2.path());
  ASSERT_FALSE(lone.ok());
  EXPECT_NE(lone.status().message().find("lacks its _scales"), std::string::npos) << lone.status();
}

}  // namespace
}  // namespace paged
