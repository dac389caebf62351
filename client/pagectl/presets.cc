#include "client/pagectl/presets.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace paged {

namespace {

std::vector<Preset> MakePresets() {
  std::vector<Preset> v;
  // clang-format off
  // Tiny models for tests: ~1 MB each in f16, every code path of their
  // architecture (GQA, qkv bias + tied embeddings, llama3 rope scaling).
  v.push_back({.name = "tiny", .model_type = "llama", .hidden = 128, .ffn = 344, .n_layers = 2,
               .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .max_pos = 2048,
               .rope_theta = 10000.0, .rms_eps = 1e-5});
  v.push_back({.name = "tiny-qwen2", .model_type = "qwen2", .hidden = 128, .ffn = 352,
               .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .max_pos = 4096,
               .rope_theta = 1000000.0, .rms_eps = 1e-6, .tied = true, .qkv_bias = true});
  v.push_back({.name = "tiny-llama3", .model_type = "llama", .hidden = 128, .ffn = 448,
               .n_layers = 2, .n_heads = 4, .n_kv_heads = 1, .vocab = 512, .max_pos = 131072,
               .rope_theta = 500000.0, .rms_eps = 1e-5, .llama3 = Llama3RopeScaling{}});
  v.push_back({.name = "tiny-qwen3-moe", .model_type = "qwen3_moe", .hidden = 128, .ffn = 256,
               .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .max_pos = 4096,
               .rope_theta = 1000000.0, .rms_eps = 1e-6, .explicit_head_dim = 48,
               .n_experts = 16, .n_experts_used = 4, .expert_ffn = 64, .norm_topk_prob = true});
  v.push_back({.name = "tiny-gpt-oss", .model_type = "gpt_oss", .hidden = 128, .ffn = 64,
               .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .vocab = 512, .max_pos = 4096,
               .rope_theta = 150000.0, .rms_eps = 1e-5, .explicit_head_dim = 32,
               .n_experts = 8, .n_experts_used = 2, .expert_ffn = 64, .norm_topk_prob = true,
               .sliding_window = 16,
               .yarn = YarnRopeScaling{.factor = 32.0, .original_max_pos = 128}});
  // Real shapes (from the models' config.json).
  v.push_back({.name = "llama-7b", .model_type = "llama", .hidden = 4096, .ffn = 11008,
               .n_layers = 32, .n_heads = 32, .n_kv_heads = 32, .vocab = 32000, .max_pos = 4096,
               .rope_theta = 10000.0, .rms_eps = 1e-5});
  v.push_back({.name = "llama-13b", .model_type = "llama", .hidden = 5120, .ffn = 13824,
               .n_layers = 40, .n_heads = 40, .n_kv_heads = 40, .vocab = 32000, .max_pos = 4096,
               .rope_theta = 10000.0, .rms_eps = 1e-5});
  v.push_back({.name = "llama-70b", .model_type = "llama", .hidden = 8192, .ffn = 28672,
               .n_layers = 80, .n_heads = 64, .n_kv_heads = 8, .vocab = 32000, .max_pos = 4096,
               .rope_theta = 10000.0, .rms_eps = 1e-5});
  v.push_back({.name = "llama3-8b", .model_type = "llama", .hidden = 4096, .ffn = 14336,
               .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .vocab = 128256,
               .max_pos = 131072, .rope_theta = 500000.0, .rms_eps = 1e-5,
               .llama3 = Llama3RopeScaling{}});
  v.push_back({.name = "qwen2-0.5b", .model_type = "qwen2", .hidden = 896, .ffn = 4864,
               .n_layers = 24, .n_heads = 14, .n_kv_heads = 2, .vocab = 151936, .max_pos = 32768,
               .rope_theta = 1000000.0, .rms_eps = 1e-6, .tied = true, .qkv_bias = true});
  v.push_back({.name = "qwen2-7b", .model_type = "qwen2", .hidden = 3584, .ffn = 18944,
               .n_layers = 28, .n_heads = 28, .n_kv_heads = 4, .vocab = 152064, .max_pos = 32768,
               .rope_theta = 1000000.0, .rms_eps = 1e-6, .qkv_bias = true});
  v.push_back({.name = "mistral-7b", .model_type = "mistral", .hidden = 4096, .ffn = 14336,
               .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .vocab = 32000, .max_pos = 32768,
               .rope_theta = 10000.0, .rms_eps = 1e-5});
  // Mixtures of experts (with --layers N for a slice; --router-skew S).
  v.push_back({.name = "mixtral-8x7b", .model_type = "mixtral", .hidden = 4096, .ffn = 14336,
               .n_layers = 32, .n_heads = 32, .n_kv_heads = 8, .vocab = 32000, .max_pos = 32768,
               .rope_theta = 1000000.0, .rms_eps = 1e-5, .n_experts = 8, .n_experts_used = 2,
               .expert_ffn = 14336});
  v.push_back({.name = "qwen3-30b-a3b", .model_type = "qwen3_moe", .hidden = 2048, .ffn = 6144,
               .n_layers = 48, .n_heads = 32, .n_kv_heads = 4, .vocab = 151936, .max_pos = 40960,
               .rope_theta = 1000000.0, .rms_eps = 1e-6, .explicit_head_dim = 128,
               .n_experts = 128, .n_experts_used = 8, .expert_ffn = 768, .norm_topk_prob = true});
  // MXFP4 experts, as released.
  v.push_back({.name = "gpt-oss-20b", .model_type = "gpt_oss", .hidden = 2880, .ffn = 2880,
               .n_layers = 24, .n_heads = 64, .n_kv_heads = 8, .vocab = 201088,
               .max_pos = 131072, .rope_theta = 150000.0, .rms_eps = 1e-5,
               .explicit_head_dim = 64, .n_experts = 32, .n_experts_used = 4,
               .expert_ffn = 2880, .norm_topk_prob = true, .sliding_window = 128,
               .yarn = YarnRopeScaling{}});
  v.push_back({.name = "gpt-oss-120b", .model_type = "gpt_oss", .hidden = 2880, .ffn = 2880,
               .n_layers = 36, .n_heads = 64, .n_kv_heads = 8, .vocab = 201088,
               .max_pos = 131072, .rope_theta = 150000.0, .rms_eps = 1e-5,
               .explicit_head_dim = 64, .n_experts = 128, .n_experts_used = 4,
               .expert_ffn = 2880, .norm_topk_prob = true, .sliding_window = 128,
               .yarn = YarnRopeScaling{}});
  // clang-format on
  return v;
}

}  // namespace

