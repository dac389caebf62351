// The model configuration as the store records it. Plain data with
// fixed-width fields: it is embedded in the shared segment header. Every
// per-architecture difference of the forward pass is a field here (data, not
// code), and every per-layer property (sliding window, RoPE base) derives
// from it (IsSlidingLayer); docs/models.md lists the architectures.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paged {

enum class Arch : uint32_t {
  kLlama = 1,
  kMistral = 2,
  kQwen2 = 3,
  kQwen3 = 4,
  kGemma2 = 5,
  kGemma3 = 6,  // the text model (HF gemma3_text, GGUF gemma3)
  kPhi3 = 7,
  // Mixture of experts (ModelConfig::n_experts > 0).
  kMixtral = 8,    // mistral's attention, top-k of n experts, renormalized
  kQwen2Moe = 9,   // qwen2's attention, top-k (norm_topk_prob), a gated shared expert
  kQwen3Moe = 10,  // qwen3's attention, top-k (norm_topk_prob), sparse / dense layers
  // Attention sinks, biases everywhere, alternating windows, yarn, a clamped
  // SwiGLU in its experts.
  kGptOss = 11,
};
std::string_view ArchName(Arch a);
// "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral",
// "qwen2_moe", "qwen3_moe", "gpt_oss"; the error names the architecture and
// the supported list.
absl::StatusOr<Arch> ParseArch(std::string_view name);
inline constexpr std::string_view kSupportedArchs =
    "llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3, mixtral, qwen2_moe, qwen3_moe, gpt_oss";

// RoPE frequency scaling (transformers' rope_type).
enum class RopeScaling : uint32_t {
  kNone = 0,
  kLlama3 = 1,    // factor, low/high_freq_factor, original_max_pos
  kLinear = 2,    // frequencies / factor
  kDynamic = 3,   // NTK: HF rescales only past max_position_embeddings, the
                  // end of our context, so inside it the rotation is plain
  kYarn = 4,      // factor, original_max_pos, beta_fast/slow, rope_attn_factor
  kLongRope = 5,  // per-pair divisors rope_factors[], rope_attn_factor
};
std::string_view RopeScalingName(RopeScaling s);

// Which element pairs RoPE rotates. The store normalises every model to
// kHalves: pairs (x[i], x[i + head_dim/2]) of each head, as HF checkpoints do.
// GGUF llama files rotate adjacent pairs (x[2i], x[2i+1]); their q/k rows are
// permuted at load so that the same computation applies.
enum class RopeStyle : uint32_t { kHalves = 1 };

// The activation of the gated MLP: down(act(gate(x)) * up(x)).
enum class MlpActivation : uint8_t {
  kSilu = 0,      // SwiGLU (llama, qwen, mistral, phi3)
  kGeluTanh = 1,  // GeGLU with the tanh approximation (gemma: gelu_pytorch_tanh)
};

