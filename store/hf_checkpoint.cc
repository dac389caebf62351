#include "store/hf_checkpoint.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/dtype.h"
#include "common/segment_layout.h"
#include "common/status.h"
#include "store/hf_tokenizer_files.h"
#include "store/safetensors.h"

namespace paged {

namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------
// config.json

// Typed access to the keys of one JSON object. A key set to null counts as
// absent (HF writes "sliding_window": null and the like). Errors name the key
// (with `prefix`, e.g. "rope_scaling.") but not the file.
class KeyReader {
 public:
  KeyReader(const json& obj, std::string prefix) : obj_(obj), prefix_(std::move(prefix)) {}

  const json* Find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  bool Has(const char* key) const { return Find(key) != nullptr; }
  // Present and set to null (distinct from absent where a class default applies).
  bool IsNull(const char* key) const {
    auto it = obj_.find(key);
    return it != obj_.end() && it->is_null();
  }

  absl::StatusOr<int32_t> Int(const char* key) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing '", Name(key), "'"));
    return ToInt(key, *v);
  }
  absl::StatusOr<int32_t> Int(const char* key, int32_t def) const {
    const json* v = Find(key);
    return v == nullptr ? def : ToInt(key, *v);
  }
  absl::StatusOr<float> Float(const char* key) const {
    const json* v = Find(key);
    if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat("missing '", Name(key), "'"));
    return ToFloat(key, *v);
  }
  absl::StatusOr<float> Float(const char* key, float def) const {
    const json* v = Find(key);
    return v == nullptr ? def : ToFloat(key, *v);
  }
  absl::StatusOr<bool> Bool(const char* key, bool def) const {
    const json* v = Find(key);
    if (v == nullptr) return def;
    if (!v->is_boolean()) return WrongType(key, *v, "a boolean");
    return v->get<bool>();
  }
  // nullopt when absent.
  absl::StatusOr<std::optional<std::string>> String(const char* key) const {
    const json* v = Find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return WrongType(key, *v, "a string");
    return v->get<std::string>();
  }

  // A JSON integer (or a float with an integral value) that fits int32.
  absl::StatusOr<int32_t> ToInt(const char* key, const json& v) const {
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > uint64_t(INT32_MAX)) return OutOfRange(key, v);
      return int32_t(v.get<uint64_t>());
    }
    if (v.is_number_integer()) {
      const int64_t i = v.get<int64_t>();
      if (i < INT32_MIN || i > INT32_MAX) return OutOfRange(key, v);
      return int32_t(i);
    }
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d)) {
        if (d < double(INT32_MIN) || d > double(INT32_MAX)) return OutOfRange(key, v);
        return int32_t(d);
      }
    }
    return WrongType(key, v, "an integer");
  }
  absl::StatusOr<float> ToFloat(const char* key, const json& v) const {
    if (!v.is_number()) return WrongType(key, v, "a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > double(FLT_MAX)) return OutOfRange(key, v);
    return float(d);
  }
  absl::Status WrongType(const char* key, const json& v, const char* want) const {
    return absl::InvalidArgumentError(
        absl::StrCat("'", Name(key), "' is ", JsonTypeName(v), ", expected ", want));
  }

  std::string Name(const char* key) const { return prefix_ + key; }

 private:
  absl::Status OutOfRange(const char* key, const json& v) const {
    return absl::InvalidArgumentError(
        absl::StrCat("'", Name(key), "' value ", v.dump(), " is out of range"));
  }

  const json& obj_;
  std::string prefix_;
};

// HF architecture class names and model types of the models we support.
constexpr std::pair<std::string_view, Arch> kClassNames[] = {
    {"LlamaForCausalLM", Arch::kLlama},       {"MistralForCausalLM", Arch::kMistral},
    {"Qwen2ForCausalLM", Arch::kQwen2},       {"Qwen3ForCausalLM", Arch::kQwen3},
    {"Gemma2ForCausalLM", Arch::kGemma2},     {"Gemma3ForCausalLM", Arch::kGemma3},
    {"Phi3ForCausalLM", Arch::kPhi3},         {"MixtralForCausalLM", Arch::kMixtral},
    {"Qwen2MoeForCausalLM", Arch::kQwen2Moe}, {"Qwen3MoeForCausalLM", Arch::kQwen3Moe},
    {"GptOssForCausalLM", Arch::kGptOss},
};
constexpr std::string_view kSupportedClassNames =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "
    "Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM, "
    "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, GptOssForCausalLM";

std::optional<Arch> ArchFromClassName(std::string_view name) {
  for (const auto& [cls, arch] : kClassNames) {
    if (name == cls) return arch;
  }
  return std::nullopt;
}

// The model_type of a text model: our names, and gemma3_text for gemma3
// ("gemma3" alone is the multimodal wrapper, whose weights we do not read).
std::optional<Arch> ArchFromModelType(std::string_view type) {
  if (type == "gemma3_text") return Arch::kGemma3;
  if (type == "gemma3") return std::nullopt;
  absl::StatusOr<Arch> arch = ParseArch(type);
  return arch.ok() ? std::optional<Arch>(*arch) : std::nullopt;
}

// model_type when we know it, else architectures[0].
absl::StatusOr<Arch> ParseArchitecture(const KeyReader& r) {
  ASSIGN_OR_RETURN(std::optional<std::string> model_type, r.String("model_type"));
  std::optional<std::string> class_name;
  if (const json* a = r.Find("architectures")) {
    if (!a->is_array()) return r.WrongType("architectures", *a, "a list of strings");
    if (!a->empty()) {
      if (!(*a)[0].is_string())
        return absl::InvalidArgumentError(
            absl::StrCat("'architectures' holds ", JsonTypeName((*a)[0]), ", expected strings"));
      class_name = (*a)[0].get<std::string>();
    }
  }
  if (model_type) {
    if (std::optional<Arch> arch = ArchFromModelType(*model_type)) return *arch;
  }
  if (class_name) {
    if (std::optional<Arch> arch = ArchFromClassName(*class_name)) return *arch;
  }
  if (model_type == "gemma3")
    return absl::InvalidArgumentError(
        "unsupported architecture 'gemma3' (the multimodal Gemma3ForConditionalGeneration; "
        "its text model, gemma3_text / Gemma3ForCausalLM, is supported)");
  if (model_type)
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported architecture '", absl::CEscape(*model_type),
                     "' (supported: ", std::string(kSupportedArchs), ")"));
  if (class_name)
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported architecture '", absl::CEscape(*class_name),
                     "' (supported: ", std::string(kSupportedClassNames), ")"));
  return absl::InvalidArgumentError("missing 'model_type' and 'architectures'");
}

bool IsGemma(Arch a) { return a == Arch::kGemma2 || a == Arch::kGemma3; }
bool IsQwenMoe(Arch a) { return a == Arch::kQwen2Moe || a == Arch::kQwen3Moe; }
bool IsMoe(Arch a) { return a == Arch::kMixtral || IsQwenMoe(a) || a == Arch::kGptOss; }

