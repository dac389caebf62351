// Tiny mixture-of-experts models for tests: configs of each architecture
// and an HF checkpoint of a reference model (tests/unit/reference_model.h)
// under transformers 4.x (one tensor per expert) or 5.x (fused) names; its
// tensors and experts as GGUF tensors.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/model_config.h"
#include "store/safetensors_writer.h"
#include "tests/unit/gguf_builder.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"

namespace paged::moe_testing {

using reference::Model;

// ---- configs ---------------------------------------------------------------

inline ModelConfig Base(Arch arch, int n_experts, int layers) {
  ModelConfig c = reference::SmallConfig(arch, layers);
  c.n_experts = n_experts;
  c.n_experts_used = 2;
  c.expert_ffn = 32;
  for (int l = 0; l < layers; ++l) c.SetMoeLayer(l, true);
  return c;
}

inline ModelConfig Mixtral() {
  ModelConfig c = Base(Arch::kMixtral, 8, 2);
  c.ffn = c.expert_ffn;  // mixtral's intermediate_size is its experts'
  c.norm_topk_prob = 1;
  c.rope_theta = 1000000.f;
  return c;
}

// Three layers, the middle one dense (mlp_only_layers), a shared expert, no
// renormalization (Qwen1.5-MoE's config), q/k/v biases.
inline ModelConfig Qwen2Moe() {
  ModelConfig c = Base(Arch::kQwen2Moe, 4, 3);
  c.SetMoeLayer(1, false);
  c.shared_expert_ffn = 48;
  c.qkv_bias = 1;
  return c;
}

// q/k norms, 8 experts, renormalized top-2, every second layer sparse
// (decoder_sparse_step 2).
inline ModelConfig Qwen3Moe() {
  ModelConfig c = Base(Arch::kQwen3Moe, 8, 2);
  c.SetMoeLayer(0, false);
  c.qk_norm = 1;
  c.norm_topk_prob = 1;
  c.head_dim = 32;  // q_dim 128 != hidden
  return c;
}

// gpt-oss: q/k/v/o biases, a sink per head, 4 layers alternating a window of
// 5 (even layers) with full attention, yarn x4 over 16 positions not
// truncated (transformers' truncate: false), head_dim 32 (q_dim 128 !=
// hidden), 4 experts of 32 (whole MXFP4 blocks), top-2 of the router's
// logits with its bias, expert biases, the clamped SwiGLU with a low limit
// (0.5) so that it bites on random weights, on both sides.
inline ModelConfig GptOss() {
  ModelConfig c = Base(Arch::kGptOss, 4, 4);
  c.ffn = c.expert_ffn;  // gpt-oss's intermediate_size is its experts'
  c.head_dim = 32;
  c.qkv_bias = c.o_bias = c.attn_sinks = 1;
  c.norm_topk_prob = c.router_bias = c.expert_bias = 1;
  c.swiglu_limit = 0.5f;
  c.swiglu_alpha = 1.702f;
  c.sliding_window = 5;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, l % 2 == 0);
  c.rope_theta = 150000.f;
  c.rope_scaling = RopeScaling::kYarn;
  c.rope_factor = 4.f;
  c.rope_original_max_pos = 16;
  c.rope_yarn_truncate = 0;
  c.rope_attn_factor = float(0.1 * std::log(4.0) + 1);
  c.max_context = 64;
  return c;
}

// ---- an HF checkpoint of a reference model --------------------------------

// The config.json fields every HF decoder of these tests has: the shapes,
// the context and the norm's epsilon.
inline nlohmann::json HfShapeConfig(const ModelConfig& c) {
  return {{"hidden_size", c.hidden},
          {"num_hidden_layers", c.n_layers},
          {"num_attention_heads", c.n_heads},
          {"num_key_value_heads", c.n_kv_heads},
          {"head_dim", c.head_dim},
          {"vocab_size", c.vocab},
          {"max_position_embeddings", c.max_context},
          {"rms_norm_eps", c.norm_eps}};
}

