// Tokenizer for HF tokenizer.json files: byte-level BPE (GPT-2, Llama 3,
// Qwen2, SmolLM) and SentencePiece-style BPE with byte fallback (Llama 2,
// Mistral), with the normalizer, pre-tokenizer, added tokens, decoder and
// post-processor the file describes, giving the ids HF `tokenizers` gives.
// docs/tokenizers.md lists what is supported.
//
// Encode, as HF's encode(text, add_special_tokens = add_bos):
//   1. text that is not valid UTF-8 has each bad sequence replaced by U+FFFD;
//   2. added tokens are cut out of the text, leftmost-longest (lstrip,
//      rstrip, single_word as HF): first those with normalized = false in
//      the raw text, then each remaining piece is normalized and those with
//      normalized = true are cut out of it. Without `parse_special`, special
//      added tokens are not matched (they are plain text) while the other
//      added tokens still are: HF's encode_special_tokens = true (what
//      transformers calls split_special_tokens);
//   3. each remaining piece is pre-tokenized and each pre-token run through
//      the BPE model;
//   4. with add_bos, the post-processor's template (e.g. "<s> $A") wraps the
//      ids; tokenizer_config.json's add_bos_token, when given, overrides
//      whether its leading BOS is added (as transformers' Llama tokenizers do).
//
// Decode follows HF's decode(ids, skip_special_tokens = true); DecodePiece
// is its one-token form for streams (see HfDecoder::DecodeOne): the bytes of
// a byte-level token, possibly part of a character.
//
// Immutable after Create; thread-safe for concurrent const use.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "tokenizer/hf_bpe.h"
#include "tokenizer/hf_decoder.h"
#include "tokenizer/hf_pretokenize.h"
#include "tokenizer/tokenizer.h"

namespace paged {

// What a checkpoint says about its tokenizer outside tokenizer.json.
struct HfTokenizerOptions {
  std::string bos_token;               // tokenizer_config.json "bos_token"; "" when absent
  std::string eos_token;               // tokenizer_config.json "eos_token"; "" when absent
  std::optional<bool> add_bos_token;   // tokenizer_config.json "add_bos_token"
  std::vector<int32_t> eos_token_ids;  // generation_config.json "eos_token_id" (more turn ends)

  // As a JSON object (the segment's tokenizer blob carries it).
  std::string ToJson() const;
  // INVALID_ARGUMENT when `json` is not such an object ("" gives defaults).
  static absl::StatusOr<HfTokenizerOptions> FromJson(std::string_view json);
};

class HfTokenizer final : public Tokenizer {
 public:
  // Parses `tokenizer_json`. INVALID_ARGUMENT prefixed with `origin` (the
  // file's path) for text that is not JSON, a missing or unsupported model,
  // an unsupported normalizer / pre-tokenizer / decoder / post-processor, a
  // bad regex, merges naming unknown tokens, or added tokens that clash.
  static absl::StatusOr<std::unique_ptr<HfTokenizer>> Create(std::string_view tokenizer_json,
                                                             const HfTokenizerOptions& options,
                                                             std::string_view origin);

  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special = false) const override;
  std::string DecodePiece(int32_t prev_token, int32_t token) const override;
  std::string Decode(std::span<const int32_t> ids) const override;
  std::string IdToPiece(int32_t id) const override;
  int32_t PieceToId(std::string_view piece) const override;
  bool IsEos(int32_t token) const override;
  bool IsControl(int32_t token) const override;
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  size_t vocab_size() const override { return size_t(vocab_size_); }

  // Every end-of-sequence id (eos_token, then generation_config's).
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }

 private:
  struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool special = false;
    bool single_word = false;
    bool lstrip = false;
    bool rstrip = false;
    bool normalized = false;
  };
  // Leftmost-longest matching of a set of strings (a byte trie).
  class Matcher {
   public:
    Matcher();
    void Add(std::string_view pattern, int32_t token);
    // The longest pattern starting at `s[at]`: its token and length (-1, 0: none).
    std::pair<int32_t, size_t> LongestAt(std::string_view s, size_t at) const;
    bool empty() const { return nodes_.size() == 1; }

   private:
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> next;  // sorted by byte
      int32_t token = -1;                                   // index into added_
    };
    std::vector<Node> nodes_;
  };
  // A piece of the text between added tokens, or an added token (id >= 0).
  struct Segment {
    std::string text;
    int32_t id;
    bool at_start;  // begins at byte 0 of the encoded text
  };

  HfTokenizer() = default;
  absl::Status LoadAddedTokens(const nlohmann::json& list);
  absl::Status LoadPostProcessor(const nlohmann::json& j);
  void ApplyOptions(const HfTokenizerOptions& options);
  // HF's AddedVocabulary::find_matches over `s`, appended to `out`.
  void SplitAdded(const Matcher& m, std::string_view s, bool at_start, bool parse_special,
                  std::vector<Segment>* out) const;
  const AddedToken* Added(int32_t id) const;

  HfBpe model_;
  HfNormalizer normalizer_;
  HfPreTokenizer pre_tokenizer_;
  HfDecoder decoder_;
  std::vector<AddedToken> added_;
  std::vector<int32_t> added_index_;  // id -> index into added_, -1
  Matcher raw_matcher_;               // added tokens with normalized = false
  Matcher normalized_matcher_;        // the others, by their normalized content
  std::vector<int32_t> prefix_;       // the post-processor's ids before / after the text
  std::vector<int32_t> suffix_;
  int32_t vocab_size_ = 0;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::vector<int32_t> eos_ids_;
};

}  // namespace paged
