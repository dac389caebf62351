// GGUF v3 model files (llama, mistral, qwen2) as a ModelSource.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "store/gguf.h"
#include "store/model_source.h"

namespace paged {

absl::StatusOr<std::unique_ptr<ModelSource>> OpenGgufModel(const std::string& path);

// The model-building step of OpenGgufModel, on a file already parsed from
// `data` (`size` bytes; the tensors of the result point into it, so it must
// outlive them). Sets everything but `fingerprint` and `files`; errors are
// prefixed with file.origin, which also becomes the source's `path`.
absl::StatusOr<std::unique_ptr<ModelSource>> GgufToModelSource(const GgufFile& file,
                                                               const uint8_t* data, uint64_t size);

// The canonical name and layer of a llama.cpp tensor name
// ("blk.12.attn_q.weight" -> "wq", 12; "token_embd.weight" -> "tok_embd", -1);
// false for names the reader does not know.
bool GgufCanonicalName(std::string_view gguf_name, std::string* canonical, int* layer);

}  // namespace paged
