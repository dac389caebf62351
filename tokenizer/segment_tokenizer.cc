#include "tokenizer/segment_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "tokenizer/hf_tokenizer.h"
#include "tokenizer/sp_tokenizer.h"

namespace paged {

absl::StatusOr<std::unique_ptr<const Tokenizer>> CreateTokenizer(const TokenizerBundle& b,
                                                                 std::string_view origin) {
  switch (b.kind) {
    case TokenizerKind::kNone:
      return std::unique_ptr<const Tokenizer>();
    case TokenizerKind::kSentencePieceGguf: {
      absl::StatusOr<Vocab> v = ParseVocab(b.payload);
      if (!v.ok()) return Annotate(v.status(), origin);
      absl::StatusOr<SpTokenizer> t = SpTokenizer::Create(*std::move(v));
      if (!t.ok()) return Annotate(t.status(), origin);
      return std::unique_ptr<const Tokenizer>(std::make_unique<SpTokenizer>(*std::move(t)));
    }
    case TokenizerKind::kHfJson: {
      absl::StatusOr<HfTokenizerOptions> o = HfTokenizerOptions::FromJson(b.options);
      if (!o.ok()) return Annotate(o.status(), origin);
      absl::StatusOr<std::unique_ptr<HfTokenizer>> t = HfTokenizer::Create(b.payload, *o, origin);
      if (!t.ok()) return t.status();
      return std::unique_ptr<const Tokenizer>(*std::move(t));
    }
  }
  return absl::DataLossError(absl::StrCat(std::string(origin), ": unknown tokenizer kind ",
                                          static_cast<uint32_t>(b.kind)));
}

absl::StatusOr<LoadedTokenizer> LoadSegmentTokenizer(const SegmentMapping& seg) {
  ASSIGN_OR_RETURN(TokenizerBundle b, seg.ReadTokenizerBundle());
  LoadedTokenizer out;
  ASSIGN_OR_RETURN(out.tokenizer,
                   CreateTokenizer(b, absl::StrCat("segment ", seg.name(), " tokenizer")));
  out.chat_template = std::move(b.chat_template);
  return out;
}

}  // namespace paged
