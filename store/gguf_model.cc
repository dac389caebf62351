// GGUF files as a ModelSource: the {arch}.* metadata becomes the ModelConfig,
// the tokenizer.ggml.* arrays the Vocab, and the llama.cpp tensor names
// ("blk.3.attn_q.weight") the canonical ones ("wq" of layer 3).
#include "store/gguf_model.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <optional>

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
  if (f.Has(p + "attention.sliding_window")) {  // 0 means none
    ASSIGN_OR_RETURN(int64_t window, f.GetInt(p + "attention.sliding_window"));
    if (window < 0 || window > std::numeric_limits<int32_t>::max())
      return Bad(f, absl::StrCat(p, "attention.sliding_window ", window, " is out of range"));
    c.sliding_window = static_cast<int32_t>(window);
  }

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

  // Linear / YaRN scaling has no place in ModelConfig; refuse it rather than
  // run the model with the wrong positions. (llama3 scaling comes as the
  // rope_freqs.weight tensor, see ReadLlama3Scaling.)
  if (f.Has(p + "rope.scaling.type")) {
    ASSIGN_OR_RETURN(std::string type, f.GetString(p + "rope.scaling.type"));
    ASSIGN_OR_RETURN(float factor, GetFloatOr(f, p + "rope.scaling.factor", 1.f));
    if (type != "none" && !(type == "linear" && factor == 1.f))
      return Bad(f, absl::StrCat("unsupported rope scaling '", type, "' (factor ", factor, ")"));
  }
  return absl::OkStatus();
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
    {"ffn_up.weight", "w_up"},
    {"ffn_down.weight", "w_down"},
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

absl::StatusOr<SourceType> MapTensorType(const GgufFile& f, const GgufTensorInfo& t) {
  switch (t.type) {
    case static_cast<uint32_t>(GgmlType::kF32):
      return SourceType::kF32;
    case static_cast<uint32_t>(GgmlType::kF16):
      return SourceType::kF16;
    case static_cast<uint32_t>(GgmlType::kBF16):
      return SourceType::kBF16;
    case static_cast<uint32_t>(GgmlType::kQ8_0):
      return SourceType::kQ8_0;
  }
  return Bad(f, absl::StrCat("tensor '", t.name, "' has unsupported tensor type ",
                             GgmlTypeName(t.type), " (supported: F32, F16, BF16, Q8_0)"));
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
  // GGUF llama/mistral q/k rows are in the adjacent-pair RoPE order (the
  // converter permuted the HF rows); qwen2 files keep the halves order.
  const bool rope_rows = st.name == "wq" || st.name == "wk" || st.name == "bq" || st.name == "bk";
  if (rope_rows && src.config.arch != Arch::kQwen2) st.rope_permute_head_dim = src.config.head_dim;
  src.tensors.push_back(std::move(st));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelSource>> GgufToModelSource(const GgufFile& f,
                                                               const uint8_t* data, uint64_t size) {
  auto src = std::make_unique<ModelSource>();
  src->path = f.origin;
  src->format = "gguf";
  ModelConfig& c = src->config;

  absl::StatusOr<std::string> arch_name = f.GetString("general.architecture");
  if (!arch_name.ok()) return AsInvalid(arch_name.status());
  absl::StatusOr<Arch> arch = ParseArch(*arch_name);
  if (!arch.ok()) return Annotate(arch.status(), f.origin);
  c.arch = *arch;
  c.qkv_bias = c.arch == Arch::kQwen2;

  RETURN_IF_ERROR(ReadConfig(f, *arch_name, c));
  RETURN_IF_ERROR(ReadTokenizer(f, c, src->vocab, src->tokenizer, src->tokenizer_note));
  c.tied_embeddings = f.FindTensor("output.weight") == nullptr;

  for (const GgufTensorInfo& t : f.tensors) {
    if (t.end > size) return Bad(f, absl::StrCat("tensor '", t.name, "' lies past the data"));
    if (t.name == "rope_freqs.weight") {
      // Not a weight: llama3 frequency factors, folded into the config.
      RETURN_IF_ERROR(ReadLlama3Scaling(f, *arch_name, t, data, c));
      continue;
    }
    RETURN_IF_ERROR(AddTensor(f, t, data, *src));
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
