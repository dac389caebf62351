// config.json parsing and HF checkpoint directories (single file, sharded),
// built from tiny tensors in a temporary directory.
#include "store/hf_checkpoint.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "store/safetensors_writer.h"
#include "tests/unit/test_util.h"

namespace paged {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// hidden 8, 2 heads of 4 (1 kv head), ffn 16, 2 layers, vocab 32.
json TinyConfig(const std::string& model_type = "llama") {
  return json{{"model_type", model_type},
              {"architectures", json::array({"LlamaForCausalLM"})},
              {"hidden_size", 8},
              {"intermediate_size", 16},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 2},
              {"num_key_value_heads", 1},
              {"vocab_size", 32},
              {"max_position_embeddings", 64},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 10000.0},
              {"tie_word_embeddings", false},
              {"bos_token_id", 1},
              {"eos_token_id", 2}};
}

// The HF tensors a TinyConfig model holds (with biases when `qkv_bias`).
std::vector<SafetensorsEntry> TinyTensors(bool qkv_bias = false, bool lm_head = true,
                                          const std::string& dtype = "F32") {
  std::vector<SafetensorsEntry> e = {{"model.embed_tokens.weight", dtype, {32, 8}},
                                     {"model.norm.weight", dtype, {8}}};
  if (lm_head) e.push_back({"lm_head.weight", dtype, {32, 8}});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    e.push_back({p + "input_layernorm.weight", dtype, {8}});
    e.push_back({p + "self_attn.q_proj.weight", dtype, {8, 8}});
    e.push_back({p + "self_attn.k_proj.weight", dtype, {4, 8}});
    e.push_back({p + "self_attn.v_proj.weight", dtype, {4, 8}});
    e.push_back({p + "self_attn.o_proj.weight", dtype, {8, 8}});
    if (qkv_bias) {
      e.push_back({p + "self_attn.q_proj.bias", dtype, {8}});
      e.push_back({p + "self_attn.k_proj.bias", dtype, {4}});
      e.push_back({p + "self_attn.v_proj.bias", dtype, {4}});
    }
    e.push_back({p + "post_attention_layernorm.weight", dtype, {8}});
    e.push_back({p + "mlp.gate_proj.weight", dtype, {16, 8}});
    e.push_back({p + "mlp.up_proj.weight", dtype, {16, 8}});
    e.push_back({p + "mlp.down_proj.weight", dtype, {8, 16}});
  }
  return e;
}

void Replace(std::vector<SafetensorsEntry>& e, const std::string& name, SafetensorsEntry with) {
  for (auto& x : e) {
    if (x.name == name) x = std::move(with);
  }
}
void Remove(std::vector<SafetensorsEntry>& e, const std::string& name) {
  std::erase_if(e, [&](const SafetensorsEntry& x) { return x.name == name; });
}

// Writes `entries` with a byte pattern as data (byte i of the data is i % 251).
void WriteSafetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries) {
  auto w = SafetensorsWriter::Create(path, entries);
  ASSERT_TRUE(w.ok()) << w.status();
  std::string data((*w)->data_bytes(), '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = char(i % 251);
  ASSERT_TRUE((*w)->Append(data.data(), data.size()).ok());
  ASSERT_TRUE((*w)->Finish().ok());
}

class HfCheckpointTest : public ::testing::Test {
 protected:
  void WriteConfig(const json& config) {
    paged::testing::WriteFile(dir_.File("config.json"), config.dump(2));
  }
  void WriteModel(const json& config, const std::vector<SafetensorsEntry>& entries) {
    WriteConfig(config);
    WriteSafetensors(dir_.File("model.safetensors"), entries);
  }
  // Writes a two-shard checkpoint: the first `split` entries in shard 1.
  void WriteSharded(const json& config, const std::vector<SafetensorsEntry>& entries, size_t split,
                    bool write_second = true) {
    WriteConfig(config);
    const std::string s1 = "model-00001-of-00002.safetensors";
    const std::string s2 = "model-00002-of-00002.safetensors";
    json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
    for (size_t i = 0; i < entries.size(); ++i)
      index["weight_map"][entries[i].name] = i < split ? s1 : s2;
    paged::testing::WriteFile(dir_.File("model.safetensors.index.json"), index.dump(2));
    WriteSafetensors(dir_.File(s1), {entries.begin(), entries.begin() + split});
    if (write_second) WriteSafetensors(dir_.File(s2), {entries.begin() + split, entries.end()});
  }
  absl::Status OpenError() {
    auto src = OpenHfCheckpoint(dir_.path());
    EXPECT_FALSE(src.ok());
    return src.ok() ? absl::OkStatus() : src.status();
  }

  paged::testing::TempDir dir_;
};

// ---------------------------------------------------------------------------
// config.json

absl::StatusOr<ModelConfig> Parse(const json& j) { return ParseHfConfig(j.dump(), "config.json"); }

TEST(HfConfigTest, ParsesLlamaWithDefaults) {
  json j = TinyConfig();
  for (const char* k : {"num_key_value_heads", "max_position_embeddings", "rms_norm_eps",
                        "rope_theta", "tie_word_embeddings", "bos_token_id", "eos_token_id"})
    j.erase(k);
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kLlama);
  EXPECT_EQ(c->hidden, 8);
  EXPECT_EQ(c->ffn, 16);
  EXPECT_EQ(c->n_layers, 2);
  EXPECT_EQ(c->n_heads, 2);
  EXPECT_EQ(c->n_kv_heads, 2);
  EXPECT_EQ(c->head_dim, 4);
  EXPECT_EQ(c->vocab, 32);
  EXPECT_EQ(c->max_context, 2048);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.f);
  EXPECT_EQ(c->rope_style, RopeStyle::kHalves);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kNone);
  EXPECT_EQ(c->tied_embeddings, 0);
  EXPECT_EQ(c->qkv_bias, 0);
  EXPECT_EQ(c->bos_id, -1);
  EXPECT_EQ(c->n_eos, 0);
  EXPECT_EQ(c->sliding_window, 0);
}

