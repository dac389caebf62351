#include "client/pagectl/load_progress.h"

#include <algorithm>
#include <cstring>

#include "common/segment.h"

namespace paged::pagectl {
namespace {

// Payload + scale bytes of every weight (store/segment_builder.h's
// WeightBytes, with the tensor counts clamped: the header is not validated).
uint64_t TotalWeightBytes(const SegmentHeader& h) {
  uint64_t n = 0;
  for (uint32_t i = 0; i < std::min<uint32_t>(h.n_global_tensors, kMaxGlobalTensors); ++i)
    n += h.global_tensors[i].bytes + h.global_tensors[i].scale_bytes;
  for (int l = 0; l < std::clamp(h.model.n_layers, 0, kMaxSegmentLayers); ++l) {
    const LayerTable& t = h.Layer(l);
    for (uint32_t i = 0; i < std::min<uint32_t>(t.n_tensors, kMaxLayerTensors); ++i)
      n += t.tensors[i].bytes + t.tensors[i].scale_bytes;
  }
  return n;
}

}  // namespace

LoadProgress ProgressOf(const SegmentHeader& h) {
  LoadProgress p;
  p.state = std::string(SegmentStateName(h.state));
  p.model_path = std::string(h.model_path, strnlen(h.model_path, sizeof(h.model_path)));
  p.total = TotalWeightBytes(h);
  if (h.state == uint32_t(SegmentState::kReady)) {
    p.done = p.total;
  } else if (h.state == uint32_t(SegmentState::kLoading)) {
    p.done = std::min(h.loaded_bytes, p.total);
  }
  return p;
}

absl::StatusOr<LoadProgress> ReadLoadProgress(const std::string& name) {
  uint64_t size = 0;
  absl::StatusOr<std::unique_ptr<SegmentHeader>> h = PeekSegmentHeader(name, &size);
  // Too small for a header: the store is creating it (open, then truncate).
  if (!h.ok() && h.status().code() == absl::StatusCode::kDataLoss) return LoadProgress{};
  if (!h.ok()) return h.status();
  return ProgressOf(**h);
}

}  // namespace paged::pagectl
