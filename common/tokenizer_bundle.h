// The tokenizer a segment carries (its "tokenizer" region), so that the
// coordinator and tools never read model files: which kind, its data, and the
// checkpoint's chat template.
//
// Blob format (little endian), documented in docs/store.md:
//   "PGTOKEN1" | u32 kind (TokenizerKind) | u32 n_fields
//   | n_fields x (u64 length | bytes)
// fields, in order: [0] payload, [1] chat_template, [2] options. Readers
// ignore fields past the ones they know; a missing field reads as "".
//   kind kSentencePieceGguf: payload = SerializeVocab blob ("PGVOCAB1"),
//                            options = "";
//   kind kHfJson:            payload = tokenizer.json text, options =
//                            HfTokenizerOptions as JSON (tokenizer/hf_tokenizer.h);
//   kind kNone:              no tokenizer, only a chat template.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"

namespace paged {

struct TokenizerBundle {
  TokenizerKind kind = TokenizerKind::kNone;
  std::string payload;
  std::string chat_template;  // Jinja source; "" when the checkpoint has none
  std::string options;

  bool empty() const { return kind == TokenizerKind::kNone && chat_template.empty(); }
};

std::string SerializeTokenizerBundle(const TokenizerBundle& b);
// DATA_LOSS for a blob that is not one (bad magic, truncated, unknown kind).
absl::StatusOr<TokenizerBundle> ParseTokenizerBundle(std::string_view blob);

}  // namespace paged