// The experts: mixtral (num_local_experts, num_experts_per_tok, every layer
// sparse, its intermediate_size the experts', top-k renormalized), qwen2_moe /
// qwen3_moe (num_experts or num_local_experts, num_experts_per_tok, moe_intermediate_size,
// norm_topk_prob, the layers of decoder_sparse_step not in mlp_only_layers
// sparse; qwen2_moe's shared expert of shared_expert_intermediate_size), with
// the transformers config classes' defaults.
absl::Status ParseExperts(const KeyReader& r, ModelConfig* c) {
  if (c->arch == Arch::kGptOss) {
    // transformers' GptOssConfig / GptOssMLP: every layer sparse, experts of
    // intermediate_size, a router with a bias, top-k of its logits then a
    // softmax over those k (the same weights as a softmax over all,
    // renormalized), experts with biases and the clamped SwiGLU.
    ASSIGN_OR_RETURN(c->n_experts, r.Int("num_local_experts", 128));
    ASSIGN_OR_RETURN(c->n_experts_used, r.Int("num_experts_per_tok", 4));
    c->expert_ffn = c->ffn;
    c->norm_topk_prob = 1;
    c->router_bias = 1;
    c->expert_bias = 1;
    ASSIGN_OR_RETURN(c->swiglu_limit, r.Float("swiglu_limit", 7.f));
    ASSIGN_OR_RETURN(c->swiglu_alpha, r.Float("swiglu_alpha", 1.702f));
    if (!(c->swiglu_limit > 0.f))
      return absl::InvalidArgumentError(
          absl::StrCat("'swiglu_limit' ", c->swiglu_limit, " must be positive"));
    for (int l = 0; l < c->n_layers; ++l) c->SetMoeLayer(l, c->n_experts > 0);
    return absl::OkStatus();
  }
  if (c->arch == Arch::kMixtral) {
    ASSIGN_OR_RETURN(c->n_experts, r.Int("num_local_experts", 8));
    ASSIGN_OR_RETURN(c->n_experts_used, r.Int("num_experts_per_tok", 2));
    c->expert_ffn = c->ffn;
    c->norm_topk_prob = 1;
    for (int l = 0; l < c->n_layers; ++l) c->SetMoeLayer(l, c->n_experts > 0);
    return absl::OkStatus();
  }
  const bool q2 = c->arch == Arch::kQwen2Moe;
  // Hub checkpoints say num_experts; transformers 5 saves the same as
  // num_local_experts (its attribute name for every MoE class).
  ASSIGN_OR_RETURN(c->n_experts, r.Int(r.Has("num_experts") ? "num_experts" : "num_local_experts",
                                       q2 ? 60 : 128));
  ASSIGN_OR_RETURN(c->n_experts_used, r.Int("num_experts_per_tok", q2 ? 4 : 8));
  ASSIGN_OR_RETURN(c->expert_ffn, r.Int("moe_intermediate_size", q2 ? 1408 : 768));
  if (q2) {
    ASSIGN_OR_RETURN(c->shared_expert_ffn, r.Int("shared_expert_intermediate_size", 5632));
  }
  ASSIGN_OR_RETURN(const bool norm, r.Bool("norm_topk_prob", false));
  c->norm_topk_prob = norm ? 1 : 0;
  ASSIGN_OR_RETURN(const int32_t step, r.Int("decoder_sparse_step", 1));
  if (step <= 0)
    return absl::InvalidArgumentError(
        absl::StrCat("'decoder_sparse_step' ", step, " must be positive"));
  std::vector<bool> dense(size_t(c->n_layers), false);
  if (const json* only = r.Find("mlp_only_layers")) {
    if (!only->is_array()) return r.WrongType("mlp_only_layers", *only, "a list of layer indices");
    for (const json& v : *only) {
      ASSIGN_OR_RETURN(const int32_t l, r.ToInt("mlp_only_layers", v));
      if (l < 0 || l >= c->n_layers)
        return absl::InvalidArgumentError(
            absl::StrCat("'mlp_only_layers' names layer ", l, " outside [0, ", c->n_layers, ")"));
      dense[size_t(l)] = true;
    }
  }
  for (int l = 0; l < c->n_layers; ++l)
    c->SetMoeLayer(l, c->n_experts > 0 && !dense[size_t(l)] && (l + 1) % step == 0);
  if (c->n_experts == 0) c->n_experts_used = c->expert_ffn = c->shared_expert_ffn = 0;
  return absl::OkStatus();
}

// RoPE covers the whole head: partial_rotary_factor (top level, or inside the
// rope settings in transformers 5) must be 1 when present.
absl::Status CheckFullRotary(const KeyReader& r) {
  ASSIGN_OR_RETURN(const float f, r.Float("partial_rotary_factor", 1.f));
  if (f != 1.f)
    return absl::InvalidArgumentError(
        absl::StrCat("'", r.Name("partial_rotary_factor"), "' ", f,
                     " is not supported (RoPE must rotate the whole head)"));
  return absl::OkStatus();
}

