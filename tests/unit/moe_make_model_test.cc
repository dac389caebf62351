// `pagectl make-model` for mixtures of experts: the presets' configs, a tiny
// sparse checkpoint that loads and runs (and `pagectl plan` sizes its expert
// cache), and --router-skew making routing uneven (measured on the written
// routers) while 0 keeps it even.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/pagectl/commands.h"
#include "client/pagectl/make_model.h"
#include "client/pagectl/presets.h"
#include "common/dtype.h"
#include "store/convert.h"
#include "store/hf_checkpoint.h"
#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

// Loads the checkpoint at `dir` on the CPU and generates 8 tokens of a short
// prompt; returns the model (null, a failure, when it did not load).
std::unique_ptr<LocalModel> LoadAndGenerate(const std::string& dir) {
  GenerateRequest req;
  req.prompt = {1, 17, 300, 42};
  req.max_new_tokens = 8;
  req.stop_at_eos = false;
  LayoutOptions layout;
  layout.kv_gib = 0.01;
  auto lm = LocalModel::Load(dir, layout, "cpu", 2);
  EXPECT_TRUE(lm.ok()) << lm.status();
  if (!lm.ok()) return nullptr;
  auto r = Generate(*(*lm)->engine, req, (*lm)->kv_blocks());
  EXPECT_TRUE(r.ok()) << r.status();
  if (r.ok()) {
    EXPECT_EQ(r->tokens.size(), 8u);
  }
  return std::move(*lm);
}

TEST(MoePresetsTest, RealShapes) {
  const ModelConfig mixtral = PresetModelConfig(*FindPreset("mixtral-8x7b"));
  EXPECT_TRUE(ValidateConfig(mixtral).ok());
  EXPECT_EQ(mixtral.arch, Arch::kMixtral);
  EXPECT_EQ(mixtral.n_experts, 8);
  EXPECT_EQ(mixtral.n_experts_used, 2);
  EXPECT_EQ(mixtral.expert_ffn, 14336);
  EXPECT_TRUE(mixtral.IsMoeLayer(31));
  const ModelConfig qwen = PresetModelConfig(*FindPreset("qwen3-30b-a3b"));
  EXPECT_TRUE(ValidateConfig(qwen).ok());
  EXPECT_EQ(qwen.arch, Arch::kQwen3Moe);
  EXPECT_EQ(qwen.n_experts, 128);
  EXPECT_EQ(qwen.n_experts_used, 8);
  EXPECT_EQ(qwen.expert_ffn, 768);
  EXPECT_EQ(qwen.head_dim, 128);
  EXPECT_TRUE(qwen.qk_norm);
  EXPECT_TRUE(qwen.norm_topk_prob);
  for (const char* name : {"gpt-oss-20b", "gpt-oss-120b"}) {
    const ModelConfig oss = PresetModelConfig(*FindPreset(name));
    EXPECT_TRUE(ValidateConfig(oss).ok()) << name;
    EXPECT_EQ(oss.arch, Arch::kGptOss);
    EXPECT_EQ(oss.n_layers, std::string(name) == "gpt-oss-20b" ? 24 : 36);
    EXPECT_EQ(oss.n_experts, std::string(name) == "gpt-oss-20b" ? 32 : 128);
    EXPECT_EQ(oss.n_experts_used, 4);
    EXPECT_EQ(oss.expert_ffn, 2880);
    EXPECT_EQ(oss.q_dim(), 4096);
    EXPECT_EQ(oss.kv_dim(), 512);
    EXPECT_TRUE(oss.IsSlidingLayer(0) && !oss.IsSlidingLayer(1));
    EXPECT_EQ(oss.rope_scaling, RopeScaling::kYarn);
    EXPECT_EQ(oss.max_context, 131072);
    EXPECT_TRUE(oss.attn_sinks && oss.o_bias && oss.expert_bias && oss.router_bias);
  }
}