constexpr int kMaxEosIds = 4;
constexpr int kMaxLayers = 1024;
// longrope divisors: one per rotated pair, head_dim <= 2 * kMaxRopeFactors.
constexpr int kMaxRopeFactors = 256;
// Experts of one layer (DeepSeek-V3 has 256, Qwen3-235B 128).
constexpr int kMaxExperts = 512;

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int32_t n_layers = 0;
  int32_t hidden = 0;  // model dimension
  int32_t ffn = 0;     // MLP intermediate size
  int32_t n_heads = 0;
  int32_t n_kv_heads = 0;  // == n_heads without GQA
  int32_t head_dim = 0;    // usually hidden / n_heads
  int32_t vocab = 0;
  int32_t max_context = 0;  // positions the model was built for
  float norm_eps = 1e-5f;
  float rope_theta = 10000.f;
  RopeStyle rope_style = RopeStyle::kHalves;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_factor = 1.f;            // llama3, linear, dynamic, yarn: factor
  float rope_low_freq_factor = 1.f;   // llama3
  float rope_high_freq_factor = 4.f;  // llama3
  int32_t rope_original_max_pos = 0;  // llama3, yarn, longrope: original context
  int32_t sliding_window = 0;         // > 0: the layers of IsSlidingLayer see this many keys
  uint8_t tied_embeddings = 0;        // lm_head shares tok_embd
  uint8_t qkv_bias = 0;               // q/k/v projections carry a bias (qwen2)
  uint8_t pad_[2] = {};
  int32_t bos_id = -1;
  int32_t n_eos = 0;
  int32_t eos_ids[kMaxEosIds] = {-1, -1, -1, -1};

  // ---- the forward pass beyond llama (qwen3, gemma2/3, phi3) ----
  uint8_t qk_norm = 0;  // RMSNorm of each q and k head (q_norm, k_norm [head_dim]) before RoPE
  uint8_t sandwich_norm = 0;  // post_attn_norm / post_ffn_norm on each block's output
  MlpActivation mlp_act = MlpActivation::kSilu;
  uint8_t pad2_ = 0;
  float embed_scale = 1.f;    // embeddings are multiplied by this (gemma: sqrt(hidden))
  float attn_scale = 0.f;     // multiplies q . k; 0: 1 / sqrt(head_dim)
  float attn_softcap = 0.f;   // > 0: scores = cap * tanh(scores / cap) (gemma2)
  float final_softcap = 0.f;  // > 0: logits = cap * tanh(logits / cap) (gemma2)
  // > 0: sliding layers rotate with this base and no scaling (gemma3's
  // rope_local_base_freq); 0: every layer rotates alike.
  float rope_local_theta = 0.f;
  float rope_attn_factor = 1.f;    // yarn, longrope: multiplies cos and sin
  float rope_beta_fast = 32.f;     // yarn
  float rope_beta_slow = 1.f;      // yarn
  uint8_t rope_yarn_truncate = 1;  // yarn: correction range rounded to whole pairs
  uint8_t pad3_[3] = {};
  // longrope: the divisor of each pair's frequency [head_dim / 2], the long
  // or the short set, chosen at load (long when max_context exceeds
  // rope_original_max_pos, as llama.cpp does for its context).
  int32_t n_rope_factors = 0;
  float rope_factors[kMaxRopeFactors] = {};
  // Bit l set: layer l is a sliding-window layer (when sliding_window > 0).
  uint64_t sliding_layers[kMaxLayers / 64] = {};

  // ---- mixture of experts (mixtral, qwen2_moe, qwen3_moe) ----
  // A sparse layer's MLP is a router (logits = h @ router^T, [n_experts]),
  // softmax over all experts, the top n_experts_used kept (renormalized to
  // sum 1 when norm_topk_prob) and the weighted sum of those experts' SwiGLU
  // MLPs (each expert_ffn wide); plus, with shared_expert_ffn > 0, a shared
  // SwiGLU MLP times sigmoid(h . shexp_gate_inp) (qwen2_moe). Dense layers
  // (moe_layers bit clear) keep the plain MLP of `ffn`.
  int32_t n_experts = 0;          // 0: a dense model
  int32_t n_experts_used = 0;     // top-k
  int32_t expert_ffn = 0;         // each expert's intermediate size
  int32_t shared_expert_ffn = 0;  // the shared expert's intermediate size; 0: none
  uint8_t norm_topk_prob = 0;     // the top-k weights renormalized to sum 1
  // ---- gpt_oss: biases, attention sinks, the clamped SwiGLU ----
  // The o-projection carries a bias ("bo" [hidden]); q/k/v's are qkv_bias.
  uint8_t o_bias = 0;
  // A learned logit per query head ("attn_sinks" [n_heads]) joins each
  // softmax's denominator as one more column: it takes probability mass and
  // contributes no value.
  uint8_t attn_sinks = 0;
  uint8_t router_bias = 0;  // the router's logits get "router_b" [n_experts]
  // Each expert's products carry biases: "exp_gate_b", "exp_up_b"
  // [n_experts, expert_ffn], "exp_down_b" [n_experts, hidden] (in the
  // layer's dense part, row e the expert's).
  uint8_t expert_bias = 0;
  uint8_t pad4_[3] = {};
  // Bit l set: layer l is sparse (a mixture of experts).
  uint64_t moe_layers[kMaxLayers / 64] = {};
  // > 0: the experts' SwiGLU is gpt-oss's: g = min(gate, limit), u =
  // clamp(up, -limit, limit), (u + 1) * g * sigmoid(swiglu_alpha * g).
  float swiglu_limit = 0.f;
  float swiglu_alpha = 1.702f;

  int32_t q_dim() const { return n_heads * head_dim; }
  int32_t kv_dim() const { return n_kv_heads * head_dim; }
  bool IsSlidingLayer(int l) const {
    return sliding_window > 0 && l >= 0 && l < kMaxLayers &&
           (sliding_layers[l / 64] >> (l % 64) & 1) != 0;
  }
  void SetSlidingLayer(int l, bool on) {
    const uint64_t bit = uint64_t(1) << (l % 64);
    sliding_layers[l / 64] = on ? sliding_layers[l / 64] | bit : sliding_layers[l / 64] & ~bit;
  }
  // The multiplier of q . k: attn_scale, or 1 / sqrt(head_dim).
  float AttnScale() const;
  bool IsMoeLayer(int l) const {
    return n_experts > 0 && l >= 0 && l < kMaxLayers && (moe_layers[l / 64] >> (l % 64) & 1) != 0;
  }
  void SetMoeLayer(int l, bool on) {
    const uint64_t bit = uint64_t(1) << (l % 64);
    moe_layers[l / 64] = on ? moe_layers[l / 64] | bit : moe_layers[l / 64] & ~bit;
  }
  // The widest MLP of any layer: ffn, expert_ffn, shared_expert_ffn.
  int32_t MaxFfn() const;
};

// Checks the sizes are positive, consistent (heads divide, GQA groups whole,
// even head_dim) and below sane limits, and the per-architecture fields in
// range; the error names what is wrong.
absl::Status ValidateConfig(const ModelConfig& c);

// One-line human summary ("llama: 5 layers, hidden 64, ...").
std::string DescribeConfig(const ModelConfig& c);

}  // namespace paged