const std::vector<Preset>& AllPresets() {
  static const std::vector<Preset>* const presets = new std::vector<Preset>(MakePresets());
  return *presets;
}

absl::StatusOr<Preset> FindPreset(std::string_view name) {
  // (This abseil's string_view is not std::string_view: names are strings.)
  std::vector<std::string> names;
  for (const Preset& p : AllPresets()) {
    if (p.name == name) return p;
    names.push_back(p.name);
  }
  return absl::NotFoundError(absl::StrCat("unknown preset '", std::string(name),
                                          "' (known: ", absl::StrJoin(names, ", "), ")"));
}

ModelConfig PresetModelConfig(const Preset& p) {
  ModelConfig c;
  // model_type values are the ArchName spellings; the presets above use only those.
  c.arch = p.model_type == "qwen2"       ? Arch::kQwen2
           : p.model_type == "mistral"   ? Arch::kMistral
           : p.model_type == "mixtral"   ? Arch::kMixtral
           : p.model_type == "qwen3_moe" ? Arch::kQwen3Moe
           : p.model_type == "gpt_oss"   ? Arch::kGptOss
                                         : Arch::kLlama;
  c.n_layers = p.n_layers;
  c.hidden = p.hidden;
  c.ffn = p.ffn;
  c.n_heads = p.n_heads;
  c.n_kv_heads = p.n_kv_heads;
  c.head_dim = p.head_dim();
  c.vocab = p.vocab;
  c.max_context = p.max_pos;
  c.norm_eps = static_cast<float>(p.rms_eps);
  c.rope_theta = static_cast<float>(p.rope_theta);
  if (p.llama3) {
    c.rope_scaling = RopeScaling::kLlama3;
    c.rope_factor = static_cast<float>(p.llama3->factor);
    c.rope_low_freq_factor = static_cast<float>(p.llama3->low_freq_factor);
    c.rope_high_freq_factor = static_cast<float>(p.llama3->high_freq_factor);
    c.rope_original_max_pos = p.llama3->original_max_pos;
  }
  c.tied_embeddings = p.tied ? 1 : 0;
  c.qkv_bias = p.qkv_bias ? 1 : 0;
  c.qk_norm = p.qk_norm() ? 1 : 0;
  if (p.n_experts > 0) {
    c.n_experts = p.n_experts;
    c.n_experts_used = p.n_experts_used;
    c.expert_ffn = p.expert_ffn;
    c.norm_topk_prob = p.model_type == "mixtral" || p.norm_topk_prob ? 1 : 0;
    for (int l = 0; l < p.n_layers && l < kMaxLayers; ++l) c.SetMoeLayer(l, true);
  }
  if (p.gpt_oss()) {
    c.qkv_bias = c.o_bias = c.attn_sinks = 1;
    c.router_bias = c.expert_bias = 1;
    c.swiglu_limit = 7.f;
    c.swiglu_alpha = 1.702f;
  }
  if (p.sliding_window > 0) {  // gpt_oss: the even layers
    c.sliding_window = p.sliding_window;
    for (int l = 0; l < p.n_layers && l < kMaxLayers; ++l) c.SetSlidingLayer(l, l % 2 == 0);
  }
  if (p.yarn) {  // as the store reads it: not truncated, 0.1 ln(factor) + 1, factor x original
    c.rope_scaling = RopeScaling::kYarn;
    c.rope_factor = static_cast<float>(p.yarn->factor);
    c.rope_beta_fast = static_cast<float>(p.yarn->beta_fast);
    c.rope_beta_slow = static_cast<float>(p.yarn->beta_slow);
    c.rope_original_max_pos = p.yarn->original_max_pos;
    c.rope_yarn_truncate = 0;
    c.rope_attn_factor = static_cast<float>(0.1 * std::log(p.yarn->factor) + 1.0);
    c.max_context = std::max(c.max_context, int32_t(p.yarn->factor * p.yarn->original_max_pos));
  }
  c.bos_id = 1;
  c.n_eos = 1;
  c.eos_ids[0] = 2;
  return c;
}

}  // namespace paged
