#include "common/model_config.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace paged {

std::string_view ArchName(Arch a) {
  switch (a) {
    case Arch::kLlama:
      return "llama";
    case Arch::kMistral:
      return "mistral";
    case Arch::kQwen2:
      return "qwen2";
    case Arch::kQwen3:
      return "qwen3";
    case Arch::kGemma2:
      return "gemma2";
    case Arch::kGemma3:
      return "gemma3";
    case Arch::kPhi3:
      return "phi3";
    case Arch::kMixtral:
      return "mixtral";
    case Arch::kQwen2Moe:
      return "qwen2_moe";
    case Arch::kQwen3Moe:
      return "qwen3_moe";
    case Arch::kGptOss:
      return "gpt_oss";
  }
  return "unknown";
}

absl::StatusOr<Arch> ParseArch(std::string_view name) {
  for (Arch a :
       {Arch::kLlama, Arch::kMistral, Arch::kQwen2, Arch::kQwen3, Arch::kGemma2, Arch::kGemma3,
        Arch::kPhi3, Arch::kMixtral, Arch::kQwen2Moe, Arch::kQwen3Moe, Arch::kGptOss}) {
    if (name == ArchName(a)) return a;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported architecture '", std::string(name),
                                                 "' (supported: ", std::string(kSupportedArchs),
                                                 ")"));
}

std::string_view RopeScalingName(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return "default";
    case RopeScaling::kLlama3:
      return "llama3";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kDynamic:
      return "dynamic";
    case RopeScaling::kYarn:
      return "yarn";
    case RopeScaling::kLongRope:
      return "longrope";
  }
  return "unknown";
}

float ModelConfig::AttnScale() const {
  return attn_scale > 0.f ? attn_scale : 1.f / std::sqrt(float(head_dim));
}

int32_t ModelConfig::MaxFfn() const {
  int32_t f = ffn;
  if (n_experts > 0) f = std::max({f, expert_ffn, shared_expert_ffn});
  return f;
}