inline nlohmann::json HfConfig(const ModelConfig& c) {
  nlohmann::json j = HfShapeConfig(c);
  const bool mixtral = c.arch == Arch::kMixtral;
  j["model_type"] = std::string(ArchName(c.arch));
  j["architectures"] = {mixtral                     ? "MixtralForCausalLM"
                        : c.arch == Arch::kQwen2Moe ? "Qwen2MoeForCausalLM"
                                                    : "Qwen3MoeForCausalLM"};
  j["intermediate_size"] = c.ffn;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = false;
  j["num_experts_per_tok"] = c.n_experts_used;
  if (mixtral) {
    j["num_local_experts"] = c.n_experts;
    j["sliding_window"] = nullptr;
    return j;
  }
  j["num_experts"] = c.n_experts;
  j["moe_intermediate_size"] = c.expert_ffn;
  j["norm_topk_prob"] = c.norm_topk_prob != 0;
  if (c.arch == Arch::kQwen2Moe) j["shared_expert_intermediate_size"] = c.shared_expert_ffn;
  // Sparse layers: decoder_sparse_step when it describes them, else mlp_only_layers.
  int step = 1;
  while (step <= c.n_layers) {
    bool fits = true;
    for (int l = 0; l < c.n_layers; ++l) fits = fits && c.IsMoeLayer(l) == ((l + 1) % step == 0);
    if (fits) break;
    ++step;
  }
  if (step <= c.n_layers) {
    j["decoder_sparse_step"] = step;
  } else {
    j["decoder_sparse_step"] = 1;
    nlohmann::json dense = nlohmann::json::array();
    for (int l = 0; l < c.n_layers; ++l) {
      if (!c.IsMoeLayer(l)) dense.push_back(l);
    }
    j["mlp_only_layers"] = dense;
  }
  return j;
}

// Writes `m` as an HF checkpoint: experts one by one under transformers 4.x
// names (mixtral's block_sparse_moe.experts.{e}.w1/w3/w2, qwen's
// mlp.experts.{e}.gate_proj/...), or fused as transformers 5 keeps them
// (mlp.gate, mlp.experts.gate_up_proj [E, 2F, H], mlp.experts.down_proj [E, H, F]).
inline void WriteHf(const Model& m, const std::string& dir, bool fused) {
  const ModelConfig& c = m.src.config;
  std::vector<SafetensorsEntry> entries;
  std::vector<std::vector<float>> data;
  auto put = [&](const std::string& name, std::vector<int64_t> shape, std::vector<float> v) {
    entries.push_back({name, "F32", std::move(shape)});
    data.push_back(std::move(v));
  };
  auto mat = [&](const std::string& hf, const std::string& name, int l, int e = -1) {
    const std::vector<float>& v = m.Get(name, l, e);
    for (const SourceTensor& t : m.src.tensors) {
      if (t.name == name && t.layer == l && t.expert == e) {
        if (t.rows == 1 && name != "shexp_gate_inp")
          put(hf, {t.cols}, v);
        else
          put(hf, {t.rows, t.cols}, v);
        return;
      }
    }
    ADD_FAILURE() << "no " << name;
  };
  mat("model.embed_tokens.weight", "tok_embd", -1);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    mat(p + "input_layernorm.weight", "attn_norm", l);
    mat(p + "self_attn.q_proj.weight", "wq", l);
    mat(p + "self_attn.k_proj.weight", "wk", l);
    mat(p + "self_attn.v_proj.weight", "wv", l);
    mat(p + "self_attn.o_proj.weight", "wo", l);
    if (c.qkv_bias) {
      mat(p + "self_attn.q_proj.bias", "bq", l);
      mat(p + "self_attn.k_proj.bias", "bk", l);
      mat(p + "self_attn.v_proj.bias", "bv", l);
    }
    if (c.qk_norm) {
      mat(p + "self_attn.q_norm.weight", "q_norm", l);
      mat(p + "self_attn.k_norm.weight", "k_norm", l);
    }
    mat(p + "post_attention_layernorm.weight", "ffn_norm", l);
    if (!c.IsMoeLayer(l)) {
      mat(p + "mlp.gate_proj.weight", "w_gate", l);
      mat(p + "mlp.up_proj.weight", "w_up", l);
      mat(p + "mlp.down_proj.weight", "w_down", l);
      continue;
    }
    const bool mixtral4 = c.arch == Arch::kMixtral && !fused;
    mat(p + (mixtral4 ? "block_sparse_moe.gate.weight" : "mlp.gate.weight"), "router", l);
    if (c.shared_expert_ffn > 0) {
      mat(p + "mlp.shared_expert.gate_proj.weight", "shexp_gate", l);
      mat(p + "mlp.shared_expert.up_proj.weight", "shexp_up", l);
      mat(p + "mlp.shared_expert.down_proj.weight", "shexp_down", l);
      mat(p + "mlp.shared_expert_gate.weight", "shexp_gate_inp", l);
    }
    if (fused) {
      std::vector<float> gate_up, down;
      for (int e = 0; e < c.n_experts; ++e) {
        for (const char* n : {"exp_gate", "exp_up"}) {
          const std::vector<float>& v = m.Get(n, l, e);
          gate_up.insert(gate_up.end(), v.begin(), v.end());
        }
        const std::vector<float>& d = m.Get("exp_down", l, e);
        down.insert(down.end(), d.begin(), d.end());
      }
      put(p + "mlp.experts.gate_up_proj", {c.n_experts, 2 * c.expert_ffn, c.hidden}, gate_up);
      put(p + "mlp.experts.down_proj", {c.n_experts, c.hidden, c.expert_ffn}, down);
      continue;
    }
    for (int e = 0; e < c.n_experts; ++e) {
      const std::string x =
          p + (mixtral4 ? "block_sparse_moe" : "mlp") + ".experts." + std::to_string(e) + ".";
      mat(x + (mixtral4 ? "w1.weight" : "gate_proj.weight"), "exp_gate", l, e);
      mat(x + (mixtral4 ? "w3.weight" : "up_proj.weight"), "exp_up", l, e);
      mat(x + (mixtral4 ? "w2.weight" : "down_proj.weight"), "exp_down", l, e);
    }
  }
  mat("model.norm.weight", "output_norm", -1);
  mat("lm_head.weight", "output", -1);
  testing::WriteFile(dir + "/config.json", HfConfig(c).dump(2));
  auto w = SafetensorsWriter::Create(dir + "/model.safetensors", entries);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const std::vector<float>& v : data)
    ASSERT_TRUE((*w)->Append(v.data(), v.size() * sizeof(float)).ok());
  ASSERT_TRUE((*w)->Finish().ok());
}