// yarn's mscale: 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1), as transformers.
double YarnMscale(double scale, double mscale) {
  return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// One RoPE settings object: rope_scaling (transformers 4.x, theta outside it)
// or rope_parameters (5.x, theta inside). `top` is the whole config.
absl::Status ParseRopeObject(const KeyReader& s, const KeyReader& top, bool v5, ModelConfig* c) {
  const std::string key = s.Name("");  // "rope_scaling." / "rope_parameters."
  const std::string field = key.substr(0, key.size() - 1);
  if (v5) {
    ASSIGN_OR_RETURN(c->rope_theta, s.Float("rope_theta", c->rope_theta));
  }
  RETURN_IF_ERROR(CheckFullRotary(s));
  ASSIGN_OR_RETURN(std::optional<std::string> type, s.String("rope_type"));
  if (!type) {
    ASSIGN_OR_RETURN(type, s.String("type"));
  }
  if (!type) {
    if (v5) return absl::OkStatus();  // theta only
    return absl::InvalidArgumentError(absl::StrCat("'", field, "' lacks 'rope_type'"));
  }
  // The original (pre-extension) context: inside the object, else top level
  // (phi3 4.x), else max_position_embeddings.
  auto original = [&]() -> absl::StatusOr<int32_t> {
    ASSIGN_OR_RETURN(const int32_t top_orig,
                     top.Int("original_max_position_embeddings", c->max_context));
    return s.Int("original_max_position_embeddings", top_orig);
  };
  if (*type == "default") return absl::OkStatus();
  if (*type == "llama3") {
    c->rope_scaling = RopeScaling::kLlama3;
    ASSIGN_OR_RETURN(c->rope_factor, s.Float("factor"));
    ASSIGN_OR_RETURN(c->rope_low_freq_factor, s.Float("low_freq_factor", 1.f));
    ASSIGN_OR_RETURN(c->rope_high_freq_factor, s.Float("high_freq_factor", 4.f));
    ASSIGN_OR_RETURN(c->rope_original_max_pos, s.Int("original_max_position_embeddings"));
    return absl::OkStatus();
  }
  if (*type == "linear" || *type == "dynamic") {
    c->rope_scaling = *type == "linear" ? RopeScaling::kLinear : RopeScaling::kDynamic;
    ASSIGN_OR_RETURN(c->rope_factor, s.Float("factor"));
    return absl::OkStatus();
  }
  if (*type == "yarn") {
    // transformers 5's _compute_yarn_parameters.
    c->rope_scaling = RopeScaling::kYarn;
    ASSIGN_OR_RETURN(c->rope_original_max_pos, original());
    if (s.Has("factor")) {
      ASSIGN_OR_RETURN(c->rope_factor, s.Float("factor"));
    } else {
      if (c->rope_original_max_pos <= 0)
        return absl::InvalidArgumentError(absl::StrCat("missing '", key, "factor'"));
      c->rope_factor = float(double(c->max_context) / c->rope_original_max_pos);
    }
    ASSIGN_OR_RETURN(const float beta_fast, s.Float("beta_fast", 0.f));
    ASSIGN_OR_RETURN(const float beta_slow, s.Float("beta_slow", 0.f));
    c->rope_beta_fast = beta_fast != 0.f ? beta_fast : 32.f;  // transformers: `or 32`
    c->rope_beta_slow = beta_slow != 0.f ? beta_slow : 1.f;
    ASSIGN_OR_RETURN(const bool truncate, s.Bool("truncate", true));
    c->rope_yarn_truncate = truncate ? 1 : 0;
    if (s.Has("attention_factor")) {
      ASSIGN_OR_RETURN(c->rope_attn_factor, s.Float("attention_factor"));
    } else {
      ASSIGN_OR_RETURN(const float mscale, s.Float("mscale", 0.f));
      ASSIGN_OR_RETURN(const float mscale_all_dim, s.Float("mscale_all_dim", 0.f));
      const double f = c->rope_factor;
      c->rope_attn_factor = float(mscale != 0.f && mscale_all_dim != 0.f
                                      ? YarnMscale(f, mscale) / YarnMscale(f, mscale_all_dim)
                                      : YarnMscale(f, 1.0));
    }
    // The context yarn extends to (transformers keeps max_position_embeddings
    // and does not stop there; vLLM serves factor * original).
    if (c->rope_original_max_pos > 0 && c->rope_factor > 1.f) {
      const double extended = double(c->rope_factor) * c->rope_original_max_pos;
      if (extended > c->max_context && extended <= double(1 << 24))
        c->max_context = int32_t(extended);
    }
    return absl::OkStatus();
  }
  if (*type == "longrope" || *type == "su") {
    // transformers' _compute_longrope_parameters; the long or short factors
    // once for the whole context (see ModelConfig::rope_factors).
    c->rope_scaling = RopeScaling::kLongRope;
    ASSIGN_OR_RETURN(c->rope_original_max_pos, original());
    if (c->rope_original_max_pos <= 0)
      return absl::InvalidArgumentError(
          absl::StrCat("'", key, "original_max_position_embeddings' must be positive"));
    double factor = double(c->max_context) / c->rope_original_max_pos;
    if (s.Has("factor")) {
      ASSIGN_OR_RETURN(const float f, s.Float("factor"));
      factor = f;
    }
    if (s.Has("attention_factor")) {
      ASSIGN_OR_RETURN(c->rope_attn_factor, s.Float("attention_factor"));
    } else {
      c->rope_attn_factor =
          factor <= 1.0
              ? 1.f
              : float(std::sqrt(1 + std::log(factor) / std::log(double(c->rope_original_max_pos))));
    }
    const bool use_long = c->max_context > c->rope_original_max_pos;
    const char* which = use_long ? "long_factor" : "short_factor";
    const json* factors = s.Find(which);
    if (factors == nullptr)
      return absl::InvalidArgumentError(absl::StrCat("missing '", key, which, "'"));
    if (!factors->is_array()) return s.WrongType(which, *factors, "a list of numbers");
    if (factors->size() != size_t(c->head_dim / 2) || c->head_dim / 2 > kMaxRopeFactors)
      return absl::InvalidArgumentError(absl::StrCat(
          "'", key, which, "' has ", factors->size(), " values, expected head_dim / 2 = ",
          c->head_dim / 2, " (at most ", kMaxRopeFactors, ")"));
    c->n_rope_factors = int32_t(factors->size());
    for (size_t i = 0; i < factors->size(); ++i) {
      ASSIGN_OR_RETURN(c->rope_factors[i], s.ToFloat(which, (*factors)[i]));
    }
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unsupported ", field, " type '", absl::CEscape(*type),
                   "' (supported: default, linear, dynamic, yarn, longrope, llama3)"));
}

// RoPE settings in the forms HF writes:
//   transformers 4.x: top-level "rope_theta" and "rope_scaling" (null,
//     {"rope_type" | "type": ...}), gemma3's "rope_local_base_freq";
//   transformers 5.x: one "rope_parameters" object holding "rope_theta" and
//     "rope_type", or (gemma3) one such object per layer type:
//     {"full_attention": {...}, "sliding_attention": {...}}.
// The caller has read max_position_embeddings and head_dim.
absl::Status ParseRope(const KeyReader& r, ModelConfig* c) {
  const bool oss = c->arch == Arch::kGptOss;
  ASSIGN_OR_RETURN(c->rope_theta, r.Float("rope_theta", oss ? 150000.f : 10000.f));
  RETURN_IF_ERROR(CheckFullRotary(r));
  if (oss && !r.Has("rope_parameters") && !r.Has("rope_scaling")) {
    // GptOssConfig's default: yarn x32 over 4096 positions, not truncated.
    const json def = {{"rope_type", "yarn"}, {"factor", 32.0},
                      {"beta_fast", 32.0},   {"beta_slow", 1.0},
                      {"truncate", false},   {"original_max_position_embeddings", 4096}};
    return ParseRopeObject(KeyReader(def, "rope_scaling."), r, /*v5=*/false, c);
  }
  if (c->arch == Arch::kGemma3) {
    ASSIGN_OR_RETURN(c->rope_local_theta, r.Float("rope_local_base_freq", 10000.f));
  }
  if (const json* p = r.Find("rope_parameters")) {
    if (!p->is_object()) return r.WrongType("rope_parameters", *p, "an object or null");
    const KeyReader params(*p, "rope_parameters.");
    if (!params.Has("full_attention") && !params.Has("sliding_attention"))
      return ParseRopeObject(params, r, /*v5=*/true, c);
    // Per layer type: full layers as any model, sliding ones plain RoPE.
    if (const json* full = params.Find("full_attention")) {
      if (!full->is_object()) return params.WrongType("full_attention", *full, "an object");
      RETURN_IF_ERROR(
          ParseRopeObject(KeyReader(*full, "rope_parameters.full_attention."), r, true, c));
    }
    if (const json* sliding = params.Find("sliding_attention")) {
      if (!sliding->is_object())
        return params.WrongType("sliding_attention", *sliding, "an object");
      const KeyReader s(*sliding, "rope_parameters.sliding_attention.");
      ASSIGN_OR_RETURN(std::optional<std::string> type, s.String("rope_type"));
      if (type && *type != "default")
        return absl::InvalidArgumentError(
            absl::StrCat("unsupported rope_parameters.sliding_attention type '",
                         absl::CEscape(*type), "' (supported: default)"));
      RETURN_IF_ERROR(CheckFullRotary(s));
      ASSIGN_OR_RETURN(
          c->rope_local_theta,
          s.Float("rope_theta", c->rope_local_theta > 0 ? c->rope_local_theta : c->rope_theta));
    }
    return absl::OkStatus();
  }
  const json* v = r.Find("rope_scaling");
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) return r.WrongType("rope_scaling", *v, "an object or null");
  return ParseRopeObject(KeyReader(*v, "rope_scaling."), r, /*v5=*/false, c);
}

// The MLP activation: hidden_activation (gemma), else hidden_act.
absl::Status ParseActivation(const KeyReader& r, ModelConfig* c) {
  const char* key = r.Has("hidden_activation") ? "hidden_activation" : "hidden_act";
  ASSIGN_OR_RETURN(std::optional<std::string> act, r.String(key));
  if (!act) act = IsGemma(c->arch) ? "gelu_pytorch_tanh" : "silu";
  if (*act == "silu" || *act == "swish") {
    c->mlp_act = MlpActivation::kSilu;
  } else if (*act == "gelu_pytorch_tanh" || *act == "gelu_tanh" || *act == "gelu_new") {
    c->mlp_act = MlpActivation::kGeluTanh;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported '", key, "' '", absl::CEscape(*act),
                                                   "' (supported: silu, gelu_pytorch_tanh)"));
  }
  return absl::OkStatus();
}

