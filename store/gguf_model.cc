// GGUF files as a ModelSource: the {arch}.* metadata becomes the ModelConfig,
// the tokenizer.ggml.* arrays the Vocab, and the llama.cpp tensor names
// ("blk.3.attn_q.weight") the canonical ones ("wq" of layer 3).
#include "store/gguf_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <numbers>
#include <optional>
#include <variant>

#include "absl/strings/str_cat.h"
#include "common/segment_layout.h"
#include "common/status.h"
#include "store/gguf_tokenizer.h"
#include "store/mapped_file.h"

namespace paged {
namespace {

absl::Status Bad(const GgufFile& f, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(f.origin, ": ", what));
}

// A missing required key is a malformed file, not a lookup miss.
absl::Status AsInvalid(const absl::Status& s) {
  return absl::IsNotFound(s) ? absl::InvalidArgumentError(s.message()) : s;
}

// A positive int32 metadata value (sizes, counts).
absl::StatusOr<int32_t> GetDim(const GgufFile& f, const std::string& key) {
  absl::StatusOr<int64_t> v = f.GetInt(key);
  if (!v.ok()) return AsInvalid(v.status());
  if (*v <= 0 || *v > std::numeric_limits<int32_t>::max())
    return Bad(f, absl::StrCat("metadata key '", key, "' = ", *v, " is out of range"));
  return static_cast<int32_t>(*v);
}

absl::StatusOr<int32_t> GetDimOr(const GgufFile& f, const std::string& key, int32_t dflt) {
  return f.Has(key) ? GetDim(f, key) : dflt;
}

absl::StatusOr<float> GetFloatOr(const GgufFile& f, const std::string& key,
                                 std::optional<float> dflt) {
  if (!f.Has(key) && dflt) return *dflt;
  absl::StatusOr<double> v = f.GetFloat(key);
  if (!v.ok()) return AsInvalid(v.status());
  return static_cast<float>(*v);
}

// A token id key: nullopt when absent or "none" (-1, or its uint32 image).
absl::StatusOr<std::optional<int32_t>> GetTokenId(const GgufFile& f, const std::string& key) {
  if (!f.Has(key)) return std::nullopt;
  ASSIGN_OR_RETURN(int64_t v, f.GetInt(key));
  if (v == -1 || v == 0xFFFFFFFFll) return std::nullopt;
  if (v < 0 || v > std::numeric_limits<int32_t>::max())
    return Bad(f, absl::StrCat("metadata key '", key, "' = ", v, " is not a token id"));
  return static_cast<int32_t>(v);
}

// ---- config ----------------------------------------------------------------

// RoPE scaling as llama.cpp reads it: {arch}.rope.scaling.type linear
// (factor), yarn (factor, original_context_length, yarn_beta_fast / slow; the
// attention factor llama.cpp derives: 0.1 ln(factor) + 1, times
// rope.scaling.attn_factor), longrope (the rope_factors_long / short tensors,
// read later, and rope.scaling.attn_factor). llama3 scaling comes as the
// rope_freqs.weight tensor (ReadLlama3Scaling).
absl::Status ReadRopeScaling(const GgufFile& f, const std::string& arch, ModelConfig& c) {
  const std::string p = arch + ".rope.scaling.";
  if (!f.Has(p + "type")) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::string type, f.GetString(p + "type"));
  ASSIGN_OR_RETURN(const float factor, GetFloatOr(f, p + "factor", 1.f));
  ASSIGN_OR_RETURN(const float attn_factor, GetFloatOr(f, p + "attn_factor", 1.f));
  ASSIGN_OR_RETURN(c.rope_original_max_pos,
                   GetDimOr(f, p + "original_context_length", c.max_context));
  if (type == "none") return absl::OkStatus();
  if (type == "linear") {
    if (factor != 1.f) {
      c.rope_scaling = RopeScaling::kLinear;
      c.rope_factor = factor;
    }
    return absl::OkStatus();
  }
  if (type == "yarn") {
    if (f.Has(p + "yarn_log_multiplier"))
      return Bad(f, absl::StrCat(p, "yarn_log_multiplier is not supported"));
    c.rope_scaling = RopeScaling::kYarn;
    c.rope_factor = factor;
    ASSIGN_OR_RETURN(c.rope_beta_fast, GetFloatOr(f, p + "yarn_beta_fast", 32.f));
    ASSIGN_OR_RETURN(c.rope_beta_slow, GetFloatOr(f, p + "yarn_beta_slow", 1.f));
    c.rope_attn_factor = (factor <= 1.f ? 1.f : 0.1f * std::log(factor) + 1.f) * attn_factor;
    return absl::OkStatus();
  }
  if (type == "longrope") {
    c.rope_scaling = RopeScaling::kLongRope;
    c.rope_attn_factor = attn_factor;
    return absl::OkStatus();
  }
  return Bad(f, absl::StrCat("unsupported ", p, "type '", type,
                             "' (supported: none, linear, yarn, longrope)"));
}

