// HF checkpoints: a directory with config.json and model.safetensors, or
// sharded model-0000X-of-0000N.safetensors with model.safetensors.index.json.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/model_config.h"
#include "store/model_source.h"

namespace paged {

// Parses config.json text; `origin` names the file in errors.
absl::StatusOr<ModelConfig> ParseHfConfig(std::string_view json, std::string_view origin);

absl::StatusOr<std::unique_ptr<ModelSource>> OpenHfCheckpoint(const std::string& dir);

}  // namespace paged
