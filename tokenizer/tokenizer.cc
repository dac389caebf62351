#include "tokenizer/tokenizer.h"

namespace paged {

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  int32_t prev = kStartOfSequence;
  for (int32_t id : ids) {
    out += DecodePiece(prev, id);
    prev = id;
  }
  return out;
}

}  // namespace paged