TEST(HfConfigTest, ParsesExplicitValues) {
  json j = TinyConfig();
  j["head_dim"] = 8;
  j["rope_theta"] = 500000;  // an integer is a fine number
  j["rope_scaling"] = nullptr;
  j["sliding_window"] = nullptr;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->n_kv_heads, 1);
  EXPECT_EQ(c->head_dim, 8);
  EXPECT_EQ(c->max_context, 64);
  EXPECT_FLOAT_EQ(c->norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.f);
  EXPECT_EQ(c->bos_id, 1);
  ASSERT_EQ(c->n_eos, 1);
  EXPECT_EQ(c->eos_ids[0], 2);
}

TEST(HfConfigTest, ArchitecturesFallback) {
  json j = TinyConfig();
  j.erase("model_type");
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4096;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kMistral);
  EXPECT_EQ(c->sliding_window, 4096);
}

TEST(HfConfigTest, UnsupportedArchitecture) {
  json j = TinyConfig("gpt2");
  j["architectures"] = {"GPT2LMHeadModel"};
  auto c = Parse(j);
  EXPECT_THAT(Msg(c.status()), HasSubstr("config.json: unsupported architecture 'gpt2'"));

  j.erase("model_type");
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("config.json: unsupported architecture 'GPT2LMHeadModel'"));
  j.erase("architectures");
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("missing 'model_type' and 'architectures'"));
}

TEST(HfConfigTest, BadConfigTypes) {
  json j = TinyConfig();
  j["hidden_size"] = "big";
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("config.json: 'hidden_size' is a string, expected an integer"));
  j = TinyConfig();
  j["num_hidden_layers"] = 2.5;
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'num_hidden_layers' is a number, expected an integer"));
  j = TinyConfig();
  j["tie_word_embeddings"] = "yes";
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'tie_word_embeddings' is a string, expected a boolean"));
  j = TinyConfig();
  j["rms_norm_eps"] = json::array();
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("'rms_norm_eps' is an array, expected a number"));
  j = TinyConfig();
  j["eos_token_id"] = {2, "3"};
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("'eos_token_id' is a string, expected an integer"));
  j = TinyConfig();
  j["model_type"] = 7;
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("'model_type' is an integer, expected a string"));
  j = TinyConfig();
  j["vocab_size"] = 1000000000000;
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'vocab_size' value 1000000000000 is out of range"));
  j = TinyConfig();
  j["rope_theta"] = 1e300;
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("'rope_theta' value"));
}

TEST(HfConfigTest, MissingKey) {
  json j = TinyConfig();
  j.erase("vocab_size");
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("config.json: missing 'vocab_size'"));
}

TEST(HfConfigTest, BadJson) {
  EXPECT_THAT(Msg(ParseHfConfig("{\"hidden_size\": ", "config.json").status()),
              HasSubstr("config.json: config is not valid JSON"));
  EXPECT_THAT(Msg(ParseHfConfig("[]", "config.json").status()),
              HasSubstr("config.json: config is an array, expected a JSON object"));
}

TEST(HfConfigTest, ValidateConfigErrorIsPrefixed) {
  json j = TinyConfig();
  j["num_key_value_heads"] = 3;
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("config.json: bad model config: n_kv_heads 3 must divide n_heads 2"));
  j = TinyConfig();
  j["num_attention_heads"] = 0;  // must not divide by zero for head_dim
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("config.json: bad model config: n_heads 0"));
}

