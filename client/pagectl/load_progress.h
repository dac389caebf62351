// How far a paged-store is in loading its segment, as another process can
// see it: the header says LOADING or READY, which tensors there are, and the
// weight bytes written so far (SegmentHeader::loaded_bytes, which the store
// raises as it fills the segment).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"

namespace paged::pagectl {

struct LoadProgress {
  std::string state = "EMPTY";  // "EMPTY" (being created), "LOADING", "READY"
  uint64_t done = 0;            // weight bytes written
  uint64_t total = 0;           // weight bytes to write
  std::string model_path;
};

// The progress a header shows (its counts clamped: it is not validated).
LoadProgress ProgressOf(const SegmentHeader& h);

// The progress of segment `name`. NOT_FOUND while it does not exist; EMPTY
// while it is too small to hold a header (the store is creating it).
absl::StatusOr<LoadProgress> ReadLoadProgress(const std::string& name);

}  // namespace paged::pagectl
