// Mixtures of experts (mixtral, qwen2_moe, qwen3_moe; gpt_oss in gpt_oss_test.cc,
// here only paged == resident) end to end on the CPU
// backend: HF checkpoints written here (experts one by one, transformers
// 4.x, and fused, transformers 5.x) and GGUF files (llama.cpp's 3-D expert
// tensors) of random f32 weights, loaded by the store's readers, laid out
// with one block per expert, run by the engine and compared with the
// double-precision forward pass of tests/unit/reference_model.h; paged
// (layers through two slots, and a hybrid step) equals resident token for
// token; the routing itself and the scatter-add op.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "store/model_source.h"
#include "store/safetensors_writer.h"
#include "tests/unit/gguf_builder.h"
#include "tests/unit/golden_util.h"
#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/engine/moe_routing.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/local_model.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged {
namespace {

using nlohmann::json;
using reference::MakeModel;
using reference::Model;
using reference::MoeTrace;
using reference::Prefill;
using reference::Reference;
using reference::Rows;
using reference::Tokens;
using namespace moe_testing;  // NOLINT: the configs and the checkpoint writer

// ---- running the engine ------------------------------------------------------

LayoutOptions F32Layout() {
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  layout.block_tokens = 4;  // contexts cross blocks
  return layout;
}

// Every position by decode steps (one row: most experts get none), the
// whole prompt in one prefill step (several rows per expert) and in chunks
// of 5, against the reference.
void ExpectMatchesReference(const Model& m, const std::string& path, int n_tokens) {
  const ModelConfig& c = m.src.config;
  const std::vector<int32_t> tokens = Tokens(n_tokens, c.vocab);
  MoeTrace trace;
  const Rows want = Reference(m, tokens, &trace);
  double worst = 0;
  ASSERT_NO_FATAL_FAILURE(worst = testing::ExpectDecodeMatches(path, F32Layout(), "cpu", tokens,
                                                               want, 1e-4, DescribeConfig(c)));
  std::printf("%s\n  largest relative error over %d positions: %.2g\n", DescribeConfig(c).c_str(),
              n_tokens, worst);
  for (int chunk : {n_tokens, 5}) {
    auto lm2 = LocalModel::Load(path, F32Layout(), "cpu", 2);
    ASSERT_TRUE(lm2.ok()) << lm2.status();
    ASSERT_EQ((*lm2)->config().n_experts, c.n_experts);
    EXPECT_LT(testing::RelativeError(Prefill(**lm2, tokens, chunk), want.back()), 1e-4)
        << "prefill in chunks of " << chunk;
  }
  // The one-step prefill routed several rows to one expert (each sparse
  // layer has fewer experts than rows x k).
  for (int l = 0; l < c.n_layers; ++l) {
    if (!c.IsMoeLayer(l)) continue;
    ASSERT_EQ(trace.counts.size(), size_t(c.n_layers));
    EXPECT_GE(*std::max_element(trace.counts[size_t(l)].begin(), trace.counts[size_t(l)].end()), 2)
        << "layer " << l;
  }
}

struct HfCase {
  std::string name;
  std::function<ModelConfig()> config;
  bool fused;
  int tokens;
};
void PrintTo(const HfCase& c, std::ostream* os) { *os << c.name; }

class MoeHfTest : public ::testing::TestWithParam<HfCase> {};

TEST_P(MoeHfTest, CheckpointMatchesReference) {
  const HfCase& k = GetParam();
  const auto m = MakeModel(k.config(), 41);
  testing::TempDir dir;
  WriteHf(*m, dir.path(), k.fused);
  ExpectMatchesReference(*m, dir.path(), k.tokens);
}

INSTANTIATE_TEST_SUITE_P(Archs, MoeHfTest,
                         ::testing::Values(HfCase{"mixtral_per_expert", Mixtral, false, 14},
                                           HfCase{"mixtral_fused", Mixtral, true, 14},
                                           HfCase{"qwen2_moe_shared_expert_dense_layer", Qwen2Moe,
                                                  false, 12},
                                           HfCase{"qwen2_moe_fused", Qwen2Moe, true, 12},
                                           HfCase{"qwen3_moe_sparse_step", Qwen3Moe, true, 12}),
                         [](const ::testing::TestParamInfo<HfCase>& i) { return i.param.name; });

// A prefill of 3 rows over 8 experts (top-2): at most 6 experts have rows,
// so some have none in that step; the logits still match.
TEST(MoeTest, ExpertsWithoutRowsInAStep) {
  const auto m = MakeModel(Mixtral(), 43);
  testing::TempDir dir;
  WriteHf(*m, dir.path(), false);
  const std::vector<int32_t> tokens = Tokens(3, 128);
  MoeTrace trace;
  const Rows want = Reference(*m, tokens, &trace);
  ASSERT_EQ(trace.counts.size(), 2u);
  for (const std::vector<int>& layer : trace.counts)
    EXPECT_EQ(*std::min_element(layer.begin(), layer.end()), 0);
  auto lm = LocalModel::Load(dir.path(), F32Layout(), "cpu", 2);
  ASSERT_TRUE(lm.ok()) << lm.status();
  EXPECT_LT(testing::RelativeError(Prefill(**lm, tokens, 3), want.back()), 1e-4);
}

// Experts stored in f16 / int8 (their group scales inside each expert's
// block) stay close to the f32 reference.
TEST(MoeTest, SixteenBitAndInt8Experts) {
  const auto m = MakeModel(Qwen2Moe(), 48);
  testing::TempDir dir;
  WriteHf(*m, dir.path(), true);
  const std::vector<int32_t> tokens = Tokens(10, 128);
  const Rows want = Reference(*m, tokens);
  for (auto [format, tol] : {std::pair{"f16", 1e-2}, std::pair{"int8", 3e-2}}) {
    LayoutOptions layout = F32Layout();
    layout.weight_format = format;
    auto lm = LocalModel::Load(dir.path(), layout, "cpu", 2);
    ASSERT_TRUE(lm.ok()) << lm.status();
    const ExpertTable& x = (*lm)->image->image().header->Layer(0).experts;
    EXPECT_EQ(x.tensors[0].Type(), std::string(format) == "f16" ? DType::kF16 : DType::kI8);
    EXPECT_EQ((*lm)->image->image().header->Layer(0).Find("router")->Type(), DType::kF32);
    auto got = TeacherForcedLogits(*(*lm)->engine, tokens, (*lm)->kv_blocks());
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t p = 0; p < got->size(); ++p)
      EXPECT_LT(testing::RelativeError((*got)[p], want[p]), tol) << format << " pos " << p;
  }
}

