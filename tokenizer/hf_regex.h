// Unicode helpers for the HF tokenizer (tokenizer/hf_tokenizer.h), on ICU:
// regular expressions over UTF-8 text with byte offsets, normalization
// forms, character classes as HF's Rust code defines them, and UTF-8
// decoding / repair.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

// A compiled pattern. HF writes Oniguruma patterns; ICU's dialect accepts the
// ones tokenizers use (\p{L}, \p{N}, \s, (?i:...), (?!...), {1,3}), with \s
// the Unicode White_Space property in both. Immutable and thread-safe for
// concurrent const use: each search makes its own matcher.
class HfRegex {
 public:
  // `literal`: `pattern` is plain text to find, not a regex. INVALID_ARGUMENT
  // naming the pattern when ICU rejects it.
  static absl::StatusOr<HfRegex> Compile(std::string_view pattern, bool literal = false);

  // Byte ranges [begin, end) of the successive non-overlapping matches in
  // `text` (valid UTF-8), leftmost first. An empty match is reported too (the
  // search then resumes one character on), as Oniguruma does.
  std::vector<std::pair<size_t, size_t>> FindAll(std::string_view text) const;

  // `text` with every match replaced by `with`.
  std::string ReplaceAll(std::string_view text, std::string_view with) const;

 private:
  struct Impl;  // the ICU pattern (kept out of this header)
  HfRegex() = default;
  std::shared_ptr<const Impl> impl_;
};

enum class UnicodeForm { kNFC, kNFD, kNFKC, kNFKD };
// `text` (valid UTF-8) in normalization form `form`.
std::string NormalizeUnicode(std::string_view text, UnicodeForm form);

// `text` with every byte sequence that is not well-formed UTF-8 replaced by
// U+FFFD (one per maximal ill-formed subpart, as ICU and Python count them).
std::string ToValidUtf8(std::string_view text);
bool IsValidUtf8(std::string_view text);

// Decodes the character at `text[*pos]` (valid UTF-8) and advances `*pos`.
char32_t NextCodePoint(std::string_view text, size_t* pos);
// Decodes the character that ends at `text[end]` (valid UTF-8, end > 0).
char32_t PrevCodePoint(std::string_view text, size_t end, size_t* begin);
void AppendUtf8(char32_t c, std::string* out);

// Rust's char::is_whitespace / regex \s: the White_Space property.
bool IsWhiteSpace(char32_t c);
// Rust regex \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation,
// Join_Control.
bool IsWordChar(char32_t c);

}  // namespace paged
