// Tokenizer for GGUF "llama" vocabularies (SentencePiece-style pieces with
// scores), behaving like llama.cpp's SPM tokenizer and llama2.c's encoder.
//
// Encode:
//   1. a space is prepended to non-empty text (SentencePiece add_dummy_prefix)
//      and every ' ' becomes "▁" (U+2581); other whitespace (\n, \t) is kept;
//   2. the text is split into one symbol per UTF-8 character; a byte that does
//      not start a well-formed UTF-8 sequence is a symbol of its own;
//   3. the adjacent pair whose concatenation is a piece with the highest score
//      is merged (ties: the leftmost pair), until no pair is a piece;
//   4. each symbol becomes its piece; a symbol that is not a piece falls back
//      to its bytes as "<0xNN>" BYTE tokens, or to unk when the vocabulary has
//      no byte token for a byte (one unk per byte), or has no byte tokens at
//      all (one unk per character).
// Only NORMAL and USER_DEFINED pieces take part in step 3 and 4; USER_DEFINED
// pieces are merged like normal ones, not matched whole in the text first.
// Control tokens written in the text ("<s>", "</s>") are NOT parsed as
// specials: they are plain text and encode to ordinary pieces.
//
// With parse_special (a rendered chat template), CONTROL, UNKNOWN and
// USER_DEFINED pieces written in the text are cut out first (leftmost,
// longest) and become their ids; the text between them is encoded as above,
// with the dummy-prefix space added only to text at the start or right after
// such a piece (llama.cpp's SentencePiece behaviour).
//
// Decode: "▁" becomes ' ', a BYTE token "<0xNN>" becomes that raw byte (so a
// multi-byte character split over byte tokens reassembles), CONTROL and
// UNUSED tokens become "", UNKNOWN becomes "▅" (U+2585, as llama.cpp prints
// it). The leading space of a piece that follows BOS, or that starts the
// sequence, is dropped (llama2.c: `if prev == BOS and piece[0] == ' '`), so
// Decode(Encode(text, add_bos)) == text for either add_bos.
//
// Thread-safe for concurrent const use; cheap to move, copying copies the
// vocabulary.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/vocab.h"
#include "tokenizer/tokenizer.h"

namespace paged {

class SpTokenizer final : public Tokenizer {
 public:
  // Validates `v` (non-empty; scores and types, one per piece; bos/eos/unk -1
  // or a valid id; an unk or byte tokens so that any text can be encoded) and
  // builds the piece lookup. INVALID_ARGUMENT when it does not validate.
  static absl::StatusOr<SpTokenizer> Create(Vocab v);

  // Token ids of `text` (any bytes; need not be valid UTF-8), preceded by BOS
  // when `add_bos` and the vocabulary has one. "" gives no tokens (or BOS).
  std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                              bool parse_special = false) const override;

  // The text of `token` as it follows `prev_token` in a stream: its leading
  // space is dropped when `prev_token` is BOS or kStartOfSequence. A byte
  // token gives one raw byte, possibly part of a UTF-8 character; an id
  // outside the vocabulary gives "".
  std::string DecodePiece(int32_t prev_token, int32_t token) const override;

  using Tokenizer::Decode;

  // The piece of `id` as the vocabulary writes it; "" outside it.
  std::string IdToPiece(int32_t id) const override;
  // Id of the piece whose text is exactly `piece` ("▁the", "<0x0A>", "<s>"),
  // any type; -1 when there is none.
  int32_t PieceToId(std::string_view piece) const override;

  bool IsEos(int32_t token) const override { return token >= 0 && token == vocab_.eos_id; }
  bool IsBos(int32_t token) const { return token >= 0 && token == vocab_.bos_id; }
  // CONTROL (BOS, EOS, ...) tokens, which decode to "".
  bool IsControl(int32_t token) const override;
  int32_t bos_id() const override { return vocab_.bos_id; }
  int32_t eos_id() const override { return vocab_.eos_id; }
  int32_t unk_id() const { return vocab_.unk_id; }
  size_t vocab_size() const override { return vocab_.size(); }
  const Vocab& vocab() const { return vocab_; }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

  SpTokenizer() = default;
  // Id of a piece that encoding may produce (NORMAL, USER_DEFINED), or -1.
  int32_t MergeableId(std::string_view text) const;
  // Appends the tokens of a symbol that is no piece: byte tokens or unk.
  void AppendFallback(std::string_view symbol, std::vector<int32_t>* out) const;
  // Appends the tokens of `text` (non-empty), with the dummy prefix or not.
  void EncodeText(std::string_view text, bool dummy_prefix, std::vector<int32_t>* out) const;

  Vocab vocab_;
  PieceMap mergeable_;                   // NORMAL and USER_DEFINED pieces -> id
  PieceMap all_pieces_;                  // every piece -> its lowest id
  std::array<int32_t, 256> byte_ids_{};  // BYTE token of each byte value, or -1
  bool has_byte_tokens_ = false;
  size_t max_piece_bytes_ = 0;      // longest mergeable piece
  std::vector<std::string> texts_;  // decoded text of each id
  // Pieces parse_special cuts out (CONTROL, UNKNOWN, USER_DEFINED), longest
  // first, by their first byte.
  std::array<std::vector<int32_t>, 256> special_by_byte_;
};

}  // namespace paged