TEST(HfConfigTest, Llama3RopeScalingParsed) {
  json j = TinyConfig();
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLlama3);
  EXPECT_FLOAT_EQ(c->rope_factor, 8.f);
  EXPECT_FLOAT_EQ(c->rope_low_freq_factor, 1.f);
  EXPECT_FLOAT_EQ(c->rope_high_freq_factor, 4.f);
  EXPECT_EQ(c->rope_original_max_pos, 8192);

  j["rope_scaling"].erase("original_max_position_embeddings");
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("missing 'rope_scaling.original_max_position_embeddings'"));
}

TEST(HfConfigTest, UnsupportedRopeScaling) {
  json j = TinyConfig();
  j["rope_scaling"] = {{"type", "mrope"}, {"factor", 2.0}};
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("config.json: unsupported rope_scaling type 'mrope' (supported: default, "
                        "linear, dynamic, yarn, longrope, llama3)"));
  j["rope_scaling"] = {{"rope_type", "default"}};
  ASSERT_TRUE(Parse(j).ok());
  EXPECT_EQ(Parse(j)->rope_scaling, RopeScaling::kNone);
  j["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("missing 'rope_scaling.factor'"));
  j = TinyConfig();
  j["partial_rotary_factor"] = 0.75;
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'partial_rotary_factor' 0.75 is not supported (RoPE must rotate the "
                        "whole head)"));
}

TEST(HfConfigTest, LinearAndDynamicRopeScaling) {
  json j = TinyConfig();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(c->rope_factor, 2.f);
  EXPECT_EQ(c->max_context, 64);  // linear does not extend the context by itself
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kDynamic);
  EXPECT_EQ(c->max_context, 64);
}

// Qwen's long-context yarn as its model cards write it (transformers 4.x)
// and as transformers 5 saves it; the attention factor from factor or mscale.
TEST(HfConfigTest, YarnRopeScaling) {
  json j = TinyConfig("qwen2");
  j["max_position_embeddings"] = 32768;
  j["rope_scaling"] = {
      {"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kYarn);
  EXPECT_EQ(c->rope_factor, 4.f);
  EXPECT_EQ(c->rope_original_max_pos, 32768);
  EXPECT_FLOAT_EQ(c->rope_attn_factor, float(0.1 * std::log(4.0) + 1));
  EXPECT_EQ(c->rope_beta_fast, 32.f);
  EXPECT_EQ(c->rope_beta_slow, 1.f);
  EXPECT_EQ(c->rope_yarn_truncate, 1);
  EXPECT_EQ(c->max_context, 131072);  // factor * original

  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e6},
                          {"factor", 2.0},       {"attention_factor", 1.5},
                          {"beta_fast", 16.0},   {"beta_slow", 2.0},
                          {"truncate", false},   {"original_max_position_embeddings", 16384}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->rope_attn_factor, 1.5f);
  EXPECT_EQ(c->rope_beta_fast, 16.f);
  EXPECT_EQ(c->rope_beta_slow, 2.f);
  EXPECT_EQ(c->rope_yarn_truncate, 0);
  EXPECT_EQ(c->max_context, 32768);
  j["rope_parameters"].erase("attention_factor");
  j["rope_parameters"]["mscale"] = 1.0;
  j["rope_parameters"]["mscale_all_dim"] = 0.5;
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FLOAT_EQ(c->rope_attn_factor,
                  float((0.1 * std::log(2.0) + 1) / (0.05 * std::log(2.0) + 1)));
}

// Phi-3 128k: longrope with top-level original_max_position_embeddings; the
// long factors serve a context longer than the original, the short ones not.
TEST(HfConfigTest, LongRopeScaling) {
  json j = TinyConfig("phi3");
  j["architectures"] = {"Phi3ForCausalLM"};
  j["max_position_embeddings"] = 131072;
  j["original_max_position_embeddings"] = 4096;
  j["rope_scaling"] = {
      {"type", "longrope"}, {"long_factor", {1.5, 2.5}}, {"short_factor", {1.0, 1.25}}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLongRope);
  EXPECT_EQ(c->rope_original_max_pos, 4096);
  ASSERT_EQ(c->n_rope_factors, 2);
  EXPECT_EQ(c->rope_factors[0], 1.5f);
  EXPECT_EQ(c->rope_factors[1], 2.5f);
  EXPECT_FLOAT_EQ(c->rope_attn_factor, float(std::sqrt(1 + std::log(32.0) / std::log(4096.0))));
  j["max_position_embeddings"] = 4096;  // no extension: short factors, factor 1
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_factors[1], 1.25f);
  EXPECT_EQ(c->rope_attn_factor, 1.f);
  j["rope_scaling"]["short_factor"] = {1.0, 1.0, 1.0};
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'rope_scaling.short_factor' has 3 values, expected head_dim / 2 = 2"));
}