// The config readers: which layers are sparse, the defaults, the errors.
TEST(MoeTest, HfConfigOfEachArchitecture) {
  const ModelConfig q3 = Qwen3Moe();
  testing::TempDir dir;
  WriteHf(*MakeModel(q3, 1), dir.path(), false);
  auto src = OpenModel(dir.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelConfig& c = (*src)->config;
  EXPECT_EQ(c.arch, Arch::kQwen3Moe);
  EXPECT_EQ(c.n_experts, 8);
  EXPECT_EQ(c.n_experts_used, 2);
  EXPECT_EQ(c.expert_ffn, 32);
  EXPECT_EQ(c.norm_topk_prob, 1);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.IsMoeLayer(0));  // decoder_sparse_step 2
  EXPECT_TRUE(c.IsMoeLayer(1));
  // A tensor of an expert the config does not have.
  json j = HfConfig(q3);
  j["num_experts"] = 4;
  testing::WriteFile(dir.File("config.json"), j.dump());
  auto bad = OpenModel(dir.path());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("expert 4 outside"), std::string::npos) << bad.status();
}

// ---- the segment layout ----------------------------------------------------

// Each expert is one aligned block after the layer's dense part; the engine
// (and the pager) address expert e as expert 0 moved by e strides; a dense
// layer of the same model has no experts.
TEST(MoeTest, ExpertBlocksInTheLayerTable) {
  const auto m = MakeModel(Qwen2Moe(), 44);
  auto img = OwnedImage::Build(m->src, F32Layout());
  ASSERT_TRUE(img.ok()) << img.status();
  const ModelImage& image = (*img)->image();
  const SegmentHeader& h = *image.header;
  EXPECT_EQ(h.layer_used_bytes,
            std::max({h.LayerUsedBytes(0), h.LayerUsedBytes(1), h.LayerUsedBytes(2)}));
  EXPECT_EQ(h.Layer(1).experts.n_experts, 0u);
  EXPECT_NE(h.Layer(1).Find("w_gate"), nullptr);
  for (int l : {0, 2}) {
    const LayerTable& t = h.Layer(l);
    const ExpertTable& x = t.experts;
    ASSERT_EQ(x.n_experts, 4u);
    EXPECT_EQ(t.Find("w_gate"), nullptr);
    ASSERT_NE(t.Find("router"), nullptr);
    EXPECT_EQ(t.Find("router")->Type(), DType::kF32);
    EXPECT_EQ(x.offset % kTensorAlign, 0u);
    EXPECT_EQ(x.stride % kTensorAlign, 0u);
    EXPECT_GE(x.offset, x.dense_bytes);
    EXPECT_GE(x.stride, x.expert_bytes);
    EXPECT_EQ(t.used_bytes, x.offset + 4 * x.stride);
    // Dense tensors before the experts, expert tensors inside their block.
    for (uint32_t i = 0; i < t.n_tensors; ++i)
      EXPECT_LE(t.tensors[i].offset + t.tensors[i].bytes, x.dense_bytes);
    for (const TensorEntry& e : x.tensors) EXPECT_LE(e.offset + e.bytes, x.expert_bytes);
    const LayerWeights w = image.LayerAt(l, image.weights + h.LayerOffset(l));
    ASSERT_EQ(w.experts.n, 4);
    for (int e = 0; e < 4; ++e) {
      const uint8_t* block = image.weights + h.LayerOffset(l) + x.ExpertOffset(e);
      EXPECT_EQ(w.experts.Gate(e).data, block + x.tensors[0].offset);
      for (auto [name, ref] :
           {std::pair{"exp_gate", w.experts.Gate(e)}, std::pair{"exp_up", w.experts.Up(e)},
            std::pair{"exp_down", w.experts.Down(e)}}) {
        const std::vector<float>& v = m->Get(name, l, e);
        EXPECT_EQ(std::memcmp(ref.data, v.data(), v.size() * 4), 0) << name << " " << e;
      }
    }
  }
}

