// pagectl inspect: what a segment (or a model file, as it would be stored)
// holds.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"

namespace paged {

// The JSON description of a header; `state` overrides the header's state
// name (e.g. "NOT_LOADED" for a planned layout).
nlohmann::json DescribeSegment(const SegmentHeader& h, std::string_view state);
// A human-readable table of the same.
std::string FormatSegmentTable(const nlohmann::json& d);

// `pagectl inspect --segment NAME` / `--model PATH [--weight-format F]`.
absl::StatusOr<nlohmann::json> InspectSegment(const std::string& segment);
absl::StatusOr<nlohmann::json> InspectModel(const std::string& path,
                                            const std::string& weight_format);

}  // namespace paged