// transformers 5 writes one "rope_parameters" object instead of top-level
// rope_theta / rope_scaling.
TEST(HfConfigTest, Transformers5RopeParameters) {
  json j = TinyConfig();
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 500000.0}, {"rope_type", "default"}};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 500000.f);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kNone);
  j["rope_parameters"] = {{"factor", 8.0},          {"high_freq_factor", 4.0},
                          {"low_freq_factor", 1.0}, {"original_max_position_embeddings", 16},
                          {"rope_theta", 500000.0}, {"rope_type", "llama3"}};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLlama3);
  EXPECT_EQ(c->rope_factor, 8.f);
  EXPECT_EQ(c->rope_original_max_pos, 16);
  j["rope_parameters"] = {{"rope_theta", 1e4}, {"rope_type", "ntk-by-parts"}};
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("unsupported rope_parameters type 'ntk-by-parts'"));
}

TEST(HfConfigTest, EosList) {
  json j = TinyConfig();
  j["eos_token_id"] = {2, 3, 5};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_EQ(c->n_eos, 3);
  EXPECT_EQ(c->eos_ids[0], 2);
  EXPECT_EQ(c->eos_ids[2], 5);
  j["eos_token_id"] = {1, 2, 3, 4, 5};
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("'eos_token_id' lists 5 ids; at most 4"));
  j["eos_token_id"] = 99;  // outside the vocabulary: ValidateConfig
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("eos id 99 outside the vocabulary"));
}

TEST(HfConfigTest, Qwen2BiasAndSlidingWindow) {
  json j = TinyConfig("qwen2");
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["sliding_window"] = 4096;
  j["use_sliding_window"] = false;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kQwen2);
  EXPECT_EQ(c->qkv_bias, 1);
  EXPECT_EQ(c->sliding_window, 0);
  j["use_sliding_window"] = true;
  EXPECT_EQ(Parse(j)->sliding_window, 4096);
}

TEST(HfConfigTest, MistralWindowOnEveryLayer) {
  json j = TinyConfig("mistral");
  j["sliding_window"] = 16;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->sliding_window, 16);
  EXPECT_TRUE(c->IsSlidingLayer(0));
  EXPECT_TRUE(c->IsSlidingLayer(1));
  j = TinyConfig();  // llama has no window, whatever the file says
  j["sliding_window"] = 16;
  EXPECT_EQ(Parse(j)->sliding_window, 0);
  EXPECT_FALSE(Parse(j)->IsSlidingLayer(0));
}

TEST(HfConfigTest, Qwen3QkNormAndHeadDim) {
  json j = TinyConfig("qwen3");
  j["architectures"] = {"Qwen3ForCausalLM"};
  j["head_dim"] = 16;  // q_dim 32 != hidden 8
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kQwen3);
  EXPECT_EQ(c->head_dim, 16);
  EXPECT_EQ(c->q_dim(), 32);
  EXPECT_EQ(c->qk_norm, 1);
  EXPECT_EQ(c->qkv_bias, 0);
  EXPECT_EQ(c->sandwich_norm, 0);
  EXPECT_EQ(c->mlp_act, MlpActivation::kSilu);
  EXPECT_EQ(c->AttnScale(), 0.25f);
}

json GemmaConfig(const std::string& model_type) {
  json j = TinyConfig(model_type);
  j["architectures"] = {model_type == "gemma2" ? "Gemma2ForCausalLM" : "Gemma3ForCausalLM"};
  j["num_hidden_layers"] = 6;
  j["head_dim"] = 4;
  j.erase("tie_word_embeddings");
  j["hidden_activation"] = "gelu_pytorch_tanh";
  j["query_pre_attn_scalar"] = 16;
  j["sliding_window"] = 8;
  return j;
}

// Gemma 2 as its Hub configs are (transformers 4.x): the class defaults
// (tied embeddings, soft-caps 50 / 30), even layers sliding.
TEST(HfConfigTest, Gemma2) {
  json j = GemmaConfig("gemma2");
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kGemma2);
  EXPECT_EQ(c->tied_embeddings, 1);
  EXPECT_EQ(c->sandwich_norm, 1);
  EXPECT_EQ(c->qk_norm, 0);
  EXPECT_EQ(c->mlp_act, MlpActivation::kGeluTanh);
  EXPECT_FLOAT_EQ(c->embed_scale, std::sqrt(8.f));
  EXPECT_EQ(c->attn_scale, 0.25f);
  EXPECT_EQ(c->attn_softcap, 50.f);
  EXPECT_EQ(c->final_softcap, 30.f);
  EXPECT_EQ(c->sliding_window, 8);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c->IsSlidingLayer(l), l % 2 == 0) << l;
  EXPECT_EQ(c->rope_local_theta, 0.f);

  j["attn_logit_softcapping"] = nullptr;  // none, not the default
  j["final_logit_softcapping"] = 20.0;
  j["layer_types"] = {"full_attention",    "sliding_attention", "full_attention",
                      "sliding_attention", "full_attention",    "full_attention"};
  c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->attn_softcap, 0.f);
  EXPECT_EQ(c->final_softcap, 20.f);
  EXPECT_FALSE(c->IsSlidingLayer(0));
  EXPECT_TRUE(c->IsSlidingLayer(3));
  EXPECT_FALSE(c->IsSlidingLayer(5));
  j["layer_types"][2] = "chunked_attention";
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("'layer_types[2]' is 'chunked_attention' (supported: full_attention, "
                        "sliding_attention)"));
  j.erase("layer_types");
  j["hidden_activation"] = "relu";
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("unsupported 'hidden_activation' 'relu' (supported: silu, "
                        "gelu_pytorch_tanh)"));
}

