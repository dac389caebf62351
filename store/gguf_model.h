// GGUF v3 model files (llama, mistral, qwen2) as a ModelSource.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "store/model_source.h"

namespace paged {

absl::StatusOr<std::unique_ptr<ModelSource>> OpenGgufModel(const std::string& path);

}  // namespace paged
