#include "common/model_config.h"

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
  }
  return "unknown";
}

absl::StatusOr<Arch> ParseArch(std::string_view name) {
  for (Arch a : {Arch::kLlama, Arch::kMistral, Arch::kQwen2}) {
    if (name == ArchName(a)) return a;
  }
  return absl::InvalidArgumentError(absl::StrCat("unsupported architecture '", std::string(name),
                                                 "' (supported: llama, mistral, qwen2)"));
}

absl::Status ValidateConfig(const ModelConfig& c) {
  auto bad = [](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("bad model config: ", std::string(what)));
  };
  // Limits far above any real model, so absurd headers fail here and not in
  // a multiplication that overflows later.
  constexpr int32_t kMaxDim = 1 << 17, kMaxLayers = 1024, kMaxVocab = 1 << 22;
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
  if (c.rope_scaling == RopeScaling::kLlama3 &&
      (!(c.rope_factor >= 1.f) || !(c.rope_low_freq_factor > 0.f) ||
       !(c.rope_high_freq_factor > c.rope_low_freq_factor) || c.rope_original_max_pos <= 0))
    return bad(
        "llama3 rope_scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor "
        "and original_max_position_embeddings > 0");
  if (c.bos_id >= c.vocab) return bad(absl::StrCat("bos id ", c.bos_id, " >= vocab ", c.vocab));
  if (c.n_eos < 0 || c.n_eos > kMaxEosIds) return bad("too many eos ids");
  for (int i = 0; i < c.n_eos; ++i) {
    if (c.eos_ids[i] < 0 || c.eos_ids[i] >= c.vocab)
      return bad(absl::StrCat("eos id ", c.eos_ids[i], " outside the vocabulary"));
  }
  return absl::OkStatus();
}

std::string DescribeConfig(const ModelConfig& c) {
  return absl::StrCat(std::string(ArchName(c.arch)), ": ", c.n_layers, " layers, hidden ", c.hidden,
                      ", ffn ", c.ffn, ", heads ", c.n_heads, " (kv ", c.n_kv_heads, ", head_dim ",
                      c.head_dim, "), vocab ", c.vocab, ", context ", c.max_context,
                      c.tied_embeddings ? ", tied embeddings" : "", c.qkv_bias ? ", qkv bias" : "",
                      c.rope_scaling == RopeScaling::kLlama3 ? ", llama3 rope scaling" : "");
}

}  // namespace paged