// ---- GGUF ------------------------------------------------------------------

// The shape keys every MoE test GGUF starts with, under `arch`, with `ffn`
// as feed_forward_length.
inline testing::GgufBuilder& AddGgufShape(testing::GgufBuilder& b, const std::string& arch,
                                          const ModelConfig& c, int ffn) {
  return b.String("general.architecture", arch)
      .U32(arch + ".context_length", uint32_t(c.max_context))
      .U32(arch + ".embedding_length", uint32_t(c.hidden))
      .U32(arch + ".block_count", uint32_t(c.n_layers))
      .U32(arch + ".feed_forward_length", uint32_t(ffn))
      .U32(arch + ".attention.head_count", uint32_t(c.n_heads))
      .U32(arch + ".attention.head_count_kv", uint32_t(c.n_kv_heads))
      .U32(arch + ".attention.key_length", uint32_t(c.head_dim))
      .U32(arch + ".attention.value_length", uint32_t(c.head_dim))
      .F32(arch + ".attention.layer_norm_rms_epsilon", c.norm_eps);
}

// Tensor `canonical` of layer `l` (-1: a global; never an expert's) of `m`
// as GGUF tensor `name`, f32 (ne = [cols], or [cols, rows]).
inline void AddGgufTensor(testing::GgufBuilder& b, const Model& m, const std::string& name,
                          const std::string& canonical, int l) {
  for (const SourceTensor& t : m.src.tensors) {
    if (t.name != canonical || t.layer != l || t.expert >= 0) continue;
    std::vector<uint64_t> ne = {uint64_t(t.cols)};
    if (t.rows > 1) ne.push_back(uint64_t(t.rows));
    b.Tensor(name, ne, testing::GgufBuilder::kTypeF32,
             testing::GgufBuilder::F32Bytes(m.Get(canonical, l)));
    return;
  }
  ADD_FAILURE() << "no " << canonical << " " << l;
}

// Layer `l`'s experts as llama.cpp keeps them: blk.L.ffn_{gate,up,down}_exps
// .weight, each 3-D (ne = [cols, rows, experts]), f32.
inline void AddGgufExperts(testing::GgufBuilder& b, const Model& m, int l) {
  const ModelConfig& c = m.src.config;
  const std::string p = "blk." + std::to_string(l) + ".";
  for (auto [g, n] :
       std::vector<std::pair<std::string, std::string>>{{"ffn_gate_exps.weight", "exp_gate"},
                                                        {"ffn_up_exps.weight", "exp_up"},
                                                        {"ffn_down_exps.weight", "exp_down"}}) {
    std::vector<float> all;
    for (int e = 0; e < c.n_experts; ++e) {
      const std::vector<float>& v = m.Get(n, l, e);
      all.insert(all.end(), v.begin(), v.end());
    }
    const bool down = n == "exp_down";
    b.Tensor(p + g,
             {uint64_t(down ? c.expert_ffn : c.hidden), uint64_t(down ? c.hidden : c.expert_ffn),
              uint64_t(c.n_experts)},
             testing::GgufBuilder::kTypeF32, testing::GgufBuilder::F32Bytes(all));
  }
}

}  // namespace paged::moe_testing