absl::Status ValidateConfig(const ModelConfig& c) {
  auto bad = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("bad model config: ", std::string(what)));
  };
  // Limits far above any real model, so absurd headers fail here and not in
  // a multiplication that overflows later.
  constexpr int32_t kMaxDim = 1 << 17, kMaxVocab = 1 << 22;
  if (ArchName(c.arch) == "unknown") return bad(absl::StrCat("architecture ", uint32_t(c.arch)));
  if (c.n_layers <= 0 || c.n_layers > kMaxLayers)
    return bad(absl::StrCat("n_layers ", c.n_layers, " outside [1, ", kMaxLayers, "]"));
  if (c.hidden <= 0 || c.hidden > kMaxDim)
    return bad(absl::StrCat("hidden size ", c.hidden, " outside [1, ", kMaxDim, "]"));
  if (c.ffn <= 0 || c.ffn > 4 * kMaxDim)
    return bad(absl::StrCat("intermediate size ", c.ffn, " outside [1, ", 4 * kMaxDim, "]"));
  if (c.n_heads <= 0 || c.n_heads > 1024)
    return bad(absl::StrCat("n_heads ", c.n_heads, " outside [1, 1024]"));
  if (c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads != 0)
    return bad(absl::StrCat("n_kv_heads ", c.n_kv_heads, " must divide n_heads ", c.n_heads));
  if (c.head_dim <= 0 || c.head_dim > 1024 || c.head_dim % 2 != 0)
    return bad(absl::StrCat("head_dim ", c.head_dim, " must be even and in [2, 1024]"));
  if (c.vocab <= 0 || c.vocab > kMaxVocab)
    return bad(absl::StrCat("vocab size ", c.vocab, " outside [1, ", kMaxVocab, "]"));
  if (c.max_context <= 0 || c.max_context > (1 << 24))
    return bad(absl::StrCat("context length ", c.max_context, " outside [1, 2^24]"));
  if (!(c.norm_eps > 0.f && c.norm_eps < 1.f))
    return bad(absl::StrCat("rms norm eps ", c.norm_eps, " outside (0, 1)"));
  if (!(c.rope_theta > 0.f)) return bad(absl::StrCat("rope theta ", c.rope_theta, " not positive"));
  if (!(c.rope_local_theta >= 0.f) || !std::isfinite(c.rope_local_theta))
    return bad(absl::StrCat("local rope theta ", c.rope_local_theta, " negative"));
  const bool finite_factor = c.rope_factor > 0.f && std::isfinite(c.rope_factor);
  switch (c.rope_scaling) {
    case RopeScaling::kNone:
      break;
    case RopeScaling::kLlama3:
      if (!(c.rope_factor >= 1.f) || !(c.rope_low_freq_factor > 0.f) ||
          !(c.rope_high_freq_factor > c.rope_low_freq_factor) || c.rope_original_max_pos <= 0)
        return bad(
            "llama3 rope_scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor "
            "and original_max_position_embeddings > 0");
      break;
    case RopeScaling::kLinear:
    case RopeScaling::kDynamic:
      if (!finite_factor)
        return bad(absl::StrCat(std::string(RopeScalingName(c.rope_scaling)),
                                " rope_scaling factor ", c.rope_factor, " must be positive"));
      break;
    case RopeScaling::kYarn:
      if (!finite_factor || c.rope_original_max_pos <= 0 || !(c.rope_beta_fast > 0.f) ||
          !(c.rope_beta_slow > 0.f) || !std::isfinite(c.rope_beta_fast))
        return bad(
            "yarn rope_scaling needs factor > 0, original_max_position_embeddings > 0 and "
            "positive beta_fast, beta_slow");
      break;
    case RopeScaling::kLongRope:
      if (c.n_rope_factors != c.head_dim / 2 || c.n_rope_factors > kMaxRopeFactors)
        return bad(absl::StrCat("longrope needs head_dim / 2 = ", c.head_dim / 2,
                                " factors (at most ", kMaxRopeFactors, "), got ",
                                c.n_rope_factors));
      for (int i = 0; i < c.n_rope_factors; ++i) {
        if (!(c.rope_factors[i] > 0.f) || !std::isfinite(c.rope_factors[i]))
          return bad(
              absl::StrCat("longrope factor ", i, " = ", c.rope_factors[i], " is not positive"));
      }
      if (c.rope_original_max_pos <= 0)
        return bad("longrope needs original_max_position_embeddings > 0");
      break;
    default:
      return bad(absl::StrCat("rope scaling ", uint32_t(c.rope_scaling)));
  }
  if (!(c.rope_attn_factor > 0.f) || !std::isfinite(c.rope_attn_factor))
    return bad(absl::StrCat("rope attention factor ", c.rope_attn_factor, " not positive"));
  if (c.sliding_window < 0)
    return bad(absl::StrCat("sliding window ", c.sliding_window, " negative"));
  if (c.mlp_act != MlpActivation::kSilu && c.mlp_act != MlpActivation::kGeluTanh)
    return bad(absl::StrCat("MLP activation ", int(c.mlp_act)));
  for (const auto& [name, v] : {std::pair<const char*, float>{"embedding scale", c.embed_scale},
                                {"attention scale", c.attn_scale},
                                {"attention soft-cap", c.attn_softcap},
                                {"final logit soft-cap", c.final_softcap}}) {
    if (!(v >= 0.f) || !std::isfinite(v)) return bad(absl::StrCat(name, " ", v, " negative"));
  }
  if (!(c.embed_scale > 0.f)) return bad("embedding scale must be positive");
  if (c.n_experts < 0 || c.n_experts > kMaxExperts)
    return bad(absl::StrCat("n_experts ", c.n_experts, " outside [0, ", kMaxExperts, "]"));
  if (c.n_experts > 0) {
    if (c.n_experts_used <= 0 || c.n_experts_used > c.n_experts)
      return bad(absl::StrCat("experts per token ", c.n_experts_used, " outside [1, n_experts ",
                              c.n_experts, "]"));
    if (c.expert_ffn <= 0 || c.expert_ffn > 4 * kMaxDim)
      return bad(absl::StrCat("expert intermediate size ", c.expert_ffn, " outside [1, ",
                              4 * kMaxDim, "]"));
    if (c.shared_expert_ffn < 0 || c.shared_expert_ffn > 4 * kMaxDim)
      return bad(absl::StrCat("shared expert intermediate size ", c.shared_expert_ffn,
                              " outside [0, ", 4 * kMaxDim, "]"));
    if (c.sandwich_norm || c.mlp_act != MlpActivation::kSilu)
      return bad("experts with sandwich norms or GeGLU are not supported");
    if (!(c.swiglu_limit >= 0.f) || !std::isfinite(c.swiglu_limit) || !(c.swiglu_alpha > 0.f) ||
        !std::isfinite(c.swiglu_alpha))
      return bad(absl::StrCat("clamped SwiGLU limit ", c.swiglu_limit, " / alpha ", c.swiglu_alpha,
                              ": the limit must be >= 0, alpha > 0"));
  } else {
    for (uint64_t w : c.moe_layers) {
      if (w != 0) return bad("sparse layers without experts");
    }
    if (c.router_bias || c.expert_bias || c.swiglu_limit != 0.f)
      return bad("router / expert biases or a clamped SwiGLU without experts");
  }
  if (c.bos_id >= c.vocab) return bad(absl::StrCat("bos id ", c.bos_id, " >= vocab ", c.vocab));
  if (c.n_eos < 0 || c.n_eos > kMaxEosIds) return bad("too many eos ids");
  for (int i = 0; i < c.n_eos; ++i) {
    if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.vocab)
      return bad(absl::StrCat("eos id ", c.eos_ids[i], " outside the vocabulary"));
  }
  return absl::OkStatus();
}