// The tiny gpt-oss preset: the config the store reads is PresetModelConfig's,
// the experts are MXFP4 blocks (kept so under --weight-format native) and
// the model runs; the 120b preset's layer slice has its real shapes.
TEST(MoeMakeModelTest, GptOssMxfp4CheckpointLoadsAndRuns) {
  testing::TempDir tmp;
  MakeModelOptions o;
  o.preset = "tiny-gpt-oss";
  o.out_dir = tmp.File("oss");
  ASSERT_TRUE(MakeModel(o).ok());
  auto src = OpenHfCheckpoint(o.out_dir);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig want = PresetModelConfig(*FindPreset("tiny-gpt-oss"));
  const ModelConfig& got = (*src)->config;
  EXPECT_EQ(got.arch, Arch::kGptOss);
  EXPECT_EQ(got.n_experts, want.n_experts);
  EXPECT_EQ(got.expert_ffn, want.expert_ffn);
  EXPECT_EQ(got.head_dim, want.head_dim);
  EXPECT_EQ(got.sliding_window, want.sliding_window);
  EXPECT_EQ(got.rope_factor, want.rope_factor);
  EXPECT_EQ(got.rope_original_max_pos, want.rope_original_max_pos);
  EXPECT_EQ(got.rope_yarn_truncate, want.rope_yarn_truncate);
  EXPECT_EQ(got.rope_attn_factor, want.rope_attn_factor);
  EXPECT_EQ(got.max_context, want.max_context);
  EXPECT_EQ(got.swiglu_limit, want.swiglu_limit);
  for (int l = 0; l < got.n_layers; ++l) EXPECT_EQ(got.IsSlidingLayer(l), want.IsSlidingLayer(l));
  EXPECT_EQ((*src)->Find("exp_down", 1, 7)->type, SourceType::kMXFP4);
  // Unit-variance weights: the decoded expert rows have an RMS near
  // 1 / sqrt(fan_in) (within the power of two of the one exponent).
  std::vector<float> row(size_t(got.hidden));
  SourceRowToFloat(*(*src)->Find("exp_gate", 0, 3), 5, row.data());
  double ss = 0;
  for (float v : row) ss += double(v) * v;
  const double rms = std::sqrt(ss / double(row.size())) * std::sqrt(double(got.hidden));
  EXPECT_GT(rms, 0.5);
  EXPECT_LT(rms, 2.0);
  const std::unique_ptr<LocalModel> lm = LoadAndGenerate(o.out_dir);
  ASSERT_NE(lm, nullptr);
  EXPECT_EQ(lm->image->image().header->Layer(0).experts.tensors[0].Type(), DType::kMXFP4);
}

std::string Make(const testing::TempDir& tmp, const std::string& name, double skew) {
  MakeModelOptions o;
  o.preset = "tiny-qwen3-moe";
  o.out_dir = tmp.File(name);
  o.router_skew = skew;
  const absl::Status s = MakeModel(o);
  EXPECT_TRUE(s.ok()) << s;
  return o.out_dir;
}