// A soft-cap: the key's value, `def` when the key is absent (the class
// default), none when it is null.
absl::StatusOr<float> SoftCap(const KeyReader& r, const char* key, float def) {
  if (r.IsNull(key)) return 0.f;
  return r.Float(key, def);
}

// The sliding window and which layers use it: "layer_types" when present
// (transformers 5 writes it for every model that has sliding layers), else
// each architecture's rule.
absl::Status ParseSlidingWindow(const KeyReader& r, ModelConfig* c) {
  int32_t window = 0;
  switch (c->arch) {
    case Arch::kLlama:
      return absl::OkStatus();  // llama has no window
    case Arch::kQwen2:
    case Arch::kQwen3:
    case Arch::kQwen2Moe:
    case Arch::kQwen3Moe: {
      // Qwen configs always carry sliding_window; it applies only with
      // use_sliding_window, to the layers from max_window_layers on.
      ASSIGN_OR_RETURN(const bool use, r.Bool("use_sliding_window", false));
      if (use) {
        ASSIGN_OR_RETURN(window, r.Int("sliding_window", 0));
      }
      break;
    }
    case Arch::kGemma2:
    case Arch::kGemma3: {
      ASSIGN_OR_RETURN(window, r.Int("sliding_window", 4096));
      break;
    }
    case Arch::kGptOss: {
      ASSIGN_OR_RETURN(window, r.Int("sliding_window", 128));
      break;
    }
    default: {
      ASSIGN_OR_RETURN(window, r.Int("sliding_window", 0));
    }
  }
  if (window < 0)
    return absl::InvalidArgumentError(absl::StrCat("'sliding_window' ", window, " is negative"));
  c->sliding_window = window;
  if (window == 0) return absl::OkStatus();
  if (const json* types = r.Find("layer_types")) {
    if (!types->is_array() || types->size() != size_t(c->n_layers))
      return absl::InvalidArgumentError(
          absl::StrCat("'layer_types' must list num_hidden_layers = ", c->n_layers, " strings"));
    for (int l = 0; l < c->n_layers; ++l) {
      const json& t = (*types)[size_t(l)];
      const std::string s = t.is_string() ? t.get<std::string>() : t.dump();
      if (s != "sliding_attention" && s != "full_attention")
        return absl::InvalidArgumentError(
            absl::StrCat("'layer_types[", l, "]' is '", absl::CEscape(s),
                         "' (supported: full_attention, sliding_attention)"));
      c->SetSlidingLayer(l, s == "sliding_attention");
    }
    return absl::OkStatus();
  }
  for (int l = 0; l < c->n_layers; ++l) {
    bool sliding = true;  // mistral, phi3: every layer
    if (c->arch == Arch::kGemma2 || c->arch == Arch::kGptOss) {
      sliding = l % 2 == 0;
    } else if (c->arch == Arch::kGemma3) {
      ASSIGN_OR_RETURN(const int32_t pattern_private, r.Int("_sliding_window_pattern", 6));
      ASSIGN_OR_RETURN(const int32_t pattern, r.Int("sliding_window_pattern", pattern_private));
      if (pattern <= 0)
        return absl::InvalidArgumentError(
            absl::StrCat("'sliding_window_pattern' ", pattern, " must be positive"));
      sliding = (l + 1) % pattern != 0;
    } else if (c->arch == Arch::kQwen2 || c->arch == Arch::kQwen3 || IsQwenMoe(c->arch)) {
      ASSIGN_OR_RETURN(const int32_t from, r.Int("max_window_layers", 28));
      sliding = l >= from;
    }
    c->SetSlidingLayer(l, sliding);
  }
  return absl::OkStatus();
}

// bos_token_id: an int or absent; eos_token_id: an int, a list of ints, or absent.
absl::Status ParseSpecialTokens(const KeyReader& r, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->bos_id, r.Int("bos_token_id", -1));
  const json* eos = r.Find("eos_token_id");
  if (eos == nullptr) return absl::OkStatus();
  if (!eos->is_array()) {
    ASSIGN_OR_RETURN(c->eos_ids[0], r.ToInt("eos_token_id", *eos));
    c->n_eos = 1;
    return absl::OkStatus();
  }
  if (eos->size() > size_t(kMaxEosIds))
    return absl::InvalidArgumentError(absl::StrCat("'eos_token_id' lists ", eos->size(),
                                                   " ids; at most ", kMaxEosIds, " are supported"));
  for (const json& id : *eos) {
    ASSIGN_OR_RETURN(c->eos_ids[c->n_eos], r.ToInt("eos_token_id", id));
    ++c->n_eos;
  }
  return absl::OkStatus();
}