// ---- paged equals resident ---------------------------------------------------

struct RunResult {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // of each chosen token
};

// Greedy decoding of 16 tokens after a 6-token prompt (one prefill step) on
// the CPU backend: everything resident, or every layer through 2 slots,
// optionally with a host share of each dense matrix (a hybrid step).
RunResult RunGreedy(const OwnedImage& img, bool paged, double host_share = 0) {
  auto backend = MakeBackend("cpu", 2);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return {};
  const ModelImage& image = img.image();
  std::unique_ptr<WeightProvider> provider;
  if (paged) {
    PlanLimits l;
    l.budget_bytes = 1ull << 30;
    l.max_step_tokens = 64;
    l.max_step_seqs = 4;
    l.max_step_kv_tokens = 256;
    l.resident = "none";
    l.slots = 2;
    l.backend = PlanBackend::kCpu;
    auto plan = PlanMemory(*image.header, l);
    EXPECT_TRUE(plan.ok()) << plan.status();
    if (!plan.ok()) return {};
    EXPECT_EQ(plan->n_paged(), image.config().n_layers);
    PagerOptions o;
    if (host_share > 0) o.host_share = [host_share](int) { return host_share; };
    auto p = Pager::Create(backend->get(), image, *plan, o);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {};
    provider = std::move(*p);
  } else {
    provider = std::move(*ResidentProvider::Create(backend->get(), image));
  }
  Engine engine(backend->get(), provider.get(), image.config(), int(image.header->block_tokens));
  std::unique_ptr<HostExecutor> host;
  if (host_share > 0) {
    cpu_exec::ExecPoolOptions o;
    o.threads = 2;
    host = cpu_exec::MakeHostExecutor(o);
    engine.set_host_executor(host.get());
  }
  GenerateRequest req;
  req.prompt = {1, 5, 9, 33, 70, 2};
  req.max_new_tokens = 16;
  req.stop_at_eos = false;
  req.record_logits = true;
  auto r = Generate(engine, req, image.header->kv_n_blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  provider.reset();
  if (!r.ok()) return {};
  return {r->tokens, r->chosen_logits};
}

// Bit for bit: the same kernels compute the same rows (the dense model of
// the same shape is the control).
TEST(MoeTest, PagedEqualsResident) {
  ModelConfig dense = Base(Arch::kQwen2, 0, 2);
  for (int l = 0; l < 2; ++l) dense.SetMoeLayer(l, false);
  dense.n_experts_used = dense.expert_ffn = 0;
  for (const ModelConfig& c : {dense, Mixtral(), Qwen2Moe(), Qwen3Moe(), GptOss()}) {
    const auto m = MakeModel(c, 45);
    auto img = OwnedImage::Build(m->src, F32Layout());
    ASSERT_TRUE(img.ok()) << img.status();
    const RunResult resident = RunGreedy(**img, false);
    ASSERT_EQ(resident.tokens.size(), 16u);
    const RunResult paged = RunGreedy(**img, true);
    EXPECT_EQ(paged.tokens, resident.tokens) << DescribeConfig(c);
    EXPECT_EQ(paged.logits, resident.logits) << DescribeConfig(c);
    // A hybrid step: the attention and dense MLP matrices split with the
    // host; the router, the shared expert and the experts copied whole.
    const RunResult hybrid = RunGreedy(**img, true, 0.5);
    EXPECT_EQ(hybrid.tokens, resident.tokens) << DescribeConfig(c);
    EXPECT_EQ(hybrid.logits, resident.logits) << DescribeConfig(c);
  }
}

// ---- GGUF ----------------------------------------------------------------------

// `m` as a llama.cpp GGUF (qwen2moe / qwen3moe: NEOX RoPE, rows as HF's):
// the experts as 3-D tensors ne = [cols, rows, experts].
std::string GgufOf(const Model& m) {
  const ModelConfig& c = m.src.config;
  const std::string arch = c.arch == Arch::kQwen2Moe ? "qwen2moe" : "qwen3moe";
  testing::GgufBuilder b;
  AddGgufShape(b, arch, c, c.ffn)
      .F32(arch + ".rope.freq_base", c.rope_theta)
      .U32(arch + ".vocab_size", uint32_t(c.vocab))
      .U32(arch + ".expert_count", uint32_t(c.n_experts))
      .U32(arch + ".expert_used_count", uint32_t(c.n_experts_used))
      .U32(arch + ".expert_feed_forward_length", uint32_t(c.expert_ffn));
  if (c.shared_expert_ffn > 0)
    b.U32(arch + ".expert_shared_feed_forward_length", uint32_t(c.shared_expert_ffn));
  auto tensor = [&](const std::string& name, const std::string& canonical, int l) {
    AddGgufTensor(b, m, name, canonical, l);
  };
  tensor("token_embd.weight", "tok_embd", -1);
  tensor("output_norm.weight", "output_norm", -1);
  tensor("output.weight", "output", -1);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (auto [g, n] :
         std::vector<std::pair<std::string, std::string>>{{"attn_norm.weight", "attn_norm"},
                                                          {"attn_q.weight", "wq"},
                                                          {"attn_k.weight", "wk"},
                                                          {"attn_v.weight", "wv"},
                                                          {"attn_output.weight", "wo"},
                                                          {"ffn_norm.weight", "ffn_norm"}})
      tensor(p + g, n, l);
    if (c.qkv_bias) {
      tensor(p + "attn_q.bias", "bq", l);
      tensor(p + "attn_k.bias", "bk", l);
      tensor(p + "attn_v.bias", "bv", l);
    }
    if (c.qk_norm) {
      tensor(p + "attn_q_norm.weight", "q_norm", l);
      tensor(p + "attn_k_norm.weight", "k_norm", l);
    }
    if (!c.IsMoeLayer(l)) {
      tensor(p + "ffn_gate.weight", "w_gate", l);
      tensor(p + "ffn_up.weight", "w_up", l);
      tensor(p + "ffn_down.weight", "w_down", l);
      continue;
    }
    tensor(p + "ffn_gate_inp.weight", "router", l);
    if (c.shared_expert_ffn > 0) {
      tensor(p + "ffn_gate_shexp.weight", "shexp_gate", l);
      tensor(p + "ffn_up_shexp.weight", "shexp_up", l);
      tensor(p + "ffn_down_shexp.weight", "shexp_down", l);
      b.Tensor(p + "ffn_gate_inp_shexp.weight", {uint64_t(c.hidden)},
               testing::GgufBuilder::kTypeF32,
               testing::GgufBuilder::F32Bytes(m.Get("shexp_gate_inp", l)));
    }
    AddGgufExperts(b, m, l);
  }
  return b.Build();
}