// The experts (llama.cpp's keys): {arch}.expert_count, expert_used_count,
// expert_feed_forward_length (feed_forward_length for llama files, whose
// experts are mixtral's), expert_shared_feed_forward_length; the top-k
// renormalized as llama.cpp's graphs do (llama / mixtral and qwen3moe yes,
// qwen2moe no) unless {arch}.expert_weights_norm says. Which layers are
// sparse follows from their tensors (GgufToModelSource).
absl::Status ReadExperts(const GgufFile& f, const std::string& arch, ModelConfig& c) {
  const std::string p = arch + ".";
  if (!f.Has(p + "expert_count")) {
    if (c.arch == Arch::kQwen2Moe || c.arch == Arch::kQwen3Moe || c.arch == Arch::kGptOss)
      return Bad(f, absl::StrCat(p, "expert_count is missing"));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(c.n_experts, GetDim(f, p + "expert_count"));
  if (c.arch == Arch::kLlama || c.arch == Arch::kMistral) c.arch = Arch::kMixtral;
  ASSIGN_OR_RETURN(c.n_experts_used, GetDim(f, p + "expert_used_count"));
  ASSIGN_OR_RETURN(c.expert_ffn, GetDimOr(f, p + "expert_feed_forward_length", c.ffn));
  ASSIGN_OR_RETURN(c.shared_expert_ffn, GetDimOr(f, p + "expert_shared_feed_forward_length",
                                                 c.arch == Arch::kQwen2Moe ? c.ffn : 0));
  if (c.arch != Arch::kQwen2Moe) c.shared_expert_ffn = 0;
  bool norm = c.arch != Arch::kQwen2Moe;
  if (f.Has(p + "expert_weights_norm")) {
    ASSIGN_OR_RETURN(norm, f.GetBool(p + "expert_weights_norm"));
  }
  c.norm_topk_prob = norm ? 1 : 0;
  return absl::OkStatus();
}

// What each architecture adds to the llama forward pass, from llama.cpp's
// metadata keys and its per-architecture defaults (src/models/<arch>.cpp).
absl::Status ReadArchFeatures(const GgufFile& f, const std::string& arch, ModelConfig& c) {
  const std::string p = arch + ".";
  const bool gemma = c.arch == Arch::kGemma2 || c.arch == Arch::kGemma3;
  c.qkv_bias = c.arch == Arch::kQwen2 || c.arch == Arch::kQwen2Moe;
  c.qk_norm = c.arch == Arch::kQwen3 || c.arch == Arch::kGemma3 || c.arch == Arch::kQwen3Moe;
  RETURN_IF_ERROR(ReadExperts(f, arch, c));
  if (c.arch == Arch::kGptOss) {
    // llama.cpp's openai-moe graph: q/k/v/o biases, sinks, the router's and
    // the experts' biases, softmax over the top-k logits, SWIGLU_OAI with
    // its constants (alpha 1.702, limit 7).
    c.qkv_bias = c.o_bias = c.attn_sinks = 1;
    c.router_bias = c.expert_bias = 1;
    c.norm_topk_prob = 1;
    c.swiglu_limit = 7.f;
    c.swiglu_alpha = 1.702f;
  }
  if (gemma) {
    c.sandwich_norm = 1;
    c.mlp_act = MlpActivation::kGeluTanh;
    c.embed_scale = std::sqrt(float(c.hidden));
    // llama.cpp's rule (no key holds query_pre_attn_scalar): hidden / heads
    // for the 27B models (46 / 62 layers), head_dim for the others.
    const bool is_27b = c.n_layers == (c.arch == Arch::kGemma2 ? 46 : 62);
    c.attn_scale = 1.f / std::sqrt(float(is_27b ? c.hidden / std::max(c.n_heads, 1) : c.head_dim));
    const bool g2 = c.arch == Arch::kGemma2;
    if (g2) {
      ASSIGN_OR_RETURN(c.attn_softcap, GetFloatOr(f, p + "attn_logit_softcapping", 50.f));
    }
    ASSIGN_OR_RETURN(c.final_softcap,
                     GetFloatOr(f, p + "final_logit_softcapping", g2 ? 30.f : 0.f));
  }
  // The sliding window: 0 or absent means none (gemma2: 4096 unless said).
  int64_t window = c.arch == Arch::kGemma2 ? 4096 : 0;
  if (f.Has(p + "attention.sliding_window")) {
    ASSIGN_OR_RETURN(window, f.GetInt(p + "attention.sliding_window"));
  }
  if (window < 0 || window > std::numeric_limits<int32_t>::max())
    return Bad(f, absl::StrCat(p, "attention.sliding_window ", window, " is out of range"));
  c.sliding_window = static_cast<int32_t>(window);
  if (window == 0) return absl::OkStatus();
  // gemma3's local layers rotate with their own base and no scaling.
  if (c.arch == Arch::kGemma3) {
    ASSIGN_OR_RETURN(c.rope_local_theta, GetFloatOr(f, p + "rope.freq_base_swa", 10000.f));
  }
  // Which layers: the pattern key (a period n: layer l slides unless
  // l % n == n - 1, as llama_hparams::set_swa_pattern; or one bool per
  // layer), else gemma2 2, gemma3 6, every layer for the others.
  const std::string key = p + "attention.sliding_window_pattern";
  if (const GgufValue* v = f.Find(key); v != nullptr && TypeOf(*v) == GgufValueType::kArray) {
    ASSIGN_OR_RETURN(const GgufArray* a, f.GetArray(key));
    const auto* bools = std::get_if<std::vector<bool>>(&a->elems);
    if (bools == nullptr || bools->size() != size_t(c.n_layers))
      return Bad(f, absl::StrCat(key, " must hold one bool per layer"));
    for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, (*bools)[size_t(l)]);
    return absl::OkStatus();
  }
  int64_t period = c.arch == Arch::kGemma2 || c.arch == Arch::kGptOss ? 2
                   : c.arch == Arch::kGemma3                          ? 6
                                                                      : 0;
  if (f.Has(key)) {
    ASSIGN_OR_RETURN(period, f.GetInt(key));
  }
  if (period < 0 || period > kMaxLayers)
    return Bad(f, absl::StrCat(key, " ", period, " is out of range"));
  for (int l = 0; l < c.n_layers && l < kMaxLayers; ++l)
    c.SetSlidingLayer(l, period == 0 || l % period < period - 1);
  return absl::OkStatus();
}