std::string DescribeConfig(const ModelConfig& c) {
  std::string s =
      absl::StrCat(std::string(ArchName(c.arch)), ": ", c.n_layers, " layers, hidden ", c.hidden,
                   ", ffn ", c.ffn, ", heads ", c.n_heads, " (kv ", c.n_kv_heads, ", head_dim ",
                   c.head_dim, "), vocab ", c.vocab, ", context ", c.max_context);
  if (c.tied_embeddings) absl::StrAppend(&s, ", tied embeddings");
  if (c.qkv_bias) absl::StrAppend(&s, ", qkv bias");
  if (c.o_bias) absl::StrAppend(&s, ", o bias");
  if (c.attn_sinks) absl::StrAppend(&s, ", attention sinks");
  if (c.qk_norm) absl::StrAppend(&s, ", q/k norms");
  if (c.sandwich_norm) absl::StrAppend(&s, ", sandwich norms");
  if (c.mlp_act == MlpActivation::kGeluTanh) absl::StrAppend(&s, ", GeGLU");
  if (c.rope_scaling != RopeScaling::kNone)
    absl::StrAppend(&s, ", ", std::string(RopeScalingName(c.rope_scaling)), " rope scaling");
  if (c.sliding_window > 0) {
    int sliding = 0;
    for (int l = 0; l < c.n_layers; ++l) sliding += c.IsSlidingLayer(l);
    absl::StrAppend(&s, ", sliding window ", c.sliding_window, " on ", sliding, " of ", c.n_layers,
                    " layers");
  }
  if (c.n_experts > 0) {
    int sparse = 0;
    for (int l = 0; l < c.n_layers; ++l) sparse += c.IsMoeLayer(l);
    absl::StrAppend(&s, ", ", c.n_experts, " experts (top ", c.n_experts_used,
                    c.norm_topk_prob ? ", renormalized" : "", ", ffn ", c.expert_ffn, ") on ",
                    sparse, " of ", c.n_layers, " layers");
    if (c.shared_expert_ffn > 0)
      absl::StrAppend(&s, ", gated shared expert (ffn ", c.shared_expert_ffn, ")");
    if (c.router_bias || c.expert_bias) absl::StrAppend(&s, ", router / expert biases");
    if (c.swiglu_limit > 0.f)
      absl::StrAppend(&s, ", clamped SwiGLU (limit ", c.swiglu_limit, ", alpha ", c.swiglu_alpha,
                      ")");
  }
  if (c.attn_softcap > 0.f) absl::StrAppend(&s, ", attention soft-cap ", c.attn_softcap);
  if (c.final_softcap > 0.f) absl::StrAppend(&s, ", logit soft-cap ", c.final_softcap);
  return s;
}

}  // namespace paged