TEST(MoeTest, GgufExpertsMatchReference) {
  for (ModelConfig c : {Qwen2Moe(), Qwen3Moe()}) {
    // GGUF has no key for dense layers among sparse ones: its layers are
    // sparse where they have a router (the same model here).
    const auto m = MakeModel(c, 46);
    testing::TempDir dir;
    const std::string path = dir.File("model.gguf");
    testing::WriteFile(path, GgufOf(*m));
    auto src = OpenModel(path);
    ASSERT_TRUE(src.ok()) << src.status();
    const ModelConfig& got = (*src)->config;
    EXPECT_EQ(got.arch, c.arch);
    EXPECT_EQ(got.n_experts, c.n_experts);
    EXPECT_EQ(got.expert_ffn, c.expert_ffn);
    EXPECT_EQ(got.shared_expert_ffn, c.shared_expert_ffn);
    // llama.cpp's rule: qwen2moe does not renormalize, qwen3moe does.
    EXPECT_EQ(got.norm_topk_prob, c.arch == Arch::kQwen3Moe ? 1 : 0);
    for (int l = 0; l < c.n_layers; ++l) EXPECT_EQ(got.IsMoeLayer(l), c.IsMoeLayer(l)) << l;
    const SourceTensor* x = (*src)->Find("exp_down", c.n_layers - 1, c.n_experts - 1);
    ASSERT_NE(x, nullptr);
    EXPECT_EQ(x->rows, c.hidden);
    EXPECT_EQ(x->cols, c.expert_ffn);
    ExpectMatchesReference(*m, path, 10);
  }
}