// Phi-3's longrope divisors (rope_factors_long / short.weight, head_dim/2
// F32 each): the long ones when the context exceeds the original one, as
// llama.cpp's llama_model::get_rope_factors chooses for its n_ctx.
absl::Status ReadLongRopeFactors(const GgufFile& f, const GgufTensorInfo* long_t,
                                 const GgufTensorInfo* short_t, const uint8_t* data,
                                 ModelConfig& c) {
  if (c.rope_scaling != RopeScaling::kLongRope) {
    if (long_t != nullptr || short_t != nullptr)
      return Bad(f, "rope_factors_long / short tensors without longrope scaling");
    return absl::OkStatus();
  }
  const GgufTensorInfo* t = c.max_context > c.rope_original_max_pos ? long_t : short_t;
  if (t == nullptr) return Bad(f, "longrope scaling without rope_factors_long / short tensors");
  const int n = c.head_dim / 2;
  if (t->type != static_cast<uint32_t>(GgmlType::kF32) || t->numel != static_cast<uint64_t>(n) ||
      n > kMaxRopeFactors)
    return Bad(f, absl::StrCat(t->name, " must be F32 with head_dim/2 = ", n, " values"));
  std::memcpy(c.rope_factors, data + t->begin, size_t(n) * sizeof(float));
  c.n_rope_factors = n;
  return absl::OkStatus();
}

