// The BPE model of an HF tokenizer.json ("model": {"type": "BPE", ...}):
// vocab, ranked merges (as "a b" strings or ["a", "b"] pairs), unk_token,
// fuse_unk, byte_fallback (<0xNN> tokens) and ignore_merges, tokenizing one
// pre-token at a time exactly as HF `tokenizers` does: the word's characters,
// then the adjacent pair of lowest merge rank (leftmost on ties) merged until
// none is left. Immutable and thread-safe for const use.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace paged {

class HfBpe {
 public:
  // INVALID_ARGUMENT for a model that is not BPE, a malformed vocab or merge,
  // a merge naming a token the vocab lacks, an unk_token outside the vocab,
  // dropout or subword affixes (unsupported).
  static absl::StatusOr<HfBpe> FromJson(const nlohmann::json& model);

  // Appends the ids of `word` (a non-empty pre-token).
  void Tokenize(std::string_view word, std::vector<int32_t>* out) const;

  // -1 when `token` is not in the vocab.
  int32_t TokenToId(std::string_view token) const;
  // nullptr when `id` is not in the vocab.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id of the vocab.
  int32_t id_end() const { return int32_t(tokens_.size()); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Merge {
    int32_t rank;
    int32_t id;  // of the merged token
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
  }

  // The word's symbols before merging: one per character, byte tokens for a
  // character outside the vocab (byte_fallback), else unk (fused when fuse_unk).
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool live;
  };
  void InitialSymbols(std::string_view word, std::vector<Symbol>* sym) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> tokens_;  // by id; "" for an id the vocab skips
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::array<int32_t, 256> byte_ids_{};  // <0xNN> token of each byte, -1 when absent
};

}  // namespace paged