// ---- routing and the scatter-add op -------------------------------------------

TEST(MoeTest, RouteTopKSoftmaxTiesAndRenormalization) {
  // Row 0: expert 2 then a tie of 1 and 3 (the lower id wins); row 1: 0 and 3.
  const std::vector<float> logits = {0.f, 1.f, 2.f, 1.f, 3.f, -1.f, 0.f, 2.f};
  MoeRouting r;
  RouteTopK(logits.data(), 2, 4, 2, /*renormalize=*/false, &r);
  ASSERT_EQ(r.begin, (std::vector<int32_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(r.rows, (std::vector<int32_t>{1, 0, 0, 1}));
  const double z0 = 1 + 2 * std::exp(1.0) + std::exp(2.0);
  EXPECT_NEAR(r.weights[2], std::exp(2.0) / z0, 1e-7);  // expert 2, row 0
  EXPECT_NEAR(r.weights[1], std::exp(1.0) / z0, 1e-7);  // expert 1, row 0
  RouteTopK(logits.data(), 2, 4, 2, /*renormalize=*/true, &r);
  EXPECT_NEAR(r.weights[2] + r.weights[1], 1.0, 1e-7);
  EXPECT_NEAR(r.weights[0] + r.weights[3], 1.0, 1e-7);  // row 1: experts 0, 3
  EXPECT_NEAR(r.weights[0], 1 / (1 + std::exp(-1.0)), 1e-7);
}

TEST(MoeTest, ScatterAddRowsOnCpu) {
  auto backend = MakeBackend("cpu", 1);
  ASSERT_TRUE(backend.ok());
  std::vector<float> out = {1, 1, 1, 2, 2, 2, 3, 3, 3};
  const std::vector<float> y = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> rows = {2, 0};
  const std::vector<float> w = {0.5f, -1.f};
  (*backend)->ScatterAddRows(y.data(), rows.data(), w.data(), 2, 3, out.data());
  EXPECT_EQ(out, (std::vector<float>{-3, -4, -5, 2, 2, 2, 3.5f, 4, 4.5f}));
}

// Each listed token's rows of y, weighted, in the listed order; rows of
// tokens not listed unchanged. The task-by-task ExpertFfn leaves rows of no
// task as they were and computes each task's gated MLP.
TEST(MoeTest, CombineRowsAndExpertFfnOnCpu) {
  auto backend = MakeBackend("cpu", 1);
  ASSERT_TRUE(backend.ok());
  std::vector<float> out = {1, 1, 2, 2, 3, 3};
  const std::vector<float> y = {1, 2, 10, 20, 100, 200, 1000, 2000};
  const std::vector<float> w = {1.f, 0.5f, -1.f, 2.f};
  // token 2: rows 1 then 3; token 0: row 2; token 1 not listed.
  const std::vector<int32_t> tokens = {2, 0}, begin = {0, 2, 3}, pos = {1, 3, 2};
  (*backend)->CombineRows(y.data(), w.data(), tokens.data(), begin.data(), pos.data(), 2, 2,
                          out.data());
  EXPECT_EQ(out, (std::vector<float>{-99, -199, 2, 2, 3 + 5 + 2000, 3 + 10 + 4000}));

  // Two experts of hidden 2, ffn 1: gate = [1, 0], up = [0, 1], down = [1; 2].
  const std::vector<float> g = {1, 0}, u = {0, 1}, d = {1, 2};
  auto ref = [](const std::vector<float>& v, int64_t rows, int64_t cols) {
    WeightRef r;
    r.data = v.data();
    r.dtype = DType::kF32;
    r.rows = rows;
    r.cols = cols;
    return r;
  };
  ExpertTask t0, t1;
  t0.gate = t1.gate = ref(g, 1, 2);
  t0.up = t1.up = ref(u, 1, 2);
  t0.down = t1.down = ref(d, 2, 1);
  const std::vector<float> bias = {0.25f, -1.f};
  t1.down_b = bias.data();
  t0.row0 = 0, t0.n = 1;
  t1.row0 = 2, t1.n = 1;  // row 1 belongs to no task
  const ExpertTask tasks[] = {t0, t1};
  const std::vector<float> x = {2, 3, 9, 9, -1, 4};
  std::vector<float> gate(3, 0.f), up(3, 0.f), yy(6, 7.f);
  (*backend)->ExpertFfn(x.data(), tasks, 2, GluAct{}, gate.data(), up.data(), yy.data());
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  const float h0 = float(silu(2) * 3), h1 = float(silu(-1) * 4);
  EXPECT_NEAR(yy[0], h0, 1e-6);
  EXPECT_NEAR(yy[1], 2 * h0, 1e-6);
  EXPECT_EQ(yy[2], 7.f);
  EXPECT_EQ(yy[3], 7.f);
  EXPECT_NEAR(yy[4], h1 + 0.25f, 1e-6);
  EXPECT_NEAR(yy[5], 2 * h1 - 1.f, 1e-6);
}

}  // namespace
}  // namespace paged
