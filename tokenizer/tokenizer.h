// The tokenizer interface the coordinator, paged-run and the tools use:
// text in, token ids out, and the text of each generated token as it
// streams. Implemented by SpTokenizer (GGUF "llama" SentencePiece vocab) and
// HfTokenizer (HF tokenizer.json: byte-level BPE and SentencePiece-BPE).
// Implementations are immutable after creation and thread-safe for const use.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace paged {

class Tokenizer {
 public:
  // `prev_token` value for the first token of a sequence (see DecodePiece).
  static constexpr int32_t kStartOfSequence = -1;

  virtual ~Tokenizer() = default;

  // Token ids of `text` (any bytes), preceded by BOS when `add_bos` and the
  // tokenizer adds one. With `parse_special`, special / control tokens
  // written in the text ("<|im_start|>", "<s>") become their ids (a rendered
  // chat template); without it they are plain text.
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_bos,
                                      bool parse_special = false) const = 0;

  // The text of `token` as it follows `prev_token` in a stream (a leading
  // space a tokenizer strips at the start of a sequence is dropped when
  // `prev_token` is BOS or kStartOfSequence). May be part of a UTF-8
  // character. Special tokens give "". An id outside the vocabulary gives "".
  virtual std::string DecodePiece(int32_t prev_token, int32_t token) const = 0;

  // The concatenated DecodePiece of each id, the first one following
  // kStartOfSequence. Implementations may override for exactness (byte-level
  // BPE decodes the whole byte string at once).
  virtual std::string Decode(std::span<const int32_t> ids) const;

  // The vocabulary entry of `id` as written in the model ("▁the", "Ġthe",
  // "<|eot_id|>"); "" outside the vocabulary.
  virtual std::string IdToPiece(int32_t id) const = 0;
  // Id of the vocabulary entry `piece`; -1 when there is none.
  virtual int32_t PieceToId(std::string_view piece) const = 0;

  // An end-of-sequence token (a model may have several: Llama 3 ends a turn
  // with <|eot_id|> and text with <|end_of_text|>).
  virtual bool IsEos(int32_t token) const = 0;
  // Special / control tokens (they decode to "").
  virtual bool IsControl(int32_t token) const = 0;
  virtual int32_t bos_id() const = 0;  // -1: none
  virtual int32_t eos_id() const = 0;  // the primary EOS; -1: none
  virtual size_t vocab_size() const = 0;
};

}  // namespace paged