absl::Status ReadConfig(const GgufFile& f, const std::string& arch, ModelConfig& c) {
  const std::string p = arch + ".";
  ASSIGN_OR_RETURN(c.max_context, GetDim(f, p + "context_length"));
  ASSIGN_OR_RETURN(c.hidden, GetDim(f, p + "embedding_length"));
  ASSIGN_OR_RETURN(c.n_layers, GetDim(f, p + "block_count"));
  ASSIGN_OR_RETURN(c.ffn, GetDim(f, p + "feed_forward_length"));
  ASSIGN_OR_RETURN(c.n_heads, GetDim(f, p + "attention.head_count"));
  ASSIGN_OR_RETURN(c.n_kv_heads, GetDimOr(f, p + "attention.head_count_kv", c.n_heads));
  ASSIGN_OR_RETURN(c.norm_eps, GetFloatOr(f, p + "attention.layer_norm_rms_epsilon", {}));
  ASSIGN_OR_RETURN(c.rope_theta, GetFloatOr(f, p + "rope.freq_base", 10000.f));

  // head_dim: attention.key_length when given (models whose heads are not
  // hidden / n_heads), else hidden / n_heads. RoPE must span the whole head.
  if (f.Has(p + "attention.key_length")) {
    ASSIGN_OR_RETURN(c.head_dim, GetDim(f, p + "attention.key_length"));
    ASSIGN_OR_RETURN(int32_t v_dim, GetDimOr(f, p + "attention.value_length", c.head_dim));
    if (v_dim != c.head_dim)
      return Bad(f, absl::StrCat("attention.value_length ", v_dim, " differs from key_length ",
                                 c.head_dim, " (not supported)"));
  } else {
    if (c.hidden % c.n_heads != 0)
      return Bad(f, absl::StrCat("embedding_length ", c.hidden, " is not a multiple of head_count ",
                                 c.n_heads, " and attention.key_length is absent"));
    c.head_dim = c.hidden / c.n_heads;
  }
  ASSIGN_OR_RETURN(int32_t rope_dims, GetDimOr(f, p + "rope.dimension_count", c.head_dim));
  if (rope_dims != c.head_dim)
    return Bad(f, absl::StrCat(p, "rope.dimension_count ", rope_dims, " differs from head_dim ",
                               c.head_dim, " (partial rotary embeddings are not supported)"));

  // Vocabulary size: the explicit key, else the token list's length.
  if (f.Has(p + "vocab_size")) {
    ASSIGN_OR_RETURN(c.vocab, GetDim(f, p + "vocab_size"));
  } else if (f.Has("tokenizer.ggml.tokens")) {
    ASSIGN_OR_RETURN(const auto* tokens, f.GetStringArray("tokenizer.ggml.tokens"));
    if (tokens->empty() ||
        tokens->size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      return Bad(f, absl::StrCat("tokenizer.ggml.tokens has ", tokens->size(), " entries"));
    c.vocab = static_cast<int32_t>(tokens->size());
  } else {
    return Bad(f, absl::StrCat("no vocabulary size: neither ", p,
                               "vocab_size nor tokenizer.ggml.tokens is present"));
  }

  RETURN_IF_ERROR(ReadRopeScaling(f, arch, c));
  return ReadArchFeatures(f, arch, c);
}

// llama3-style GGUFs (Llama 3.1, 3.2) carry RoPE scaling not as metadata but
// as rope_freqs.weight: head_dim/2 F32 divisors of the rotation frequencies,
// which convert_hf_to_gguf.py computes from (factor, low_freq_factor 1,
// high_freq_factor 4, original context 8192). We recover those parameters
// (factor = the largest divisor unless {arch}.rope.scaling.factor says
// otherwise, the original context from {arch}.rope.scaling.original_context_length
// when present) and check that they reproduce every divisor; any other set
// of frequencies is refused.
absl::Status ReadLlama3Scaling(const GgufFile& f, const std::string& arch, const GgufTensorInfo& t,
                               const uint8_t* data, ModelConfig& c) {
  const int n = c.head_dim / 2;
  if (t.type != static_cast<uint32_t>(GgmlType::kF32) || t.numel != static_cast<uint64_t>(n))
    return Bad(f, absl::StrCat("rope_freqs.weight must be F32 with head_dim/2 = ", n,
                               " values; it is ", GgmlTypeName(t.type), " with ", t.numel));
  std::vector<float> divisors(n);
  std::memcpy(divisors.data(), data + t.begin, n * sizeof(float));

  float max_div = 0.f;
  for (float d : divisors) max_div = std::max(max_div, d);
  const std::string p = arch + ".rope.scaling.";
  ASSIGN_OR_RETURN(const float factor, GetFloatOr(f, p + "factor", max_div));
  ASSIGN_OR_RETURN(const int32_t orig_ctx, GetDimOr(f, p + "original_context_length", 8192));
  const double low = 1.0, high = 4.0;
  bool all_one = true;
  for (int i = 0; i < n; ++i) {
    const double freq = std::pow(static_cast<double>(c.rope_theta), -2.0 * i / c.head_dim);
    const double wavelen = 2 * std::numbers::pi / freq;
    double want = 1.0;
    if (wavelen > orig_ctx / low) {
      want = factor;
    } else if (wavelen >= orig_ctx / high) {
      const double smooth = (orig_ctx / wavelen - low) / (high - low);
      want = 1.0 / ((1 - smooth) / factor + smooth);
    }
    if (!(std::fabs(divisors[i] - want) <= 1e-3 * want))
      return Bad(f, absl::StrCat("rope_freqs.weight[", i, "] = ", divisors[i],
                                 " does not match llama3 rope scaling (factor ", factor,
                                 ", original context ", orig_ctx, ", expected ", want,
                                 "); other frequency factors are not supported"));
    all_one = all_one && divisors[i] == 1.f;
  }
  if (all_one) return absl::OkStatus();  // no scaling at all
  c.rope_scaling = RopeScaling::kLlama3;
  c.rope_factor = factor;
  c.rope_low_freq_factor = static_cast<float>(low);
  c.rope_high_freq_factor = static_cast<float>(high);
  c.rope_original_max_pos = orig_ctx;
  return absl::OkStatus();
}

// ---- tokenizer ---------------------------------------------------------------

// Token ids go to the config (bos, eos ids: eos, then end-of-turn and
// end-of-message when distinct, as llama.cpp stops on all three), the chat
// template (tokenizer.chat_template) to the bundle. SentencePiece-style
// ("llama") vocabularies are read into `vocab` and the bundle; byte-level BPE
// ones ("gpt2": llama3, qwen2) become an HF tokenizer.json in the bundle
// (store/gguf_tokenizer.h) when their pre-tokenizer is one we know, else the
// model serves token ids only.
absl::Status ReadTokenizer(const GgufFile& f, ModelConfig& c, Vocab& vocab, TokenizerBundle& bundle,
                           std::string& note) {
  if (f.Has("tokenizer.chat_template")) {
    ASSIGN_OR_RETURN(bundle.chat_template, f.GetString("tokenizer.chat_template"));
  }
  std::string model;
  if (f.Has("tokenizer.ggml.model")) {
    ASSIGN_OR_RETURN(model, f.GetString("tokenizer.ggml.model"));
  }
  const bool spm = model == "llama";
  ASSIGN_OR_RETURN(std::optional<int32_t> bos, GetTokenId(f, "tokenizer.ggml.bos_token_id"));
  ASSIGN_OR_RETURN(std::optional<int32_t> eos, GetTokenId(f, "tokenizer.ggml.eos_token_id"));
  ASSIGN_OR_RETURN(std::optional<int32_t> unk, GetTokenId(f, "tokenizer.ggml.unknown_token_id"));
  ASSIGN_OR_RETURN(std::optional<int32_t> eot, GetTokenId(f, "tokenizer.ggml.eot_token_id"));
  ASSIGN_OR_RETURN(std::optional<int32_t> eom, GetTokenId(f, "tokenizer.ggml.eom_token_id"));
  if (spm) {
    // llama.cpp's defaults for SentencePiece vocabularies.
    if (!f.Has("tokenizer.ggml.bos_token_id")) bos = 1;
    if (!f.Has("tokenizer.ggml.eos_token_id")) eos = 2;
    if (!f.Has("tokenizer.ggml.unknown_token_id")) unk = 0;
  }
  c.bos_id = bos.value_or(-1);
  c.n_eos = 0;
  for (const std::optional<int32_t>& id : {eos, eot, eom}) {
    if (!id) continue;
    bool seen = false;
    for (int i = 0; i < c.n_eos; ++i) seen = seen || c.eos_ids[i] == *id;
    if (!seen) c.eos_ids[c.n_eos++] = *id;
  }
  if (model == "gpt2") {
    ASSIGN_OR_RETURN(std::optional<TokenizerBundle> bpe, GgufBpeTokenizer(f, c));
    if (!bpe) {
      const absl::StatusOr<std::string> pre = f.GetString("tokenizer.ggml.pre");
      note = absl::StrCat("tokenizer.ggml.pre '", pre.ok() ? *pre : "default",
                          "' is not supported: the model takes and gives token ids only");
      return absl::OkStatus();
    }
    bpe->chat_template = std::move(bundle.chat_template);
    bundle = *std::move(bpe);
  }
  if (!spm) return absl::OkStatus();

  ASSIGN_OR_RETURN(const auto* tokens, f.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = tokens->size();
  if (n != static_cast<size_t>(c.vocab))
    return Bad(f, absl::StrCat("tokenizer.ggml.tokens has ", n,
                               " entries but the vocabulary size is ", c.vocab));
  vocab.pieces = *tokens;
  vocab.scores.assign(n, 0.f);
  vocab.types.assign(n, Vocab::kNormal);
  if (f.Has("tokenizer.ggml.scores")) {
    ASSIGN_OR_RETURN(vocab.scores, f.GetFloatArray("tokenizer.ggml.scores"));
  }
  if (f.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(std::vector<int64_t> types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n)
      return Bad(f, absl::StrCat("tokenizer.ggml.token_type has ", types.size(), " entries for ", n,
                                 " tokens"));
    for (size_t i = 0; i < n; ++i) {
      if (types[i] < 0 || types[i] > Vocab::kByte)
        return Bad(f, absl::StrCat("token ", i, " has unknown token type ", types[i]));
      vocab.types[i] = static_cast<int32_t>(types[i]);
    }
  }
  if (vocab.scores.size() != n)
    return Bad(f, absl::StrCat("tokenizer.ggml.scores has ", vocab.scores.size(), " entries for ",
                               n, " tokens"));
  if (unk && *unk >= c.vocab)
    return Bad(f, absl::StrCat("unknown token id ", *unk, " is outside the vocabulary"));
  vocab.bos_id = c.bos_id;
  vocab.eos_id = eos.value_or(-1);
  vocab.unk_id = unk.value_or(-1);
  bundle.kind = TokenizerKind::kSentencePieceGguf;
  bundle.payload = SerializeVocab(vocab);
  return absl::OkStatus();
}

// ---- tensors -----------------------------------------------------------------

struct NameMap {
  std::string_view gguf, canonical;
};
constexpr NameMap kGlobalNames[] = {
    {"token_embd.weight", "tok_embd"},
    {"output_norm.weight", "output_norm"},
    {"output.weight", "output"},
};
constexpr NameMap kLayerNames[] = {
    {"attn_norm.weight", "attn_norm"},
    {"attn_q.weight", "wq"},
    {"attn_k.weight", "wk"},
    {"attn_v.weight", "wv"},
    {"attn_output.weight", "wo"},
    {"attn_q.bias", "bq"},
    {"attn_k.bias", "bk"},
    {"attn_v.bias", "bv"},
    {"ffn_norm.weight", "ffn_norm"},
    {"ffn_gate.weight", "w_gate"},
    {"ffn_up.weight", "w_up"},  // phi3: gate and up fused, split in AddTensor
    {"ffn_down.weight", "w_down"},
    {"attn_q_norm.weight", "q_norm"},
    {"attn_k_norm.weight", "k_norm"},
    {"post_attention_norm.weight", "post_attn_norm"},
    {"post_ffw_norm.weight", "post_ffn_norm"},
    {"attn_qkv.weight", "qkv"},  // fused q, k, v: split in AddTensor
    // Sparse layers: the router, the experts as 3-D tensors [E, rows, cols]
    // (split in AddTensor), the shared expert and its gate (qwen2moe).
    {"ffn_gate_inp.weight", "router"},
    {"ffn_gate_exps.weight", "exp_gate"},
    {"ffn_up_exps.weight", "exp_up"},
    {"ffn_down_exps.weight", "exp_down"},
    {"ffn_gate_inp_shexp.weight", "shexp_gate_inp"},
    {"ffn_gate_shexp.weight", "shexp_gate"},
    {"ffn_up_shexp.weight", "shexp_up"},
    {"ffn_down_shexp.weight", "shexp_down"},
    // gpt-oss (its post_attention_norm is the MLP's input norm: AddTensor).
    {"attn_sinks.weight", "attn_sinks"},
    {"attn_output.bias", "bo"},
    {"ffn_gate_inp.bias", "router_b"},
    {"ffn_gate_exps.bias", "exp_gate_b"},
    {"ffn_up_exps.bias", "exp_up_b"},
    {"ffn_down_exps.bias", "exp_down_b"},
};

// "blk.12.attn_q.weight" -> {"wq", 12}; false when the name is not one we know.
bool MapTensorName(std::string_view name, std::string_view& canonical, int& layer) {
  for (const NameMap& m : kGlobalNames) {
    if (name == m.gguf) {
      canonical = m.canonical;
      layer = -1;
      return true;
    }
  }
  constexpr std::string_view kBlk = "blk.";
  if (name.substr(0, kBlk.size()) != kBlk) return false;
  name.remove_prefix(kBlk.size());
  size_t digits = 0;
  int64_t l = 0;
  while (digits < name.size() && digits < 9 && name[digits] >= '0' && name[digits] <= '9')
    l = l * 10 + (name[digits++] - '0');
  if (digits == 0 || digits >= name.size() || name[digits] != '.') return false;
  name.remove_prefix(digits + 1);
  for (const NameMap& m : kLayerNames) {
    if (name == m.gguf) {
      canonical = m.canonical;
      layer = static_cast<int>(l);
      return true;
    }
  }
  return false;
}

// ggml type ids and the source types the store reads; every other type
// (IQ2/IQ3/IQ1, TQ, Q8_1, Q8_K, integers) is refused by name.
struct TypeMap {
  GgmlType ggml;
  SourceType source;
};
constexpr TypeMap kTensorTypes[] = {
    {GgmlType::kF32, SourceType::kF32},       {GgmlType::kF16, SourceType::kF16},
    {GgmlType::kBF16, SourceType::kBF16},     {GgmlType::kQ8_0, SourceType::kQ8_0},
    {GgmlType::kQ4_0, SourceType::kQ4_0},     {GgmlType::kQ4_1, SourceType::kQ4_1},
    {GgmlType::kQ5_0, SourceType::kQ5_0},     {GgmlType::kQ5_1, SourceType::kQ5_1},
    {GgmlType::kQ2_K, SourceType::kQ2_K},     {GgmlType::kQ3_K, SourceType::kQ3_K},
    {GgmlType::kQ4_K, SourceType::kQ4_K},     {GgmlType::kQ5_K, SourceType::kQ5_K},
    {GgmlType::kQ6_K, SourceType::kQ6_K},     {GgmlType::kIQ4_NL, SourceType::kIQ4_NL},
    {GgmlType::kIQ4_XS, SourceType::kIQ4_XS}, {GgmlType::kMXFP4, SourceType::kMXFP4},
};

absl::StatusOr<SourceType> MapTensorType(const GgufFile& f, const GgufTensorInfo& t) {
  for (const TypeMap& m : kTensorTypes) {
    if (t.type == static_cast<uint32_t>(m.ggml)) return m.source;
  }
  std::string supported;
  for (const TypeMap& m : kTensorTypes)
    absl::StrAppend(&supported, supported.empty() ? "" : ", ", GgmlTypeName(uint32_t(m.ggml)));
  return Bad(f, absl::StrCat("tensor '", t.name, "' has unsupported tensor type ",
                             GgmlTypeName(t.type), " (supported: ", supported, ")"));
}

absl::Status AddTensor(const GgufFile& f, const GgufTensorInfo& t, const uint8_t* data,
                       ModelSource& src) {
  std::string_view canonical;
  int layer = -1;
  if (!MapTensorName(t.name, canonical, layer))
    return Bad(f, absl::StrCat("unknown tensor '", t.name, "' (not part of the ",
                               std::string(ArchName(src.config.arch)), " layout)"));
  SourceTensor st;
  st.name = std::string(canonical);
  st.layer = layer;
  ASSIGN_OR_RETURN(st.type, MapTensorType(f, t));
  const ModelConfig& c = src.config;
  // gpt-oss has no sandwich: its post_attention_norm normalises the MLP's input.
  if (c.arch == Arch::kGptOss && st.name == "post_attn_norm") st.name = "ffn_norm";
  if (st.name.starts_with("exp_") && !st.name.ends_with("_b")) {
    // ne = [cols, rows, experts]: each expert's rows are one contiguous run.
    if (t.ne.size() != 3 || c.n_experts <= 0 || t.ne[2] != uint64_t(c.n_experts) ||
        t.bytes() % uint64_t(c.n_experts) != 0)
      return Bad(f, absl::StrCat("tensor '", t.name,
                                 "' must be 3-D with expert_count = ", c.n_experts, " experts"));
    const uint64_t per_expert = t.bytes() / uint64_t(c.n_experts);
    for (int e = 0; e < c.n_experts; ++e) {
      SourceTensor x = st;
      x.expert = e;
      x.cols = static_cast<int64_t>(t.ne[0]);
      x.rows = static_cast<int64_t>(t.ne[1]);
      x.data = data + t.begin + uint64_t(e) * per_expert;
      x.bytes = per_expert;
      src.tensors.push_back(std::move(x));
    }
    return absl::OkStatus();
  }
  // ggml ne[0] is the innermost dimension: ne = [in, out] is [rows=out, cols=in].
  for (size_t d = 2; d < t.ne.size(); ++d) {
    if (t.ne[d] != 1)
      return Bad(f, absl::StrCat("tensor '", t.name, "' has ", t.ne.size(),
                                 " dimensions; expected 1 or 2"));
  }
  st.cols = static_cast<int64_t>(t.ne[0]);  // numel < 2^63, checked by the parser
  st.rows = t.ne.size() >= 2 ? static_cast<int64_t>(t.ne[1]) : 1;
  st.data = data + t.begin;
  st.bytes = t.bytes();
  // GGUF llama/mistral (and mixtral, "llama" too) q/k rows are in the
  // adjacent-pair RoPE order (the converter permuted the HF rows); the others
  // (NEOX RoPE in llama.cpp) keep the halves order.
  const bool rope_rows = st.name == "wq" || st.name == "wk" || st.name == "bq" || st.name == "bk";
  if (rope_rows && (c.arch == Arch::kLlama || c.arch == Arch::kMistral || c.arch == Arch::kMixtral))
    st.rope_permute_head_dim = c.head_dim;
  // Fused matrices (phi3): row ranges of the stored one, whole blocks each.
  auto split = [&](std::initializer_list<std::pair<const char*, int64_t>> parts) {
    int64_t total = 0;
    for (const auto& part : parts) total += part.second;
    if (st.rows != total || st.rows <= 0 || st.bytes % uint64_t(st.rows) != 0)
      return Bad(f, absl::StrCat("tensor '", t.name, "' has ", st.rows,
                                 " rows; the config implies ", total));
    const uint64_t row_bytes = st.bytes / uint64_t(st.rows);
    int64_t row0 = 0;
    for (const auto& [name, rows] : parts) {
      SourceTensor part = st;
      part.name = name;
      part.rows = rows;
      part.data = st.data + uint64_t(row0) * row_bytes;
      part.bytes = uint64_t(rows) * row_bytes;
      src.tensors.push_back(std::move(part));
      row0 += rows;
    }
    return absl::OkStatus();
  };
  if (st.name == "qkv") return split({{"wq", c.q_dim()}, {"wk", c.kv_dim()}, {"wv", c.kv_dim()}});
  if (st.name == "w_up" && c.arch == Arch::kPhi3)
    return split({{"w_gate", c.ffn}, {"w_up", c.ffn}});
  src.tensors.push_back(std::move(st));
  return absl::OkStatus();
}

}  // namespace

bool GgufCanonicalName(std::string_view gguf_name, std::string* canonical, int* layer) {
  std::string_view c;
  if (!MapTensorName(gguf_name, c, *layer)) return false;
  *canonical = std::string(c);
  return true;
}

absl::StatusOr<std::unique_ptr<ModelSource>> GgufToModelSource(const GgufFile& f,
                                                               const uint8_t* data, uint64_t size) {
  auto src = std::make_unique<ModelSource>();
  src->path = f.origin;
  src->format = "gguf";
  ModelConfig& c = src->config;

  absl::StatusOr<std::string> arch_name = f.GetString("general.architecture");
  if (!arch_name.ok()) return AsInvalid(arch_name.status());
  // llama.cpp's names of the sparse Qwen architectures and of gpt-oss;
  // mixtral files are "llama" files with experts (ReadExperts).
  absl::StatusOr<Arch> arch = *arch_name == "qwen2moe"   ? Arch::kQwen2Moe
                              : *arch_name == "qwen3moe" ? Arch::kQwen3Moe
                              : *arch_name == "gpt-oss"  ? Arch::kGptOss
                                                         : ParseArch(*arch_name);
  if (!arch.ok()) return Annotate(arch.status(), f.origin);
  c.arch = *arch;

  RETURN_IF_ERROR(ReadConfig(f, *arch_name, c));
  RETURN_IF_ERROR(ReadTokenizer(f, c, src->vocab, src->tokenizer, src->tokenizer_note));
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;

  const GgufTensorInfo *long_factors = nullptr, *short_factors = nullptr;
  for (const GgufTensorInfo& t : f.tensors) {
    if (t.end > size) return Bad(f, absl::StrCat("tensor '", t.name, "' lies past the data"));
    if (t.name == "rope_freqs.weight") {
      // Not a weight: llama3 frequency factors, folded into the config.
      RETURN_IF_ERROR(ReadLlama3Scaling(f, *arch_name, t, data, c));
      continue;
    }
    if (t.name == "rope_factors_long.weight" || t.name == "rope_factors_short.weight") {
      (t.name == "rope_factors_long.weight" ? long_factors : short_factors) = &t;
      continue;  // longrope divisors, folded into the config below
    }
    RETURN_IF_ERROR(AddTensor(f, t, data, *src));
  }
  RETURN_IF_ERROR(ReadLongRopeFactors(f, long_factors, short_factors, data, c));
  // The sparse layers: those with a router.
  for (const SourceTensor& t : src->tensors) {
    if (t.name == "router" && t.layer >= 0 && t.layer < c.n_layers && t.layer < kMaxLayers) {
      if (c.n_experts <= 0)
        return Bad(f, absl::StrCat("layer ", t.layer, " has a router but ", *arch_name,
                                   ".expert_count is missing"));
      c.SetMoeLayer(t.layer, true);
    }
  }

  RETURN_IF_ERROR(Annotate(ValidateConfig(c), f.origin));
  RETURN_IF_ERROR(CheckTensorSet(*src));
  return src;
}

absl::StatusOr<std::unique_ptr<ModelSource>> OpenGgufModel(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  ASSIGN_OR_RETURN(GgufFile parsed, ParseGguf(file->data(), file->size(), path));
  ASSIGN_OR_RETURN(std::unique_ptr<ModelSource> src,
                   GgufToModelSource(parsed, file->data(), file->size()));
  // Identity of the file for segment re-attach: path, size and mtime.
  const uint64_t size = file->size();
  const int64_t mtime = file->mtime_ns();
  uint64_t h = Fnv1a64(path.data(), path.size());
  h = Fnv1a64(&size, sizeof(size), h);
  h = Fnv1a64(&mtime, sizeof(mtime), h);
  src->fingerprint = h;
  src->files.push_back(std::move(file));
  return src;
}

}  // namespace paged