// Gemma 3 text, Hub form (transformers 4.x): global RoPE with linear scaling,
// local layers at rope_local_base_freq, every sliding_window_pattern-th layer
// global, q/k norms, no soft-caps by default.
TEST(HfConfigTest, Gemma3TextHubForm) {
  json j = GemmaConfig("gemma3_text");
  j["rope_theta"] = 1000000.0;
  j["rope_local_base_freq"] = 10000.0;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  j["sliding_window_pattern"] = 3;
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->arch, Arch::kGemma3);
  EXPECT_EQ(c->qk_norm, 1);
  EXPECT_EQ(c->sandwich_norm, 1);
  EXPECT_EQ(c->attn_softcap, 0.f);
  EXPECT_EQ(c->final_softcap, 0.f);
  EXPECT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->rope_local_theta, 1e4f);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(c->rope_factor, 8.f);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c->IsSlidingLayer(l), (l + 1) % 3 != 0) << l;
  j.erase("sliding_window_pattern");  // default 6
  c = Parse(j);
  for (int l = 0; l < 6; ++l) EXPECT_EQ(c->IsSlidingLayer(l), l != 5) << l;

  j["model_type"] = "gemma3";
  j["architectures"] = {"Gemma3ForConditionalGeneration"};
  EXPECT_THAT(Msg(Parse(j).status()), HasSubstr("unsupported architecture 'gemma3' (the "
                                                "multimodal Gemma3ForConditionalGeneration"));
}

// Gemma 3 text as transformers 5 saves it: one rope object per layer type.
TEST(HfConfigTest, Gemma3TextTransformers5) {
  json j = GemmaConfig("gemma3_text");
  j.erase("rope_theta");
  j["rope_parameters"] = {
      {"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
      {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  j["layer_types"] = {"sliding_attention", "sliding_attention", "full_attention",
                      "sliding_attention", "sliding_attention", "full_attention"};
  auto c = Parse(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->rope_scaling, RopeScaling::kLinear);
  EXPECT_EQ(c->rope_local_theta, 1e4f);
  EXPECT_TRUE(c->IsSlidingLayer(0));
  EXPECT_FALSE(c->IsSlidingLayer(2));
  j["rope_parameters"]["sliding_attention"]["rope_type"] = "yarn";
  EXPECT_THAT(Msg(Parse(j).status()),
              HasSubstr("unsupported rope_parameters.sliding_attention type 'yarn' (supported: "
                        "default)"));
}

// ---------------------------------------------------------------------------
// Checkpoint directories

TEST_F(HfCheckpointTest, OpensSingleFile) {
  WriteModel(TinyConfig(), TinyTensors(false, true, "F16"));
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->format, "safetensors");
  EXPECT_EQ((*src)->path, dir_.path());
  EXPECT_EQ((*src)->config.n_layers, 2);
  EXPECT_EQ((*src)->files.size(), 1u);
  EXPECT_EQ((*src)->tensors.size(), 3u + 2 * 9);
  EXPECT_TRUE((*src)->vocab.pieces.empty());
  EXPECT_NE((*src)->fingerprint, 0u);

  const SourceTensor* embd = (*src)->Find("tok_embd");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, SourceType::kF16);
  EXPECT_EQ(embd->rows, 32);
  EXPECT_EQ(embd->cols, 8);
  EXPECT_EQ(embd->bytes, 32u * 8 * 2);
  EXPECT_EQ(embd->rope_permute_head_dim, 0);
  // The writer laid tok_embd first: its data starts the pattern.
  EXPECT_EQ(embd->data[0], 0);
  EXPECT_EQ(embd->data[5], 5);
  const SourceTensor* norm = (*src)->Find("attn_norm", 1);
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->rows, 1);
  EXPECT_EQ(norm->cols, 8);
  const SourceTensor* wk = (*src)->Find("wk", 1);
  ASSERT_NE(wk, nullptr);
  EXPECT_EQ(wk->rows, 4);
  EXPECT_EQ(wk->cols, 8);
  ASSERT_NE((*src)->Find("output"), nullptr);
  ASSERT_NE((*src)->Find("w_down", 0), nullptr);
  EXPECT_EQ((*src)->Find("w_down", 0)->rows, 8);
}

