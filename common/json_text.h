// Parsing JSON text for the readers of model and tokenizer files.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace paged {

// Parses `text` as JSON. The error (InvalidArgument) reads "<what> is not
// valid JSON: parse error at line L, column C: ..." on one line, without
// quoting the input.
absl::StatusOr<nlohmann::json> ParseJsonText(std::string_view text, std::string_view what);

}  // namespace paged