// ParseHfConfig without the origin prefix on errors.
absl::StatusOr<ModelConfig> ParseConfigJson(std::string_view text) {
  ASSIGN_OR_RETURN(json j, ParseJsonText(text, "config"));
  if (!j.is_object())
    return absl::InvalidArgumentError(
        absl::StrCat("config is ", JsonTypeName(j), ", expected a JSON object"));
  const KeyReader r(j, "");
  ModelConfig c;
  ASSIGN_OR_RETURN(c.arch, ParseArchitecture(r));
  const bool gemma = IsGemma(c.arch);
  ASSIGN_OR_RETURN(c.hidden, r.Int("hidden_size"));
  ASSIGN_OR_RETURN(c.ffn, r.Int("intermediate_size"));
  ASSIGN_OR_RETURN(c.n_layers, r.Int("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.n_heads, r.Int("num_attention_heads"));
  ASSIGN_OR_RETURN(c.n_kv_heads, r.Int("num_key_value_heads", c.n_heads));
  // ValidateConfig reports a bad n_heads; avoid dividing by it here.
  ASSIGN_OR_RETURN(c.head_dim, r.Int("head_dim", c.arch == Arch::kGptOss ? 64
                                                 : c.n_heads > 0         ? c.hidden / c.n_heads
                                                                         : 0));
  ASSIGN_OR_RETURN(c.vocab, r.Int("vocab_size"));
  ASSIGN_OR_RETURN(c.max_context, r.Int("max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(c.norm_eps, r.Float("rms_norm_eps", 1e-6f));
  if (c.n_layers <= 0 || c.n_layers > kMaxLayers || c.head_dim <= 0 || c.head_dim > 1024)
    RETURN_IF_ERROR(ValidateConfig(c));  // sizes the parsers below rely on
  c.rope_style = RopeStyle::kHalves;
  RETURN_IF_ERROR(ParseRope(r, &c));
  // Gemma ties its embeddings unless the config says otherwise.
  ASSIGN_OR_RETURN(const bool tied, r.Bool("tie_word_embeddings", gemma));
  c.tied_embeddings = tied ? 1 : 0;
  RETURN_IF_ERROR(ParseSpecialTokens(r, &c));
  RETURN_IF_ERROR(ParseSlidingWindow(r, &c));
  RETURN_IF_ERROR(ParseActivation(r, &c));

  c.qkv_bias = c.arch == Arch::kQwen2 ? 1 : 0;
  if (c.arch == Arch::kQwen2Moe) {  // transformers 5's qkv_bias; always in 4.x
    ASSIGN_OR_RETURN(const bool bias, r.Bool("qkv_bias", true));
    c.qkv_bias = bias ? 1 : 0;
  }
  if (c.arch == Arch::kGptOss) {  // attention_bias: q/k/v and o; a sink per head
    ASSIGN_OR_RETURN(const bool bias, r.Bool("attention_bias", true));
    c.qkv_bias = c.o_bias = bias ? 1 : 0;
    c.attn_sinks = 1;
  }
  c.qk_norm =
      c.arch == Arch::kQwen3 || c.arch == Arch::kGemma3 || c.arch == Arch::kQwen3Moe ? 1 : 0;
  if (IsMoe(c.arch)) RETURN_IF_ERROR(ParseExperts(r, &c));
  if (gemma) {
    // transformers' Gemma2/Gemma3 text models, with their class defaults.
    c.sandwich_norm = 1;
    c.embed_scale = float(std::sqrt(double(c.hidden)));
    ASSIGN_OR_RETURN(const float scalar, r.Float("query_pre_attn_scalar", 256.f));
    if (!(scalar > 0.f))
      return absl::InvalidArgumentError(
          absl::StrCat("'query_pre_attn_scalar' ", scalar, " must be positive"));
    c.attn_scale = float(1.0 / std::sqrt(double(scalar)));
    const bool g2 = c.arch == Arch::kGemma2;
    ASSIGN_OR_RETURN(c.attn_softcap, SoftCap(r, "attn_logit_softcapping", g2 ? 50.f : 0.f));
    ASSIGN_OR_RETURN(c.final_softcap, SoftCap(r, "final_logit_softcapping", g2 ? 30.f : 0.f));
  }
  RETURN_IF_ERROR(ValidateConfig(c));
  return c;
}

// ---------------------------------------------------------------------------
// Tensor names

constexpr std::pair<std::string_view, std::string_view> kGlobalNames[] = {
    {"model.embed_tokens.weight", "tok_embd"},
    {"model.norm.weight", "output_norm"},
    {"lm_head.weight", "output"},
};

// Suffixes after "model.layers.{i}." that every architecture shares.
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm"}, {"self_attn.q_proj.weight", "wq"},
    {"self_attn.k_proj.weight", "wk"},       {"self_attn.v_proj.weight", "wv"},
    {"self_attn.o_proj.weight", "wo"},       {"self_attn.q_proj.bias", "bq"},
    {"self_attn.k_proj.bias", "bk"},         {"self_attn.v_proj.bias", "bv"},
    {"self_attn.q_norm.weight", "q_norm"},   {"self_attn.k_norm.weight", "k_norm"},
    {"mlp.gate_proj.weight", "w_gate"},      {"mlp.up_proj.weight", "w_up"},
    {"mlp.down_proj.weight", "w_down"},
};
// llama-family block norms.
constexpr std::pair<std::string_view, std::string_view> kLlamaNormNames[] = {
    {"post_attention_layernorm.weight", "ffn_norm"},
};
// Gemma's sandwich: its post_attention_layernorm normalises the attention
// OUTPUT; the MLP input is pre_feedforward_layernorm.
constexpr std::pair<std::string_view, std::string_view> kGemmaNormNames[] = {
    {"post_attention_layernorm.weight", "post_attn_norm"},
    {"pre_feedforward_layernorm.weight", "ffn_norm"},
    {"post_feedforward_layernorm.weight", "post_ffn_norm"},
};
// Phi-3's fused projections, split at load (SplitRows).
constexpr std::pair<std::string_view, std::string_view> kPhi3FusedNames[] = {
    {"self_attn.qkv_proj.weight", "qkv"},
    {"mlp.gate_up_proj.weight", "gate_up"},
};

// Buffers some exporters save that we recompute: harmless to skip.
bool IsSkippedName(std::string_view name) {
  for (std::string_view s :
       {"rotary_emb.inv_freq", "rotary_emb.cos_cached", "rotary_emb.sin_cached"}) {
    if (name.ends_with(s) && (name.size() == s.size() || name[name.size() - s.size() - 1] == '.'))
      return true;
  }
  return false;
}

struct CanonicalName {
  std::string_view name;
  int layer = -1;
  int expert = -1;  // exp_* tensors
};

// The tensors of a sparse MLP, after "model.layers.{i}.": the router, the
// shared expert (qwen2_moe), the experts one by one ("mlp.experts.{e}.
// gate_proj.weight"; mixtral 4.x "block_sparse_moe.experts.{e}.w1.weight")
// or fused as transformers 5 keeps them ("mlp.experts.gate_up_proj"
// [E, 2F, H], "mlp.experts.down_proj" [E, H, F], split at load).
constexpr std::pair<std::string_view, std::string_view> kMoeNames[] = {
    {"mlp.gate.weight", "router"},
    {"block_sparse_moe.gate.weight", "router"},
    {"mlp.shared_expert.gate_proj.weight", "shexp_gate"},
    {"mlp.shared_expert.up_proj.weight", "shexp_up"},
    {"mlp.shared_expert.down_proj.weight", "shexp_down"},
    {"mlp.shared_expert_gate.weight", "shexp_gate_inp"},
    {"mlp.experts.gate_up_proj", "fused_gate_up"},
    {"mlp.experts.gate_up_proj.weight", "fused_gate_up"},
    {"mlp.experts.down_proj", "fused_down"},
    {"mlp.experts.down_proj.weight", "fused_down"},
};
// One expert's matrices, after "{prefix}.experts.{e}.".
constexpr std::pair<std::string_view, std::string_view> kExpertNames[] = {
    {"gate_proj.weight", "exp_gate"}, {"up_proj.weight", "exp_up"},
    {"down_proj.weight", "exp_down"}, {"w1.weight", "exp_gate"},
    {"w3.weight", "exp_up"},          {"w2.weight", "exp_down"},
};

// gpt-oss's tensors beyond llama's, after "model.layers.{i}.": the o bias,
// the sinks, the router with its bias, and the experts fused as
// transformers keeps them: gate_up_proj [E, H, 2F] (x @ W: the transpose of
// a linear layer's weight, gate and up interleaved along the last dim),
// gate_up_proj_bias [E, 2F], down_proj [E, F, H], down_proj_bias [E, H]; or,
// in the released checkpoints, MXFP4 blocks [E, rows, cols / 32, 16] and
// scales [E, rows, cols / 32] of the linear-layer orientation (rows
// 2j / 2j + 1 of gate_up: gate / up j). The oss_* names are split at load
// (GptOssExperts).
constexpr std::pair<std::string_view, std::string_view> kGptOssNames[] = {
    {"self_attn.o_proj.bias", "bo"},
    {"self_attn.sinks", "attn_sinks"},
    {"mlp.router.weight", "router"},
    {"mlp.router.bias", "router_b"},
    {"mlp.experts.gate_up_proj", "oss_gate_up"},
    {"mlp.experts.gate_up_proj_bias", "oss_gate_up_b"},
    {"mlp.experts.down_proj", "oss_down"},
    {"mlp.experts.down_proj_bias", "exp_down_b"},
    {"mlp.experts.gate_up_proj_blocks", "oss_gate_up_blocks"},
    {"mlp.experts.gate_up_proj_scales", "oss_gate_up_scales"},
    {"mlp.experts.down_proj_blocks", "oss_down_blocks"},
    {"mlp.experts.down_proj_scales", "oss_down_scales"},
};

// A sparse MLP's tensor: {name, expert} (expert -1 for the others).
std::optional<std::pair<std::string_view, int>> MoeName(std::string_view suffix) {
  for (const auto& [from, to] : kMoeNames) {
    if (suffix == from) return std::pair{to, -1};
  }
  for (std::string_view prefix : {"mlp.experts.", "block_sparse_moe.experts."}) {
    if (!suffix.starts_with(prefix)) continue;
    std::string_view rest = suffix.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot == rest.npos || dot == 0 || rest[0] < '0' || rest[0] > '9') return std::nullopt;
    int e = -1;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + dot, e);
    if (ec != std::errc() || end != rest.data() + dot) return std::nullopt;
    for (const auto& [from, to] : kExpertNames) {
      if (rest.substr(dot + 1) == from) return std::pair{to, e};
    }
  }
  return std::nullopt;
}

std::optional<std::string_view> LayerName(std::string_view suffix, Arch arch) {
  auto find = [&](const auto& table) -> std::optional<std::string_view> {
    for (const auto& [from, to] : table) {
      if (suffix == from) return to;
    }
    return std::nullopt;
  };
  if (auto n = find(kLayerNames)) return n;
  if (auto n = IsGemma(arch) ? find(kGemmaNormNames) : find(kLlamaNormNames)) return n;
  if (arch == Arch::kPhi3) return find(kPhi3FusedNames);
  if (arch == Arch::kGptOss) return find(kGptOssNames);
  return std::nullopt;
}

// The canonical name of an HF tensor name; nullopt for a name we skip.
absl::StatusOr<std::optional<CanonicalName>> MapTensorName(std::string_view hf,
                                                           const ModelConfig& c) {
  if (IsSkippedName(hf)) return std::nullopt;
  if (hf == "lm_head.weight" && c.tied_embeddings) return std::nullopt;  // tied: tok_embd serves
  for (const auto& [from, to] : kGlobalNames) {
    if (hf == from) return CanonicalName{to, -1};
  }
  if (std::string_view rest = hf; rest.starts_with("model.layers.")) {
    rest.remove_prefix(std::string_view("model.layers.").size());
    // "{i}.suffix" with i plain decimal digits.
    const size_t dot = rest.find('.');
    const std::string_view digits = rest.substr(0, dot);
    int layer = -1;
    const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), layer);
    if (dot != rest.npos && !digits.empty() && digits[0] != '+' && digits[0] != '-' &&
        ec == std::errc() && end == digits.data() + digits.size()) {
      if (std::optional<std::string_view> to = LayerName(rest.substr(dot + 1), c.arch)) {
        if (layer >= c.n_layers)
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor '", absl::CEscape(std::string(hf)), "': layer ", layer, " outside [0, ",
              c.n_layers, ") (num_hidden_layers is ", c.n_layers, ")"));
        return CanonicalName{*to, layer};
      }
      if (IsMoe(c.arch)) {
        if (auto moe = MoeName(rest.substr(dot + 1))) {
          if (layer >= c.n_layers || moe->second >= c.n_experts)
            return absl::InvalidArgumentError(
                absl::StrCat("tensor '", absl::CEscape(std::string(hf)), "': layer ", layer,
                             " or expert ", moe->second, " outside the config's ", c.n_layers,
                             " layers of ", c.n_experts, " experts"));
          return CanonicalName{moe->first, layer, moe->second};
        }
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown tensor '", absl::CEscape(std::string(hf)),
                                                 "' (not a weight of a ",
                                                 std::string(ArchName(c.arch)), " model)"));
}