TEST_F(HfCheckpointTest, Bf16Tensors) {
  WriteModel(TinyConfig(), TinyTensors(false, true, "BF16"));
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("wq", 0)->type, SourceType::kBF16);
}

TEST_F(HfCheckpointTest, MissingConfig) {
  WriteSafetensors(dir_.File("model.safetensors"), TinyTensors());
  const absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(s), HasSubstr("config.json"));
}

TEST_F(HfCheckpointTest, NoTensorFiles) {
  WriteConfig(TinyConfig());
  const absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(s), HasSubstr("no model.safetensors or model.safetensors.index.json"));
}

TEST_F(HfCheckpointTest, CorruptTensorFileNamesIt) {
  WriteConfig(TinyConfig());
  paged::testing::WriteFile(dir_.File("model.safetensors"), "garbage!garbage");
  EXPECT_THAT(Msg(OpenError()), HasSubstr("model.safetensors: header length"));
}

TEST_F(HfCheckpointTest, MissingTensor) {
  auto e = TinyTensors();
  Remove(e, "model.layers.1.mlp.up_proj.weight");
  WriteModel(TinyConfig(), e);
  EXPECT_THAT(Msg(OpenError()), HasSubstr(dir_.path() + ": missing tensor layer 1 w_up"));
}

TEST_F(HfCheckpointTest, ShapeMismatchWithConfig) {
  auto e = TinyTensors();
  Replace(e, "model.layers.0.self_attn.q_proj.weight",
          {"model.layers.0.self_attn.q_proj.weight", "F32", {8, 9}});
  WriteModel(TinyConfig(), e);
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("tensor layer 0 wq has shape [8, 9] but the config implies [8, 8]"));
}

TEST_F(HfCheckpointTest, UnsupportedDtype) {
  auto e = TinyTensors();
  Replace(e, "model.norm.weight", {"model.norm.weight", "I64", {8}});
  WriteModel(TinyConfig(), e);
  const absl::Status s = OpenError();
  EXPECT_THAT(Msg(s),
              HasSubstr("model.safetensors: unsupported dtype I64 for tensor 'model.norm.weight'"));
}

TEST_F(HfCheckpointTest, ThreeDimensionalTensor) {
  auto e = TinyTensors();
  Replace(e, "model.norm.weight", {"model.norm.weight", "F32", {2, 2, 2}});
  WriteModel(TinyConfig(), e);
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("tensor 'model.norm.weight' has 3 dimensions, expected 1 or 2"));
}

TEST_F(HfCheckpointTest, UnknownTensorName) {
  auto e = TinyTensors();
  e.push_back({"model.layers.0.self_attn.o_proj.bias", "F32", {8}});
  WriteModel(TinyConfig(), e);
  EXPECT_THAT(
      Msg(OpenError()),
      HasSubstr("model.safetensors: unknown tensor 'model.layers.0.self_attn.o_proj.bias'"));
}

TEST_F(HfCheckpointTest, LayerIndexOutOfRange) {
  auto e = TinyTensors();
  e.push_back({"model.layers.2.input_layernorm.weight", "F32", {8}});
  WriteModel(TinyConfig(), e);
  EXPECT_THAT(Msg(OpenError()), HasSubstr("model.safetensors: tensor "
                                          "'model.layers.2.input_layernorm.weight': layer 2 "
                                          "outside [0, 2)"));
}

TEST_F(HfCheckpointTest, SkipsRotaryInvFreq) {
  auto e = TinyTensors();
  e.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", {2}});
  WriteModel(TinyConfig(), e);
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->tensors.size(), 3u + 2 * 9);
}

TEST_F(HfCheckpointTest, TiedEmbeddings) {
  json config = TinyConfig();
  config["tie_word_embeddings"] = true;
  // lm_head present anyway: dropped.
  WriteModel(config, TinyTensors());
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.tied_embeddings, 1);
  EXPECT_EQ((*src)->Find("output"), nullptr);
  EXPECT_NE((*src)->Find("tok_embd"), nullptr);
  // And without lm_head.
  WriteModel(config, TinyTensors(false, /*lm_head=*/false));
  src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->Find("output"), nullptr);
}

TEST_F(HfCheckpointTest, UntiedNeedsLmHead) {
  WriteModel(TinyConfig(), TinyTensors(false, /*lm_head=*/false));
  EXPECT_THAT(Msg(OpenError()), HasSubstr("missing tensor output"));
}

