#include "store/model_source.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "store/gguf_model.h"
#include "store/hf_checkpoint.h"

namespace paged {

absl::StatusOr<std::unique_ptr<ModelSource>> OpenModel(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st))
    return absl::NotFoundError(absl::StrCat(path, ": no such file or directory"));
  if (std::filesystem::is_directory(st)) return OpenHfCheckpoint(path);
  if (absl::EndsWith(path, ".gguf")) return OpenGgufModel(path);
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": not a model (expected an HF checkpoint directory or a .gguf file)"));
}

TokenizerBundle TokenizerBundleOf(const ModelSource& src) {
  TokenizerBundle b = src.tokenizer;
  if (b.kind == TokenizerKind::kNone && !src.vocab.pieces.empty()) {
    b.kind = TokenizerKind::kSentencePieceGguf;
    b.payload = SerializeVocab(src.vocab);
  }
  return b;
}

}  // namespace paged