absl::StatusOr<SourceType> MapDType(const SafetensorsTensor& t) {
  if (t.dtype == "F32") return SourceType::kF32;
  if (t.dtype == "F16") return SourceType::kF16;
  if (t.dtype == "BF16") return SourceType::kBF16;
  return absl::InvalidArgumentError(absl::StrCat("unsupported dtype ", t.dtype, " for tensor '",
                                                 absl::CEscape(t.name),
                                                 "' (supported: F32, F16, BF16)"));
}

// Splits a fused [sum(parts), cols] matrix by rows into the named parts
// (rows are contiguous in the file, so each part points into it).
absl::Status SplitRows(const SafetensorsTensor& t, const SourceTensor& whole,
                       std::initializer_list<std::pair<const char*, int64_t>> parts,
                       ModelSource* src) {
  int64_t total = 0;
  std::string want;
  for (const auto& [name, rows] : parts) {
    total += rows;
    absl::StrAppend(&want, want.empty() ? "" : " + ", rows);
  }
  if (whole.rows != total || whole.rows <= 0 || whole.bytes % uint64_t(whole.rows) != 0)
    return absl::InvalidArgumentError(absl::StrCat("tensor '", absl::CEscape(t.name), "' has ",
                                                   whole.rows, " rows; the config implies ", want,
                                                   " = ", total));
  const uint64_t row_bytes = whole.bytes / uint64_t(whole.rows);
  int64_t row0 = 0;
  for (const auto& [name, rows] : parts) {
    SourceTensor s = whole;
    s.name = name;
    s.rows = rows;
    s.data = whole.data + uint64_t(row0) * row_bytes;
    s.bytes = uint64_t(rows) * row_bytes;
    src->tensors.push_back(std::move(s));
    row0 += rows;
  }
  return absl::OkStatus();
}

// Splits transformers 5's fused experts into one tensor per expert and
// matrix: gate_up_proj [E, 2F, H] (gate rows first, then up, as its
// forward's chunk(2)) and down_proj [E, H, F]; each expert's rows are
// contiguous in the file.
absl::Status SplitExperts(const SafetensorsTensor& t, const SourceTensor& whole, ModelSource* src) {
  const ModelConfig& c = src->config;
  const bool gate_up = whole.name == "fused_gate_up";
  const int64_t rows = gate_up ? 2 * int64_t(c.expert_ffn) : c.hidden;
  const int64_t cols = gate_up ? c.hidden : c.expert_ffn;
  if (t.shape.size() != 3 || t.shape[0] != c.n_experts || t.shape[1] != rows || t.shape[2] != cols)
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", absl::CEscape(t.name), "' has shape [", absl::StrJoin(t.shape, ", "),
        "] but the config implies [", c.n_experts, ", ", rows, ", ", cols, "]"));
  const uint64_t per_expert = whole.bytes / uint64_t(c.n_experts);
  for (int e = 0; e < c.n_experts; ++e) {
    const uint8_t* at = whole.data + uint64_t(e) * per_expert;
    const uint64_t half = per_expert / 2;
    auto part = [&](const char* name, const uint8_t* data, int64_t r, uint64_t bytes) {
      SourceTensor s = whole;
      s.name = name;
      s.expert = e;
      s.rows = r;
      s.cols = cols;
      s.data = data;
      s.bytes = bytes;
      src->tensors.push_back(std::move(s));
    };
    if (gate_up) {
      part("exp_gate", at, c.expert_ffn, half);
      part("exp_up", at + half, c.expert_ffn, half);
    } else {
      part("exp_down", at, rows, per_expert);
    }
  }
  return absl::OkStatus();
}

absl::Status ShapeError(const SafetensorsTensor& t, std::initializer_list<int64_t> want) {
  return absl::InvalidArgumentError(
      absl::StrCat("tensor '", absl::CEscape(t.name), "' has shape [", absl::StrJoin(t.shape, ", "),
                   "] but the config implies [", absl::StrJoin(want, ", "), "]"));
}

bool ShapeIs(const SafetensorsTensor& t, std::initializer_list<int64_t> want) {
  return t.shape.size() == want.size() && std::equal(want.begin(), want.end(), t.shape.begin());
}

