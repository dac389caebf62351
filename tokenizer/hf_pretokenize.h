// The text stages of an HF tokenizer.json before the model: the normalizer
// (NFC, Prepend, Replace, ...) and the pre-tokenizer (Split by regex,
// ByteLevel, Metaspace, ...), each a flattened chain of steps that behaves as
// HF `tokenizers` does. Built once from JSON; immutable and thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "tokenizer/hf_regex.h"

namespace paged {

// Splitting a piece at a pattern's matches (HF SplitDelimiterBehavior).
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

// The pieces of `text` that matches `spans` (sorted, non-overlapping byte
// ranges; `invert` swaps matches and the text between them) leave under
// `behavior`. Empty pieces are dropped. `offsets` receives each piece's
// start in `text`.
std::vector<std::string_view> SplitAtMatches(std::string_view text,
                                             const std::vector<std::pair<size_t, size_t>>& spans,
                                             bool invert, SplitBehavior behavior,
                                             std::vector<size_t>* offsets = nullptr);

class HfNormalizer {
 public:
  // `j`: the tokenizer.json "normalizer" value (null: none). Supported:
  // NFC, NFD, NFKC, NFKD, Prepend, Replace (String or Regex pattern), Strip,
  // Sequence of these. INVALID_ARGUMENT naming the type otherwise.
  static absl::StatusOr<HfNormalizer> FromJson(const nlohmann::json& j);
  std::string Apply(std::string_view text) const;
  bool empty() const { return steps_.empty(); }

 private:
  struct Unicode {
    UnicodeForm form;
  };
  struct Prepend {
    std::string prefix;
  };
  struct Replace {
    HfRegex pattern;
    std::string content;
  };
  struct Strip {
    bool left;
    bool right;
  };
  using Step = std::variant<Unicode, Prepend, Replace, Strip>;
  static absl::Status Add(const nlohmann::json& j, std::vector<Step>* steps);
  std::vector<Step> steps_;
};

// A pre-token on its way through the chain.
struct PreToken {
  std::string text;
  bool at_start;  // it begins at byte 0 of the encoded text (Metaspace "first")
};

class HfPreTokenizer {
 public:
  // `j`: the tokenizer.json "pre_tokenizer" value (null: none). Supported:
  // Split (Regex or String pattern, any behavior, invert), ByteLevel
  // (add_prefix_space, use_regex: the GPT-2 pattern), Metaspace
  // (replacement, prepend_scheme always / first / never or the older
  // add_prefix_space, split), Digits, Sequence of these. INVALID_ARGUMENT
  // naming the type otherwise.
  static absl::StatusOr<HfPreTokenizer> FromJson(const nlohmann::json& j);

  // Splits `piece` (normalized text between added tokens) into pre-tokens,
  // appended to `out`; none is empty.
  void Apply(PreToken piece, std::vector<PreToken>* out) const;
  // A ByteLevel step is in the chain: pre-tokens are in the byte-level
  // alphabet (tokenizer/byte_level.h).
  bool byte_level() const { return byte_level_; }

 private:
  struct Split {
    HfRegex pattern;
    SplitBehavior behavior;
    bool invert;
  };
  struct ByteLevel {
    bool add_prefix_space;
    bool use_regex;
  };
  enum class Prepend { kAlways, kFirst, kNever };
  struct Metaspace {
    std::string replacement;
    Prepend prepend;
    bool split;
  };
  struct Digits {
    bool individual;
  };
  using Step = std::variant<Split, ByteLevel, Metaspace, Digits>;
  static absl::Status Add(const nlohmann::json& j, std::vector<Step>* steps);
  void ApplyStep(const Step& step, std::vector<PreToken>* pieces) const;

  std::vector<Step> steps_;
  bool byte_level_ = false;
};

// The string value of `j[key]`, or INVALID_ARGUMENT naming `what`.`key`.
absl::StatusOr<std::string> JsonString(const nlohmann::json& j, const char* key,
                                       std::string_view what);
// The bool value of `j[key]`, `def` when absent or null.
absl::StatusOr<bool> JsonBool(const nlohmann::json& j, const char* key, bool def,
                              std::string_view what);
// An HF pattern object {"String": s} or {"Regex": r}.
absl::StatusOr<HfRegex> JsonPattern(const nlohmann::json& j, std::string_view what);

}  // namespace paged
