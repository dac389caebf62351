#include "store/hf_checkpoint.h"

#include <algorithm>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
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

 private:
  std::string Name(const char* key) const { return prefix_ + key; }
  absl::Status OutOfRange(const char* key, const json& v) const {
    return absl::InvalidArgumentError(
        absl::StrCat("'", Name(key), "' value ", v.dump(), " is out of range"));
  }

  const json& obj_;
  std::string prefix_;
};

// HF architecture class names of the model types we support.
std::optional<Arch> ArchFromClassName(std::string_view name) {
  if (name == "LlamaForCausalLM") return Arch::kLlama;
  if (name == "MistralForCausalLM") return Arch::kMistral;
  if (name == "Qwen2ForCausalLM") return Arch::kQwen2;
  return std::nullopt;
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
    if (absl::StatusOr<Arch> arch = ParseArch(*model_type); arch.ok()) return arch;
  }
  if (class_name) {
    if (std::optional<Arch> arch = ArchFromClassName(*class_name)) return *arch;
  }
  if (model_type) return ParseArch(absl::CEscape(*model_type)).status();
  if (class_name)
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported architecture '", absl::CEscape(*class_name),
                     "' (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)"));
  return absl::InvalidArgumentError("missing 'model_type' and 'architectures'");
}

// RoPE settings in either form HF writes:
//   transformers 4.x: top-level "rope_theta" and "rope_scaling" (null,
//     {"rope_type" | "type": "default"} or a llama3 object);
//   transformers 5.x: one "rope_parameters" object holding "rope_theta",
//     "rope_type" ("default" or "llama3") and the llama3 fields.
absl::Status ParseRope(const KeyReader& r, ModelConfig* c) {
  ASSIGN_OR_RETURN(c->rope_theta, r.Float("rope_theta", 10000.f));
  const bool v5 = r.Find("rope_parameters") != nullptr;
  const char* key = v5 ? "rope_parameters" : "rope_scaling";
  const json* v = r.Find(key);
  if (v == nullptr) return absl::OkStatus();
  if (!v->is_object()) return r.WrongType(key, *v, "an object or null");
  const KeyReader s(*v, absl::StrCat(key, "."));
  if (v5) {
    ASSIGN_OR_RETURN(c->rope_theta, s.Float("rope_theta", c->rope_theta));
  }
  ASSIGN_OR_RETURN(std::optional<std::string> type, s.String("rope_type"));
  if (!type) {
    ASSIGN_OR_RETURN(type, s.String("type"));
  }
  if (!type) {
    if (v5) return absl::OkStatus();  // theta only
    return absl::InvalidArgumentError("'rope_scaling' lacks 'rope_type'");
  }
  if (*type == "default") return absl::OkStatus();
  if (*type != "llama3")
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported ", key, " type '", absl::CEscape(*type), "' (supported: default, llama3)"));
  c->rope_scaling = RopeScaling::kLlama3;
  ASSIGN_OR_RETURN(c->rope_factor, s.Float("factor"));
  ASSIGN_OR_RETURN(c->rope_low_freq_factor, s.Float("low_freq_factor", 1.f));
  ASSIGN_OR_RETURN(c->rope_high_freq_factor, s.Float("high_freq_factor", 4.f));
  ASSIGN_OR_RETURN(c->rope_original_max_pos, s.Int("original_max_position_embeddings"));
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
  ASSIGN_OR_RETURN(c.hidden, r.Int("hidden_size"));
  ASSIGN_OR_RETURN(c.ffn, r.Int("intermediate_size"));
  ASSIGN_OR_RETURN(c.n_layers, r.Int("num_hidden_layers"));
  ASSIGN_OR_RETURN(c.n_heads, r.Int("num_attention_heads"));
  ASSIGN_OR_RETURN(c.n_kv_heads, r.Int("num_key_value_heads", c.n_heads));
  // ValidateConfig reports a bad n_heads; avoid dividing by it here.
  ASSIGN_OR_RETURN(c.head_dim, r.Int("head_dim", c.n_heads > 0 ? c.hidden / c.n_heads : 0));
  ASSIGN_OR_RETURN(c.vocab, r.Int("vocab_size"));
  ASSIGN_OR_RETURN(c.max_context, r.Int("max_position_embeddings", 2048));
  ASSIGN_OR_RETURN(c.norm_eps, r.Float("rms_norm_eps", 1e-6f));
  c.rope_style = RopeStyle::kHalves;
  RETURN_IF_ERROR(ParseRope(r, &c));
  ASSIGN_OR_RETURN(const bool tied, r.Bool("tie_word_embeddings", false));
  c.tied_embeddings = tied ? 1 : 0;
  RETURN_IF_ERROR(ParseSpecialTokens(r, &c));

  // Qwen2 configs always carry sliding_window; it applies only when
  // use_sliding_window is set.
  ASSIGN_OR_RETURN(const bool use_window, r.Bool("use_sliding_window", false));
  if (c.arch != Arch::kQwen2 || use_window) {
    ASSIGN_OR_RETURN(c.sliding_window, r.Int("sliding_window", 0));
    if (c.sliding_window < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("'sliding_window' ", c.sliding_window, " is negative"));
  }
  c.qkv_bias = c.arch == Arch::kQwen2 ? 1 : 0;
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

// Suffixes after "model.layers.{i}.".
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm"},
    {"self_attn.q_proj.weight", "wq"},
    {"self_attn.k_proj.weight", "wk"},
    {"self_attn.v_proj.weight", "wv"},
    {"self_attn.o_proj.weight", "wo"},
    {"self_attn.q_proj.bias", "bq"},
    {"self_attn.k_proj.bias", "bk"},
    {"self_attn.v_proj.bias", "bv"},
    {"post_attention_layernorm.weight", "ffn_norm"},
    {"mlp.gate_proj.weight", "w_gate"},
    {"mlp.up_proj.weight", "w_up"},
    {"mlp.down_proj.weight", "w_down"},
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
};

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
      const std::string_view suffix = rest.substr(dot + 1);
      for (const auto& [from, to] : kLayerNames) {
        if (suffix != from) continue;
        if (layer >= c.n_layers)
          return absl::InvalidArgumentError(absl::StrCat(
              "tensor '", absl::CEscape(std::string(hf)), "': layer ", layer, " outside [0, ",
              c.n_layers, ") (num_hidden_layers is ", c.n_layers, ")"));
        return CanonicalName{to, layer};
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

// Converts one parsed tensor of `file` into the source's tensor list.
// Errors lack the file prefix.
absl::Status AddTensor(const SafetensorsTensor& t, const MappedFile& file, ModelSource* src) {
  ASSIGN_OR_RETURN(std::optional<CanonicalName> canonical, MapTensorName(t.name, src->config));
  if (!canonical) return absl::OkStatus();
  SourceTensor s;
  s.name = std::string(canonical->name);
  s.layer = canonical->layer;
  ASSIGN_OR_RETURN(s.type, MapDType(t));
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
      RETURN_IF_ERROR(Annotate(AddTensor(t, **file, src.get()), path));
    }
    fingerprint = HashFile(fingerprint, name, **file);
    src->files.push_back(*std::move(file));
  }
  if (!index.empty()) RETURN_IF_ERROR(CheckIndexCovered(dir, index, found));

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