// gpt-oss's fused experts (f32 / f16 / bf16) as strided views into the
// file, one per expert and matrix, nothing copied: gate_up_proj [E, H, 2F]
// (x @ W) gives exp_gate / exp_up [F, H], the transposes of its even / odd
// columns; down_proj [E, F, H] gives exp_down [H, F]; gate_up_proj_bias
// [E, 2F] gives exp_gate_b / exp_up_b [E, F], its even / odd columns.
absl::Status SplitGptOssExperts(const SafetensorsTensor& t, const SourceTensor& whole,
                                ModelSource* src) {
  const ModelConfig& c = src->config;
  const int64_t E = c.n_experts, H = c.hidden, F = c.expert_ffn;
  const uint64_t es = whole.type == SourceType::kF32 ? 4 : 2;
  if (whole.name == "oss_gate_up_b") {
    if (!ShapeIs(t, {E, 2 * F})) return ShapeError(t, {E, 2 * F});
    for (int k = 0; k < 2; ++k) {
      SourceTensor v = whole;
      v.name = k == 0 ? "exp_gate_b" : "exp_up_b";
      v.rows = E;
      v.cols = F;
      v.data = whole.data + uint64_t(k) * es;
      v.row_stride = uint64_t(2 * F) * es;
      v.col_stride = 2 * es;
      v.bytes = uint64_t(E * F) * es;
      src->tensors.push_back(std::move(v));
    }
    return absl::OkStatus();
  }
  const bool gate_up = whole.name == "oss_gate_up";
  const int64_t in = gate_up ? H : F, out = gate_up ? 2 * F : H;  // W [in, out]
  if (!ShapeIs(t, {E, in, out})) return ShapeError(t, {E, in, out});
  for (int64_t e = 0; e < E; ++e) {
    const uint8_t* base = whole.data + uint64_t(e * in * out) * es;
    auto part = [&](const char* name, const uint8_t* data, int64_t rows, uint64_t row_stride) {
      SourceTensor v = whole;
      v.name = name;
      v.expert = int(e);
      v.rows = rows;
      v.cols = in;
      v.data = data;
      v.row_stride = row_stride;
      v.col_stride = uint64_t(out) * es;
      v.bytes = uint64_t(rows * in) * es;
      src->tensors.push_back(std::move(v));
    };
    if (gate_up) {
      part("exp_gate", base, F, 2 * es);
      part("exp_up", base + es, F, 2 * es);
    } else {
      part("exp_down", base, H, es);
    }
  }
  return absl::OkStatus();
}

// gpt-oss's MXFP4 experts: the blocks and the scales of one fused matrix
// (either may come first, in any shard), split into views once both are
// here: gate_up_proj rows 2j / 2j + 1 are exp_gate / exp_up row j.
struct MxfpPart {
  SafetensorsTensor t;
  const uint8_t* data = nullptr;
};
using MxfpPending = std::map<std::pair<int, std::string>, std::pair<MxfpPart, MxfpPart>>;

absl::Status SplitGptOssMxfp4(int layer, bool gate_up, const MxfpPart& blocks,
                              const MxfpPart& scales, ModelSource* src) {
  const ModelConfig& c = src->config;
  const int64_t E = c.n_experts, H = c.hidden, F = c.expert_ffn;
  const int64_t rows = gate_up ? 2 * F : H, cols = gate_up ? H : F;
  if (cols % 32 != 0)
    return absl::InvalidArgumentError(absl::StrCat("tensor '", absl::CEscape(blocks.t.name),
                                                   "': rows of ", cols,
                                                   " values are not whole MXFP4 blocks of 32"));
  const int64_t G = cols / 32;
  for (const MxfpPart* p : {&blocks, &scales}) {
    if (p->t.dtype != "U8")
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", absl::CEscape(p->t.name), "' is ", p->t.dtype, ", expected U8"));
  }
  if (!ShapeIs(blocks.t, {E, rows, G, 16})) return ShapeError(blocks.t, {E, rows, G, 16});
  if (!ShapeIs(scales.t, {E, rows, G})) return ShapeError(scales.t, {E, rows, G});
  const int64_t step = gate_up ? 2 : 1;  // source rows per expert row
  for (int64_t e = 0; e < E; ++e) {
    const uint8_t* b = blocks.data + uint64_t(e * rows * G * 16);
    const uint8_t* sc = scales.data + uint64_t(e * rows * G);
    auto part = [&](const char* name, int64_t first) {
      SourceTensor v;
      v.name = name;
      v.layer = layer;
      v.expert = int(e);
      v.type = SourceType::kMXFP4;
      v.rows = rows / step;
      v.cols = cols;
      v.data = b + uint64_t(first * G * 16);
      v.row_stride = uint64_t(step * G * 16);
      v.mx_scales = sc + uint64_t(first * G);
      v.mx_scale_stride = uint64_t(step * G);
      v.bytes = uint64_t(v.rows * G * 17);
      src->tensors.push_back(std::move(v));
    };
    if (gate_up) {
      part("exp_gate", 0);
      part("exp_up", 1);
    } else {
      part("exp_down", 0);
    }
  }
  return absl::OkStatus();
}

// Gemma's RMSNorm multiplies by (1 + w): the stored norm becomes 1 + w, in
// f32 as transformers computes it (and as llama.cpp's converter stores it).
absl::Status AddOneToNorm(const SafetensorsTensor& t, SourceTensor* s, ModelSource* src) {
  const uint64_t n = uint64_t(s->rows) * uint64_t(s->cols);
  const uint64_t elt = s->type == SourceType::kF32 ? 4 : 2;
  if (s->bytes != n * elt)
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", absl::CEscape(t.name), "' has ", s->bytes, " bytes"));
  auto out = std::make_unique<std::vector<float>>(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint16_t h = 0;
    float w = 0.f;
    if (s->type == SourceType::kF32) {
      std::memcpy(&w, s->data + i * 4, 4);
    } else {
      std::memcpy(&h, s->data + i * 2, 2);
      w = s->type == SourceType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
    }
    (*out)[i] = 1.f + w;
  }
  s->type = SourceType::kF32;
  s->data = reinterpret_cast<const uint8_t*>(out->data());
  s->bytes = n * 4;
  src->derived.push_back(std::move(out));
  return absl::OkStatus();
}

// Converts one parsed tensor of `file` into the source's tensor list
// (gpt-oss's MXFP4 halves wait in `mx` for their other half). Errors lack
// the file prefix.
absl::Status AddTensor(const SafetensorsTensor& t, const MappedFile& file, ModelSource* src,
                       MxfpPending* mx) {
  const ModelConfig& c = src->config;
  ASSIGN_OR_RETURN(std::optional<CanonicalName> canonical, MapTensorName(t.name, c));
  if (!canonical) return absl::OkStatus();
  if (const std::string_view n = canonical->name;
      n.ends_with("_blocks") || n.ends_with("_scales")) {
    const bool gate_up = n.starts_with("oss_gate_up");
    auto& [blocks, scales] = (*mx)[{canonical->layer, gate_up ? "gate_up" : "down"}];
    MxfpPart& part = n.ends_with("_blocks") ? blocks : scales;
    if (part.data != nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", absl::CEscape(t.name), "' appears twice"));
    part = MxfpPart{t, file.data() + t.begin};
    if (blocks.data == nullptr || scales.data == nullptr) return absl::OkStatus();
    const absl::Status split = SplitGptOssMxfp4(canonical->layer, gate_up, blocks, scales, src);
    mx->erase({canonical->layer, gate_up ? "gate_up" : "down"});
    return split;
  }
  SourceTensor s;
  s.name = std::string(canonical->name);
  s.layer = canonical->layer;
  s.expert = canonical->expert;
  ASSIGN_OR_RETURN(s.type, MapDType(t));
  if (s.name == "fused_gate_up" || s.name == "fused_down") {
    s.data = file.data() + t.begin;
    s.bytes = t.end - t.begin;
    return SplitExperts(t, s, src);
  }
  if (s.name == "oss_gate_up" || s.name == "oss_down" || s.name == "oss_gate_up_b") {
    s.data = file.data() + t.begin;
    s.bytes = t.end - t.begin;
    return SplitGptOssExperts(t, s, src);
  }
  if (t.shape.size() == 1) {
    s.rows = 1;
    s.cols = t.shape[0];
  } else if (t.shape.size() == 2) {
    s.rows = t.shape[0];
    s.cols = t.shape[1];
  } else {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", absl::CEscape(t.name), "' has ",
                                                   t.shape.size(), " dimensions, expected 1 or 2"));
  }
  s.data = file.data() + t.begin;
  s.bytes = t.end - t.begin;
  if (s.name == "qkv")
    return SplitRows(t, s, {{"wq", c.q_dim()}, {"wk", c.kv_dim()}, {"wv", c.kv_dim()}}, src);
  if (s.name == "gate_up") return SplitRows(t, s, {{"w_gate", c.ffn}, {"w_up", c.ffn}}, src);
  if (IsGemma(c.arch) && s.name.ends_with("norm")) RETURN_IF_ERROR(AddOneToNorm(t, &s, src));
  src->tensors.push_back(std::move(s));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Files