TEST_F(HfCheckpointTest, Qwen2Biases) {
  json config = TinyConfig("qwen2");
  WriteModel(config, TinyTensors(/*qkv_bias=*/true));
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->config.arch, Arch::kQwen2);
  const SourceTensor* bq = (*src)->Find("bq", 1);
  ASSERT_NE(bq, nullptr);
  EXPECT_EQ(bq->rows, 1);
  EXPECT_EQ(bq->cols, 8);
  ASSERT_NE((*src)->Find("bk", 0), nullptr);
  EXPECT_EQ((*src)->Find("bv", 0)->cols, 4);
}

TEST_F(HfCheckpointTest, Qwen2WithoutBiases) {
  WriteModel(TinyConfig("qwen2"), TinyTensors(/*qkv_bias=*/false));
  EXPECT_THAT(Msg(OpenError()), HasSubstr("missing tensor layer 0 bq"));
}

TEST_F(HfCheckpointTest, LlamaWithBiases) {
  WriteModel(TinyConfig(), TinyTensors(/*qkv_bias=*/true));
  EXPECT_THAT(Msg(OpenError()), HasSubstr("unexpected tensor layer 0 bk (not used by llama"));
}

// Qwen3's per-head norms: q_norm / k_norm [head_dim], required.
TEST_F(HfCheckpointTest, Qwen3QkNorms) {
  json config = TinyConfig("qwen3");
  std::vector<SafetensorsEntry> e = TinyTensors();
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".self_attn.";
    e.push_back({p + "q_norm.weight", "F32", {4}});
    e.push_back({p + "k_norm.weight", "F32", {4}});
  }
  WriteModel(config, e);
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  ASSERT_NE((*src)->Find("q_norm", 1), nullptr);
  EXPECT_EQ((*src)->Find("k_norm", 0)->cols, 4);
  Remove(e, "model.layers.1.self_attn.k_norm.weight");
  WriteModel(config, e);
  EXPECT_THAT(Msg(OpenError()), HasSubstr("missing tensor layer 1 k_norm"));
}

// Gemma's names (its post_attention_layernorm is the sandwich norm) and its
// (1 + w) norms, added at load in f32 from any stored type.
TEST_F(HfCheckpointTest, GemmaNormsGetOneAdded) {
  json config = GemmaConfig("gemma2");
  config["num_hidden_layers"] = 2;
  std::vector<SafetensorsEntry> e = TinyTensors(false, /*lm_head=*/false, "BF16");
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    e.push_back({p + "pre_feedforward_layernorm.weight", "BF16", {8}});
    e.push_back({p + "post_feedforward_layernorm.weight", "BF16", {8}});
  }
  WriteModel(config, e);
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelSource& m = **src;
  for (const char* name : {"attn_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm"}) {
    const SourceTensor* t = m.Find(name, 1);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->type, SourceType::kF32) << name;
    EXPECT_EQ(t->bytes, 8u * 4);
  }
  const SourceTensor* out_norm = m.Find("output_norm");
  ASSERT_EQ(out_norm->type, SourceType::kF32);
  // model.norm.weight is the second tensor written: bf16 bytes 128..143 of
  // the pattern (32 * 8 * 2 bytes of embeddings come first).
  for (int i = 0; i < 8; ++i) {
    const uint16_t bits = uint16_t(((512 + 2 * i) % 251) | (((512 + 2 * i + 1) % 251) << 8));
    float got;
    std::memcpy(&got, out_norm->data + 4 * i, 4);
    EXPECT_EQ(got, 1.f + Bf16ToFloat(bits)) << i;
  }
  EXPECT_EQ(m.Find("wq", 0)->type, SourceType::kBF16);  // matrices as stored
}

