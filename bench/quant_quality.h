// Accuracy of the store's weight formats against f32: teacher-forced top-1
// agreement over a token sequence, and the logits' relative error. Shared by
// bench/quant_quality.cc (table) and tests/unit/quant_quality_test.cc
// (thresholds).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paged {

struct FormatQuality {
  std::string format;
  double top1_agreement = 0;  // fraction of positions whose argmax equals f32's
  double mean_rel_error = 0;  // mean over positions of ||l - l_f32|| / ||l_f32||
  double max_rel_error = 0;
};

// Runs `tokens` teacher-forced through `model_path` stored as f32 and as each
// of `formats` (CPU backend) and compares.
absl::StatusOr<std::vector<FormatQuality>> MeasureQuality(const std::string& model_path,
                                                          const std::vector<int32_t>& tokens,
                                                          const std::vector<std::string>& formats);

}  // namespace paged