std::string JoinPath(const std::string& dir, std::string_view name) {
  return (std::filesystem::path(dir) / name).string();
}

// Folds a file's identity (name, size, mtime) into the fingerprint.
uint64_t HashFile(uint64_t h, std::string_view name, const MappedFile& f) {
  h = Fnv1a64(name.data(), name.size(), h);
  const uint64_t fields[2] = {f.size(), uint64_t(f.mtime_ns())};
  return Fnv1a64(fields, sizeof(fields), h);
}

std::string_view FileText(const MappedFile& f) {
  return {reinterpret_cast<const char*>(f.data()), size_t(f.size())};
}

// The tensor files of `dir`: {"model.safetensors"} or the shards that
// model.safetensors.index.json lists. `index` receives the index's
// tensor -> shard map (empty without an index).
absl::StatusOr<std::vector<std::string>> ListTensorFiles(
    const std::string& dir, std::map<std::string, std::string>* index) {
  std::error_code ec;
  if (std::filesystem::exists(JoinPath(dir, "model.safetensors"), ec))
    return std::vector<std::string>{"model.safetensors"};
  const std::string index_path = JoinPath(dir, "model.safetensors.index.json");
  if (!std::filesystem::exists(index_path, ec))
    return absl::NotFoundError(
        absl::StrCat(dir, ": no model.safetensors or model.safetensors.index.json"));
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> f, MappedFile::Open(index_path));
  absl::StatusOr<json> j = ParseJsonText(FileText(*f), "index");
  if (!j.ok()) return Annotate(j.status(), index_path);
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": ", what));
  };
  if (!j->is_object()) return bad("expected a JSON object");
  auto map = j->find("weight_map");
  if (map == j->end()) return bad("lacks 'weight_map'");
  if (!map->is_object())
    return bad(absl::StrCat("'weight_map' is ", JsonTypeName(*map), ", expected an object"));
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string())
      return bad(absl::StrCat("'weight_map' maps '", absl::CEscape(tensor), "' to ",
                              JsonTypeName(shard), ", expected a file name"));
    const std::string name = shard.get<std::string>();
    // Shards live beside the index: refuse paths that lead elsewhere.
    if (name.empty() || name == "." || name == ".." || name.find('/') != name.npos ||
        name.find('\0') != name.npos)
      return bad(absl::StrCat("shard name '", absl::CEscape(name), "' for tensor '",
                              absl::CEscape(tensor), "' is not a file name"));
    (*index)[tensor] = name;
    shards.insert(name);
  }
  if (shards.empty()) return bad("'weight_map' is empty");
  return std::vector<std::string>(shards.begin(), shards.end());
}

absl::Status CheckIndexCovered(const std::string& dir,
                               const std::map<std::string, std::string>& index,
                               const std::map<std::string, std::string>& found) {
  for (const auto& [tensor, shard] : index) {
    auto it = found.find(tensor);
    if (it == found.end() || it->second != shard)
      return absl::InvalidArgumentError(absl::StrCat(JoinPath(dir, "model.safetensors.index.json"),
                                                     ": tensor '", absl::CEscape(tensor),
                                                     "' is not in its shard ", shard));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json_text, std::string_view origin) {
  absl::StatusOr<ModelConfig> c = ParseConfigJson(json_text);
  if (!c.ok()) return Annotate(c.status(), origin);
  return c;
}

absl::StatusOr<std::unique_ptr<ModelSource>> OpenHfCheckpoint(const std::string& dir) {
  auto src = std::make_unique<ModelSource>();
  src->path = dir;
  src->format = "safetensors";

  const std::string config_path = JoinPath(dir, "config.json");
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> config_file, MappedFile::Open(config_path));
  ASSIGN_OR_RETURN(src->config, ParseHfConfig(FileText(*config_file), config_path));
  uint64_t fingerprint = HashFile(Fnv1a64(nullptr, 0), "config.json", *config_file);

  std::map<std::string, std::string> index;  // tensor -> shard, from the index
  ASSIGN_OR_RETURN(std::vector<std::string> names, ListTensorFiles(dir, &index));
  std::map<std::string, std::string> found;  // tensor -> the file that holds it
  MxfpPending mx;                            // MXFP4 blocks without scales, or scales without
  for (const std::string& name : names) {
    const std::string path = JoinPath(dir, name);
    absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
    if (!file.ok()) {
      if (!index.empty() && absl::IsNotFound(file.status()))
        return absl::NotFoundError(absl::StrCat(JoinPath(dir, "model.safetensors.index.json"),
                                                ": shard ", name, " does not exist"));
      return file.status();
    }
    ASSIGN_OR_RETURN(SafetensorsFile st, ParseSafetensors((*file)->data(), (*file)->size(), path));
    for (const SafetensorsTensor& t : st.tensors) {
      auto [it, fresh] = found.emplace(t.name, name);
      if (!fresh)
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", absl::CEscape(t.name), "' is also in ", it->second));
      RETURN_IF_ERROR(Annotate(AddTensor(t, **file, src.get(), &mx), path));
    }
    fingerprint = HashFile(fingerprint, name, **file);
    src->files.push_back(*std::move(file));
  }
  if (!index.empty()) RETURN_IF_ERROR(CheckIndexCovered(dir, index, found));
  if (!mx.empty()) {
    const auto& [blocks, scales] = mx.begin()->second;
    const MxfpPart& have = blocks.data != nullptr ? blocks : scales;
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": tensor '", absl::CEscape(have.t.name), "' lacks its ",
                     blocks.data != nullptr ? "_scales" : "_blocks", " tensor"));
  }

  // The tokenizer: its files are part of the identity, its end-of-sequence
  // ids (tokenizer_config's eos_token, generation_config's eos_token_id) stop
  // generation too.
  ASSIGN_OR_RETURN(HfTokenizerFiles tok, ReadHfTokenizerFiles(dir));
  for (const std::string& name : tok.files) {
    ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> f, MappedFile::Open(JoinPath(dir, name)));
    fingerprint = HashFile(fingerprint, name, *f);
  }
  ModelConfig& c = src->config;
  for (int32_t id : tok.eos_ids) {
    if (id < 0 || id >= c.vocab || c.n_eos >= kMaxEosIds) continue;
    if (std::find(c.eos_ids, c.eos_ids + c.n_eos, id) == c.eos_ids + c.n_eos)
      c.eos_ids[c.n_eos++] = id;
  }
  if (tok.bundle.kind == TokenizerKind::kNone)
    src->tokenizer_note = "no tokenizer.json: the model takes and gives token ids only";
  src->tokenizer = std::move(tok.bundle);
  src->fingerprint = fingerprint;
  RETURN_IF_ERROR(CheckTensorSet(*src));
  return src;
}

}  // namespace paged
