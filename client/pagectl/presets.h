// Model shape presets for `pagectl make-model`: the configs of real models
// (llama-7b, qwen2-7b, ...) and tiny ones for tests.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace paged {

// Llama 3.1 style rope_scaling ({"rope_type": "llama3", ...} in config.json).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_pos = 8192;  // original_max_position_embeddings
};

// YaRN rope scaling as gpt-oss configures it ({"rope_type": "yarn", ...,
// "truncate": false}).
struct YarnRopeScaling {
  double factor = 32.0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  int original_max_pos = 4096;  // original_max_position_embeddings
};

// Sizes and hyper-parameters as an HF config.json names them. Floating-point
// fields are doubles so that config.json shows 1e-05, not 9.99999974737875e-06.
struct Preset {
  std::string name;        // "llama-7b"
  std::string model_type;  // "llama", "mistral", "qwen2"
  int hidden = 0;          // hidden_size
  int ffn = 0;             // intermediate_size
  int n_layers = 0;        // num_hidden_layers
  int n_heads = 0;         // num_attention_heads (head_dim = hidden / n_heads)
  int n_kv_heads = 0;      // num_key_value_heads
  int vocab = 0;           // vocab_size
  int max_pos = 0;         // max_position_embeddings
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tied = false;                                       // tie_word_embeddings: no lm_head.weight
  bool qkv_bias = false;                                   // q/k/v_proj carry biases (qwen2)
  std::optional<Llama3RopeScaling> llama3 = std::nullopt;  // rope_scaling
  int explicit_head_dim = 0;                               // head_dim when not hidden / n_heads
  // Mixture of experts (model_type mixtral, qwen3_moe): every layer sparse.
  int n_experts = 0;            // num_local_experts / num_experts
  int n_experts_used = 0;       // num_experts_per_tok
  int expert_ffn = 0;           // moe_intermediate_size (mixtral: intermediate_size)
  bool norm_topk_prob = false;  // qwen3_moe's norm_topk_prob (mixtral always renormalizes)
  // gpt_oss (model_type "gpt_oss"): q/k/v/o biases, attention sinks, the
  // router's and the experts' biases, the clamped SwiGLU (limit 7), a window
  // on the even layers, yarn; the experts as MXFP4 blocks and scales, as the
  // released checkpoints hold them.
  int sliding_window = 0;
  std::optional<YarnRopeScaling> yarn = std::nullopt;

  int head_dim() const { return explicit_head_dim > 0 ? explicit_head_dim : hidden / n_heads; }
  bool qk_norm() const { return model_type == "qwen3_moe"; }
  bool gpt_oss() const { return model_type == "gpt_oss"; }
};

// Every preset, tiny ones first.
const std::vector<Preset>& AllPresets();

// The preset called `name`; NOT_FOUND listing the known names otherwise.
absl::StatusOr<Preset> FindPreset(std::string_view name);

// The config the store derives from the checkpoint make-model writes for `p`
// (bos 1, eos 2).
ModelConfig PresetModelConfig(const Preset& p);

}  // namespace paged
