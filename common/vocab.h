// The tokenizer data a model carries, as stored in the segment's tokenizer
// region so that workers and the coordinator never read model files.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

// SentencePiece-style vocabulary (GGUF tokenizer.ggml.model == "llama").
struct Vocab {
  // GGUF token types.
  enum Type : int32_t {
    kNormal = 1,
    kUnknown = 2,
    kControl = 3,
    kUserDefined = 4,
    kUnused = 5,
    kByte = 6
  };
  std::vector<std::string> pieces;  // UTF-8, "▁" (U+2581) for a space
  std::vector<float> scores;        // merge priority, higher first
  std::vector<int32_t> types;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;

  size_t size() const { return pieces.size(); }
};

// Blob format, little endian:
//   "PGVOCAB1" | u32 n | i32 bos | i32 eos | i32 unk | n x (f32 score, i32 type, u32 len, bytes)
std::string SerializeVocab(const Vocab& v);
absl::StatusOr<Vocab> ParseVocab(std::string_view blob);

}  // namespace paged
