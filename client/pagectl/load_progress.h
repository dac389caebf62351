// How far a paged-store is in loading its segment, as another process can
// see it: the header says LOADING or READY and which tensors there are; the
// bytes done are estimated from the data itself. The store fills a fresh
// (zeroed) segment one tensor after the other, globals first, then layer 0's
// tensors, layer 1's, ... (store/segment_builder.cc FillSegment), so the
// last tensor whose final bytes are no longer all zero marks how far it got
// (a tensor whose own tail is zero is counted when a later one is written).
// Reads go through pread on the shared-memory file: a segment truncated
// meanwhile reads as zeros instead of faulting.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "common/segment_layout.h"

namespace paged::pagectl {

struct LoadProgress {
  std::string state = "EMPTY";  // "EMPTY" (being created), "LOADING", "READY"
  uint64_t done = 0;            // weight bytes written (estimated while LOADING)
  uint64_t total = 0;           // weight bytes to write
  std::string model_path;
};

// Reads `n` bytes at `offset` of the segment into `out`; false when it cannot
// (past the end).
using SegmentReader = std::function<bool(uint64_t offset, void* out, size_t n)>;

// The estimate above for header `h` of a segment of `segment_bytes`; tensors
// whose bounds do not fit the segment are skipped (the header of a loading
// segment carries no checksum yet).
uint64_t EstimateLoadedBytes(const SegmentHeader& h, uint64_t segment_bytes,
                             const SegmentReader& read);

// The progress of segment `name`. NOT_FOUND while it does not exist; EMPTY
// while it is too small to hold a header (the store is creating it).
absl::StatusOr<LoadProgress> ReadLoadProgress(const std::string& name);

}  // namespace paged::pagectl
