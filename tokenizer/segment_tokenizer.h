// Tokenizers from the data a segment (or a model source) carries: every
// reader of a segment's tokenizer goes through LoadSegmentTokenizer.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/segment.h"
#include "common/tokenizer_bundle.h"
#include "tokenizer/tokenizer.h"

namespace paged {

// The tokenizer `b` describes: SpTokenizer for kSentencePieceGguf,
// HfTokenizer for kHfJson, null for kNone. Errors are prefixed with `origin`.
absl::StatusOr<std::unique_ptr<const Tokenizer>> CreateTokenizer(const TokenizerBundle& b,
                                                                 std::string_view origin);

struct LoadedTokenizer {
  std::unique_ptr<const Tokenizer> tokenizer;  // null: the segment has none
  std::string chat_template;                   // "" when it has none
};

// The tokenizer and chat template of a mapped segment.
absl::StatusOr<LoadedTokenizer> LoadSegmentTokenizer(const SegmentMapping& seg);

}  // namespace paged
