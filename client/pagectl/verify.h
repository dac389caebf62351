// pagectl verify: maps a segment read-only and checks every tensor against
// the model file it was built from (per-tensor FNV-1a checksums of the bytes
// the store should have written).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace paged {

struct VerifyResult {
  int tensors_checked = 0;
  uint64_t bytes_checked = 0;
};

// `model_path` empty: the path recorded in the segment header. Any mismatch
// is a DATA_LOSS error naming the tensor and layer.
absl::StatusOr<VerifyResult> VerifySegment(const std::string& segment,
                                           const std::string& model_path);

}  // namespace paged
