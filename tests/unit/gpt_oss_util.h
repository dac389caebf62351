// gpt-oss HF checkpoints for tests: a reference model (tests/unit/
// reference_model.h, a moe_testing::GptOss() config) written as
// transformers 5 saves GptOssForCausalLM (experts fused as x @ W, gate and up
// interleaved, f32) or as the released checkpoints hold it (MXFP4 blocks and
// scales). Shared by gpt_oss_test.cc and gpt_oss_gpu_test.cc.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/model_config.h"
#include "store/safetensors_writer.h"
#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "tests/unit/test_util.h"

namespace paged::gpt_oss_testing {

using reference::Model;

// ---- an HF checkpoint --------------------------------------------------------

// config.json as transformers 5 writes GptOssConfig (rope_parameters,
// layer_types).
inline nlohmann::json ConfigJson(const ModelConfig& c, bool mxfp4) {
  nlohmann::json j = moe_testing::HfShapeConfig(c);
  j["architectures"] = {"GptOssForCausalLM"};
  j["model_type"] = "gpt_oss";
  j["intermediate_size"] = c.expert_ffn;
  j["num_local_experts"] = c.n_experts;
  j["num_experts_per_tok"] = c.n_experts_used;
  j["sliding_window"] = c.sliding_window;
  nlohmann::json types = nlohmann::json::array();
  for (int l = 0; l < c.n_layers; ++l)
    types.push_back(c.IsSlidingLayer(l) ? "sliding_attention" : "full_attention");
  j["layer_types"] = types;
  j["rope_parameters"] = {{"rope_type", "yarn"},
                          {"rope_theta", c.rope_theta},
                          {"factor", c.rope_factor},
                          {"beta_fast", 32.0},
                          {"beta_slow", 1.0},
                          {"truncate", false},
                          {"original_max_position_embeddings", c.rope_original_max_pos}};
  j["swiglu_limit"] = c.swiglu_limit;
  j["attention_bias"] = true;
  j["tie_word_embeddings"] = false;
  j["hidden_act"] = "silu";
  if (mxfp4) j["quantization_config"] = {{"quant_method", "mxfp4"}};
  return j;
}

// e2m1 values by code (sign in bit 3), as transformers' FP4_VALUES.
inline constexpr float kFp4[16] = {0.f,  0.5f,  1.f,  1.5f,  2.f,  3.f,  4.f,  6.f,
                                   -0.f, -0.5f, -1.f, -1.5f, -2.f, -3.f, -4.f, -6.f};

// An MXFP4 matrix [rows, cols] in HF's layout: per row cols / 32 groups of
// 16 bytes (value 2i of a group in the low nibble of byte i) and one E8M0
// exponent byte per group.
struct HfMxfp4 {
  std::vector<uint8_t> blocks, scales;
};

// Random codes and exponents (values up to about +-0.4, like the reference's
// N(0, 0.08)) for `w` [rows, cols], which is overwritten with the values
// they decode to: the reference then computes with exactly the checkpoint's
// weights.
inline HfMxfp4 QuantizeRandom(std::vector<float>& w, int64_t rows, int64_t cols,
                              std::mt19937& rng) {
  HfMxfp4 q;
  const int64_t groups = cols / 32;
  q.blocks.resize(size_t(rows * groups * 16));
  q.scales.resize(size_t(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t e = uint8_t(127 - 6 + int(rng() % 3));  // 2^-6 .. 2^-4
      q.scales[size_t(r * groups + g)] = e;
      for (int i = 0; i < 16; ++i) {
        const uint8_t lo = uint8_t(rng() % 16), hi = uint8_t(rng() % 16);
        q.blocks[size_t((r * groups + g) * 16 + i)] = uint8_t(lo | hi << 4);
        const float scale = std::ldexp(1.f, int(e) - 127);
        w[size_t(r * cols + g * 32 + 2 * i)] = kFp4[lo] * scale;
        w[size_t(r * cols + g * 32 + 2 * i + 1)] = kFp4[hi] * scale;
      }
    }
  }
  return q;
}

// Writes `m` (a GptOss() config) as an HF gpt-oss checkpoint: the experts
// fused, f32 (transformers 5's save_pretrained), or as MXFP4 blocks and
// scales (the released checkpoints), in which case the model's expert
// weights become the MXFP4 values first.
inline void WriteGptOssHf(Model& m, const std::string& dir, bool mxfp4) {
  const ModelConfig& c = m.src.config;
  const int64_t E = c.n_experts, H = c.hidden, F = c.expert_ffn;
  std::vector<SafetensorsEntry> entries;
  std::vector<std::vector<uint8_t>> data;
  auto put_bytes = [&](const std::string& name, const char* dtype, std::vector<int64_t> shape,
                       std::vector<uint8_t> bytes) {
    entries.push_back({name, dtype, std::move(shape)});
    data.push_back(std::move(bytes));
  };
  auto put = [&](const std::string& name, std::vector<int64_t> shape, const std::vector<float>& v) {
    std::vector<uint8_t> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    put_bytes(name, "F32", std::move(shape), std::move(b));
  };
  auto get = [&](const char* name, int l, int e = -1) -> std::vector<float>& {
    for (size_t i = 0; i < m.src.tensors.size(); ++i) {
      const SourceTensor& t = m.src.tensors[i];
      if (t.name == name && t.layer == l && t.expert == e) return *m.storage[i];
    }
    ADD_FAILURE() << "no " << name;
    return *m.storage[0];
  };
  std::mt19937 rng(77);
  put("model.embed_tokens.weight", {c.vocab, H}, get("tok_embd", -1));
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    put(p + "input_layernorm.weight", {H}, get("attn_norm", l));
    put(p + "post_attention_layernorm.weight", {H}, get("ffn_norm", l));
    put(p + "self_attn.q_proj.weight", {c.q_dim(), H}, get("wq", l));
    put(p + "self_attn.k_proj.weight", {c.kv_dim(), H}, get("wk", l));
    put(p + "self_attn.v_proj.weight", {c.kv_dim(), H}, get("wv", l));
    put(p + "self_attn.o_proj.weight", {H, c.q_dim()}, get("wo", l));
    put(p + "self_attn.q_proj.bias", {c.q_dim()}, get("bq", l));
    put(p + "self_attn.k_proj.bias", {c.kv_dim()}, get("bk", l));
    put(p + "self_attn.v_proj.bias", {c.kv_dim()}, get("bv", l));
    put(p + "self_attn.o_proj.bias", {H}, get("bo", l));
    put(p + "self_attn.sinks", {c.n_heads}, get("attn_sinks", l));
    put(p + "mlp.router.weight", {E, H}, get("router", l));
    put(p + "mlp.router.bias", {E}, get("router_b", l));
    // Biases: gate and up interleaved [E, 2F]; down [E, H].
    std::vector<float> gate_up_b(size_t(E * 2 * F));
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t j = 0; j < F; ++j) {
        gate_up_b[size_t(e * 2 * F + 2 * j)] = get("exp_gate_b", l)[size_t(e * F + j)];
        gate_up_b[size_t(e * 2 * F + 2 * j + 1)] = get("exp_up_b", l)[size_t(e * F + j)];
      }
    }
    put(p + "mlp.experts.gate_up_proj_bias", {E, 2 * F}, gate_up_b);
    put(p + "mlp.experts.down_proj_bias", {E, H}, get("exp_down_b", l));
    if (mxfp4) {
      // Linear-layer orientation [E, rows, cols / 32, 16]: gate_up's rows
      // 2j / 2j + 1 are gate / up row j.
      std::vector<uint8_t> gu_blocks, gu_scales, d_blocks, d_scales;
      for (int e = 0; e < E; ++e) {
        const HfMxfp4 g = QuantizeRandom(get("exp_gate", l, e), F, H, rng);
        const HfMxfp4 u = QuantizeRandom(get("exp_up", l, e), F, H, rng);
        const HfMxfp4 d = QuantizeRandom(get("exp_down", l, e), H, F, rng);
        const size_t rb = size_t(H / 32 * 16), rs = size_t(H / 32);
        for (int64_t j = 0; j < F; ++j) {
          for (const HfMxfp4* x : {&g, &u}) {
            gu_blocks.insert(gu_blocks.end(), x->blocks.begin() + long(j * rb),
                             x->blocks.begin() + long((j + 1) * rb));
            gu_scales.insert(gu_scales.end(), x->scales.begin() + long(j * rs),
                             x->scales.begin() + long((j + 1) * rs));
          }
        }
        d_blocks.insert(d_blocks.end(), d.blocks.begin(), d.blocks.end());
        d_scales.insert(d_scales.end(), d.scales.begin(), d.scales.end());
      }
      put_bytes(p + "mlp.experts.gate_up_proj_blocks", "U8", {E, 2 * F, H / 32, 16}, gu_blocks);
      put_bytes(p + "mlp.experts.gate_up_proj_scales", "U8", {E, 2 * F, H / 32}, gu_scales);
      put_bytes(p + "mlp.experts.down_proj_blocks", "U8", {E, H, F / 32, 16}, d_blocks);
      put_bytes(p + "mlp.experts.down_proj_scales", "U8", {E, H, F / 32}, d_scales);
      continue;
    }
    // x @ W: gate_up_proj [E, H, 2F] (column 2j gate row j, 2j + 1 up row
    // j), down_proj [E, F, H].
    std::vector<float> gate_up(size_t(E * H * 2 * F)), down(size_t(E * F * H));
    for (int e = 0; e < E; ++e) {
      const std::vector<float>& g = get("exp_gate", l, e);
      const std::vector<float>& u = get("exp_up", l, e);
      const std::vector<float>& d = get("exp_down", l, e);
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t j = 0; j < F; ++j) {
          gate_up[size_t((e * H + h) * 2 * F + 2 * j)] = g[size_t(j * H + h)];
          gate_up[size_t((e * H + h) * 2 * F + 2 * j + 1)] = u[size_t(j * H + h)];
          down[size_t((e * F + j) * H + h)] = d[size_t(h * F + j)];
        }
      }
    }
    put(p + "mlp.experts.gate_up_proj", {E, H, 2 * F}, gate_up);
    put(p + "mlp.experts.down_proj", {E, F, H}, down);
  }
  put("model.norm.weight", {H}, get("output_norm", -1));
  put("lm_head.weight", {c.vocab, H}, get("output", -1));
  testing::WriteFile(dir + "/config.json", ConfigJson(c, mxfp4).dump(2));
  auto w = SafetensorsWriter::Create(dir + "/model.safetensors", entries);
  ASSERT_TRUE(w.ok()) << w.status();
  for (const std::vector<uint8_t>& v : data) ASSERT_TRUE((*w)->Append(v.data(), v.size()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
}

}  // namespace paged::gpt_oss_testing