// Phi-3's fused qkv_proj and gate_up_proj become wq / wk / wv and
// w_gate / w_up: row ranges of the stored matrices, in place.
TEST_F(HfCheckpointTest, Phi3FusedProjectionsSplit) {
  json config = TinyConfig("phi3");
  std::vector<SafetensorsEntry> e = {{"model.embed_tokens.weight", "F16", {32, 8}},
                                     {"model.norm.weight", "F16", {8}},
                                     {"lm_head.weight", "F16", {32, 8}}};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    e.push_back({p + "input_layernorm.weight", "F16", {8}});
    e.push_back({p + "self_attn.qkv_proj.weight", "F16", {16, 8}});
    e.push_back({p + "self_attn.o_proj.weight", "F16", {8, 8}});
    e.push_back({p + "post_attention_layernorm.weight", "F16", {8}});
    e.push_back({p + "mlp.gate_up_proj.weight", "F16", {32, 8}});
    e.push_back({p + "mlp.down_proj.weight", "F16", {8, 16}});
  }
  WriteModel(config, e);
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  const ModelSource& m = **src;
  const SourceTensor *wq = m.Find("wq", 1), *wk = m.Find("wk", 1), *wv = m.Find("wv", 1);
  ASSERT_TRUE(wq && wk && wv);
  EXPECT_EQ(wq->rows, 8);
  EXPECT_EQ(wk->rows, 4);
  EXPECT_EQ(wv->rows, 4);
  EXPECT_EQ(wk->data, wq->data + 8 * 8 * 2);
  EXPECT_EQ(wv->data, wk->data + 4 * 8 * 2);
  EXPECT_EQ(wv->bytes, 4u * 8 * 2);
  const SourceTensor *gate = m.Find("w_gate", 0), *up = m.Find("w_up", 0);
  ASSERT_TRUE(gate && up);
  EXPECT_EQ(gate->rows, 16);
  EXPECT_EQ(up->data, gate->data + 16 * 8 * 2);
  EXPECT_EQ(m.Find("ffn_norm", 0)->cols, 8);

  Replace(e, "model.layers.0.self_attn.qkv_proj.weight",
          {"model.layers.0.self_attn.qkv_proj.weight", "F16", {12, 8}});
  WriteModel(config, e);
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("tensor 'model.layers.0.self_attn.qkv_proj.weight' has 12 rows; the "
                        "config implies 8 + 4 + 4 = 16"));
}

TEST_F(HfCheckpointTest, ShardedCheckpointWithIndex) {
  const auto e = TinyTensors();
  WriteSharded(TinyConfig(), e, 10);
  auto src = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ((*src)->files.size(), 2u);
  EXPECT_EQ((*src)->tensors.size(), e.size());
  EXPECT_NE((*src)->Find("w_down", 1), nullptr);
  EXPECT_NE((*src)->Find("tok_embd"), nullptr);
}

TEST_F(HfCheckpointTest, ShardedMissingShard) {
  WriteSharded(TinyConfig(), TinyTensors(), 10, /*write_second=*/false);
  const absl::Status s = OpenError();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Msg(s), HasSubstr("model.safetensors.index.json: shard "
                                "model-00002-of-00002.safetensors does not exist"));
}

TEST_F(HfCheckpointTest, ShardedTensorNotInItsShard) {
  auto e = TinyTensors();
  WriteSharded(TinyConfig(), e, 10);
  // The index claims model.norm.weight (in shard 1) lives in shard 2.
  json index = json::parse(paged::testing::ReadFile(dir_.File("model.safetensors.index.json")));
  index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  paged::testing::WriteFile(dir_.File("model.safetensors.index.json"), index.dump());
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("index.json: tensor 'model.norm.weight' is not in its shard "
                        "model-00002-of-00002.safetensors"));
}

TEST_F(HfCheckpointTest, ShardedTensorInTwoShards) {
  auto e = TinyTensors();
  WriteSharded(TinyConfig(), e, 10);
  // Shard 2 also holds tok_embd.
  std::vector<SafetensorsEntry> second(e.begin() + 10, e.end());
  second.push_back(e[0]);
  WriteSafetensors(dir_.File("model-00002-of-00002.safetensors"), second);
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("model-00002-of-00002.safetensors: tensor 'model.embed_tokens.weight' is "
                        "also in model-00001-of-00002.safetensors"));
}

TEST_F(HfCheckpointTest, BadIndex) {
  WriteConfig(TinyConfig());
  paged::testing::WriteFile(dir_.File("model.safetensors.index.json"), "{\"weight_map\": [1]}");
  EXPECT_THAT(Msg(OpenError()),
              HasSubstr("model.safetensors.index.json: 'weight_map' is an array"));
  paged::testing::WriteFile(dir_.File("model.safetensors.index.json"),
                            R"({"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}})");
  EXPECT_THAT(Msg(OpenError()), HasSubstr("shard name '../elsewhere.safetensors' for tensor "
                                          "'model.norm.weight' is not a file name"));
  paged::testing::WriteFile(dir_.File("model.safetensors.index.json"), "{");
  EXPECT_THAT(Msg(OpenError()), HasSubstr("model.safetensors.index.json: index is not valid JSON"));
}

TEST_F(HfCheckpointTest, FingerprintFollowsFiles) {
  WriteModel(TinyConfig(), TinyTensors());
  auto a = OpenHfCheckpoint(dir_.path());
  auto b = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->fingerprint, (*b)->fingerprint);
  // Different tensor bytes (a different size) change it.
  WriteModel(TinyConfig(), TinyTensors(false, true, "F16"));
  auto c = OpenHfCheckpoint(dir_.path());
  ASSERT_TRUE(c.ok());
  EXPECT_NE((*a)->fingerprint, (*c)->fingerprint);
}

}  // namespace
}  // namespace paged
