#include "store/gguf_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"
#include "tokenizer/hf_tokenizer.h"

namespace paged {
namespace {

using nlohmann::json;

constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

json SplitThenByteLevel(const char* pattern) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array(
               {json{{"type", "Split"},
                     {"pattern", {{"Regex", pattern}}},
                     {"behavior", "Isolated"},
                     {"invert", false}},
                json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}};
}

json ByteLevelGpt2() {
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
}

// GGUF token types (llama.cpp).
constexpr int64_t kControl = 3, kUserDefined = 4;

}  // namespace

absl::StatusOr<std::optional<TokenizerBundle>> GgufBpeTokenizer(const GgufFile& f,
                                                                const ModelConfig& c) {
  auto bad = [&](std::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(f.origin, ": ", std::string(what)));
  };
  std::string pre = "default";
  if (f.Has("tokenizer.ggml.pre")) {
    ASSIGN_OR_RETURN(pre, f.GetString("tokenizer.ggml.pre"));
  }
  json j = json::object();
  const bool llama3 = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  // llama.cpp's default: BOS for Llama 3 only; tokenizer.ggml.add_bos_token decides.
  bool add_bos = llama3;
  if (llama3) {
    j["pre_tokenizer"] = SplitThenByteLevel(kLlama3Pattern);
  } else if (pre == "qwen2") {
    j["normalizer"] = {{"type", "NFC"}};
    j["pre_tokenizer"] = SplitThenByteLevel(kQwen2Pattern);
  } else if (pre == "gpt-2" || pre == "gpt2") {
    j["pre_tokenizer"] = ByteLevelGpt2();
  } else if (pre == "smollm") {
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         json::array({json{{"type", "Digits"}, {"individual_digits", true}}, ByteLevelGpt2()})}};
  } else {
    return std::nullopt;
  }
  if (f.Has("tokenizer.ggml.add_bos_token")) {
    ASSIGN_OR_RETURN(add_bos, f.GetBool("tokenizer.ggml.add_bos_token"));
  }

  ASSIGN_OR_RETURN(const std::vector<std::string>* tokens,
                   f.GetStringArray("tokenizer.ggml.tokens"));
  const size_t n = tokens->size();
  if (n != size_t(c.vocab))
    return bad(absl::StrCat("tokenizer.ggml.tokens has ", n, " entries but the vocabulary size is ",
                            c.vocab));
  std::vector<int64_t> types(n, 1);
  if (f.Has("tokenizer.ggml.token_type")) {
    ASSIGN_OR_RETURN(types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != n)
      return bad(absl::StrCat("tokenizer.ggml.token_type has ", types.size(), " entries for ", n,
                              " tokens"));
  }
  if (!f.Has("tokenizer.ggml.merges"))
    return bad("a gpt2 vocabulary without tokenizer.ggml.merges");
  ASSIGN_OR_RETURN(const std::vector<std::string>* merges,
                   f.GetStringArray("tokenizer.ggml.merges"));

  json vocab = json::object();
  json added = json::array();
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = (*tokens)[i];
    if (types[i] == kControl || types[i] == kUserDefined) {
      const bool special = types[i] == kControl;
      added.push_back({{"id", i},
                       {"content", t},
                       {"special", special},
                       {"normalized", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"single_word", false}});
    } else if (!vocab.contains(t)) {
      vocab[t] = i;  // a repeated token keeps its first id
    }
  }
  j["model"] = {
      {"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", *merges}, {"ignore_merges", llama3}};
  j["added_tokens"] = std::move(added);
  j["decoder"] = {{"type", "ByteLevel"}};

  HfTokenizerOptions o;
  auto token = [&](int32_t id) { return id >= 0 && size_t(id) < n ? (*tokens)[size_t(id)] : ""; };
  o.bos_token = token(c.bos_id);
  o.add_bos_token = add_bos && c.bos_id >= 0;
  if (c.n_eos > 0) o.eos_token = token(c.eos_ids[0]);
  o.eos_token_ids.assign(c.eos_ids, c.eos_ids + c.n_eos);

  TokenizerBundle b;
  b.kind = TokenizerKind::kHfJson;
  b.payload = j.dump();
  b.options = o.ToJson();
  // Built once here so that a bad vocabulary fails the load, not the server.
  RETURN_IF_ERROR(HfTokenizer::Create(b.payload, o, f.origin).status());
  return b;
}

}  // namespace paged
