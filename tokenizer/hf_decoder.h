// The decoder of an HF tokenizer.json: token strings back to text, as HF's
// decode_chain (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, a
// Sequence of these; no decoder joins the tokens with " "), plus the
// one-token form a stream uses. Immutable and thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"
#include "tokenizer/hf_regex.h"

namespace paged {

class HfDecoder {
 public:
  // `j`: the tokenizer.json "decoder" value (null: none). INVALID_ARGUMENT
  // naming the type for decoders outside the list above.
  static absl::StatusOr<HfDecoder> FromJson(const nlohmann::json& j);

  // HF's decode of `tokens` (special tokens already left out): the text, with
  // invalid UTF-8 replaced by U+FFFD as HF does.
  std::string Decode(std::vector<std::string> tokens) const;

  // The text of one token in a stream. Bytes are returned raw (a byte-level
  // token or a <0xNN> token may hold part of a UTF-8 character); Strip and
  // Metaspace remove the leading space only when `first` (the token starts
  // the decoded text), and Strip's trailing cut is not applied (the end is
  // not known yet).
  std::string DecodeOne(std::string_view token, bool first) const;

 private:
  struct ByteLevel {};
  struct Replace {
    HfRegex pattern;
    std::string content;
  };
  struct ByteFallback {};
  struct Fuse {};
  struct Strip {
    std::string content;
    int start;
    int stop;
  };
  struct Metaspace {
    std::string replacement;
    bool strip_first;
  };
  using Step = std::variant<ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace>;
  static absl::Status Add(const nlohmann::json& j, std::vector<Step>* steps);

  std::vector<Step> steps_;
  bool none_ = true;  // no decoder: tokens joined with " "
};

}  // namespace paged