TEST(MoeMakeModelTest, TinySparseCheckpointLoadsAndRuns) {
  testing::TempDir tmp;
  const std::string dir = Make(tmp, "m", 0);
  auto src = OpenHfCheckpoint(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig want = PresetModelConfig(*FindPreset("tiny-qwen3-moe"));
  const ModelConfig& got = (*src)->config;
  EXPECT_EQ(got.arch, want.arch);
  EXPECT_EQ(got.n_experts, want.n_experts);
  EXPECT_EQ(got.n_experts_used, want.n_experts_used);
  EXPECT_EQ(got.expert_ffn, want.expert_ffn);
  EXPECT_EQ(got.norm_topk_prob, want.norm_topk_prob);
  EXPECT_EQ(got.head_dim, 48);
  for (int l = 0; l < got.n_layers; ++l) EXPECT_TRUE(got.IsMoeLayer(l));
  EXPECT_NE(LoadAndGenerate(dir), nullptr);
}

// `pagectl plan --json` on a sparse checkpoint says how big its device
// expert cache is (issue 14): every expert under a large budget, at least
// one layer's but not all under the smallest budget that plans.
TEST(MoeMakeModelTest, PlanShowsTheExpertCache) {
  testing::TempDir tmp;
  pagectl::Flags f;
  f.model = Make(tmp, "m", 0);
  f.json = true;
  f.resident = "none";
  auto plan = [&](uint64_t budget_kib) -> std::optional<nlohmann::json> {
    f.gpu_budget = absl::StrCat(budget_kib, "KiB");
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int rc = pagectl::RunCommand("plan", f, "usage");
    const std::string out = ::testing::internal::GetCapturedStdout();
    ::testing::internal::GetCapturedStderr();
    if (rc != 0) return std::nullopt;
    return nlohmann::json::parse(out);
  };
  const ModelConfig c = PresetModelConfig(*FindPreset("tiny-qwen3-moe"));
  const uint64_t all = uint64_t(c.n_layers) * uint64_t(c.n_experts);
  std::optional<nlohmann::json> large = plan(4 << 20);
  ASSERT_TRUE(large.has_value());
  const uint64_t slot = (*large)["expert_slot_bytes"].get<uint64_t>();
  // From globals + workspace (what any plan needs) up, an expert at a time.
  std::optional<nlohmann::json> least;
  const uint64_t step_kib = std::max<uint64_t>(slot >> 10, 1);
  for (uint64_t kib = ((*large)["globals_bytes"].get<uint64_t>() +
                       (*large)["workspace_bytes"].get<uint64_t>()) >>
                      10;
       kib < (4 << 20) && !least; kib += step_kib)
    least = plan(kib);
  ASSERT_TRUE(least.has_value());
  for (const nlohmann::json& j : {*large, *least}) {
    EXPECT_TRUE(j["experts_paged"].get<bool>());
    EXPECT_EQ(j["total_experts"].get<uint64_t>(), all);
    EXPECT_EQ(j["expert_slot_bytes"].get<uint64_t>(), slot);
    const uint64_t slots = j["expert_slots"].get<uint64_t>();
    EXPECT_GE(j["expert_cache_bytes"].get<uint64_t>(), slots * slot);
    EXPECT_DOUBLE_EQ(j["expert_cache_share"].get<double>(), double(slots) / double(all));
  }
  EXPECT_EQ((*large)["expert_slots"].get<uint64_t>(), all);
  EXPECT_GE((*least)["expert_slots"].get<uint64_t>(), uint64_t(c.n_experts));  // one layer's
  EXPECT_LT((*least)["expert_slots"].get<uint64_t>(), all);
}

// How often each expert of layer 0 is among the top-k for random unit-RMS
// hidden states, from the router as written (f16).
std::vector<double> RoutingShares(const std::string& dir) {
  auto src = OpenHfCheckpoint(dir);
  EXPECT_TRUE(src.ok()) << src.status();
  if (!src.ok()) return {};
  const ModelConfig& c = (*src)->config;
  const SourceTensor* r = (*src)->Find("router", 0);
  EXPECT_NE(r, nullptr);
  if (r == nullptr) return {};
  std::vector<float> w(size_t(r->rows * r->cols));
  for (size_t i = 0; i < w.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, r->data + 2 * i, 2);
    w[i] = HalfToFloat(h);
  }
  std::mt19937 rng(5);
  std::normal_distribution<double> d(0, 1);
  std::vector<double> count(size_t(c.n_experts), 0);
  constexpr int kTokens = 4000;
  std::vector<double> h(size_t(c.hidden)), logit(size_t(c.n_experts));
  std::vector<int> order(size_t(c.n_experts));
  for (int t = 0; t < kTokens; ++t) {
    for (double& v : h) v = d(rng);
    for (int e = 0; e < c.n_experts; ++e) {
      double s = 0;
      for (int j = 0; j < c.hidden; ++j) s += w[size_t(e * c.hidden + j)] * h[size_t(j)];
      logit[size_t(e)] = s;
      order[size_t(e)] = e;
    }
    std::partial_sort(order.begin(), order.begin() + c.n_experts_used, order.end(),
                      [&](int a, int b) { return logit[size_t(a)] > logit[size_t(b)]; });
    for (int k = 0; k < c.n_experts_used; ++k) count[size_t(order[size_t(k)])] += 1;
  }
  for (double& v : count) v /= double(kTokens) * c.n_experts_used;
  return count;
}

TEST(MoeMakeModelTest, RouterSkewMakesRoutingUneven) {
  testing::TempDir tmp;
  const std::vector<double> even = RoutingShares(Make(tmp, "even", 0));
  const std::vector<double> skewed = RoutingShares(Make(tmp, "skewed", 1.5));
  ASSERT_EQ(even.size(), 16u);
  ASSERT_EQ(skewed.size(), 16u);
  const double mean = 1.0 / 16;
  // Random routers: every expert near its fair share.
  EXPECT_LT(*std::max_element(even.begin(), even.end()), 1.6 * mean);
  EXPECT_GT(*std::min_element(even.begin(), even.end()), 0.5 * mean);
  // Skewed: the favourite is in the top-k of about half the tokens (it wins
  // whenever its logit is positive), four experts take well over their
  // fair quarter, the tail almost nothing.
  std::vector<double> sorted = skewed;
  std::sort(sorted.rbegin(), sorted.rend());
  EXPECT_GT(sorted[0], 1.8 * mean);
  EXPECT_GT(sorted[0] + sorted[1] + sorted[2] + sorted[3], 0.4);
  EXPECT_LT(sorted.back(), 0.25 * mean);
  // Bad values are refused before anything is written.
  MakeModelOptions o;
  o.preset = "tiny-qwen3-moe";
  o.out_dir = tmp.File("bad");
  o.router_skew = -1;
  EXPECT_EQ(MakeModel(o).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace paged
