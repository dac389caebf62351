#include "common/segment_layout.h"

#include <cstring>

namespace paged {

std::string_view SegmentStateName(uint32_t state) {
  switch (static_cast<SegmentState>(state)) {
    case SegmentState::kEmpty:
      return "EMPTY";
    case SegmentState::kLoading:
      return "LOADING";
    case SegmentState::kReady:
      return "READY";
  }
  return "INVALID";
}

std::string_view WeightFormatName(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kInt8:
      return "int8";
    case WeightFormat::kInt4:
      return "int4";
    case WeightFormat::kNative:
      return "native";
  }
  return "unknown";
}

DType WeightFormatDType(WeightFormat f) {
  switch (f) {
    case WeightFormat::kF32:
      return DType::kF32;
    case WeightFormat::kF16:
      return DType::kF16;
    case WeightFormat::kBF16:
      return DType::kBF16;
    case WeightFormat::kInt8:
      return DType::kI8;
    case WeightFormat::kInt4:
      return DType::kI4;
    case WeightFormat::kNative:
      return DType::kF16;
  }
  return DType::kF16;
}

std::string_view TensorEntry::Name() const { return {name, strnlen(name, sizeof(name))}; }

namespace {
const TensorEntry* FindIn(const TensorEntry* begin, uint32_t n, uint32_t cap,
                          std::string_view name) {
  for (uint32_t i = 0; i < n && i < cap; ++i) {
    if (begin[i].Name() == name) return &begin[i];
  }
  return nullptr;
}
}  // namespace

const TensorEntry* SegmentHeader::FindGlobal(std::string_view name) const {
  return FindIn(global_tensors, n_global_tensors, kMaxGlobalTensors, name);
}
const TensorEntry* LayerTable::Find(std::string_view name) const {
  return FindIn(tensors, n_tensors, kMaxLayerTensors, name);
}
const TensorEntry* ExpertTable::Find(std::string_view name) const {
  return FindIn(tensors, n_experts > 0 ? n_tensors : 0, kExpertTensors, name);
}

uint64_t Fnv1a64(const void* data, size_t n, uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed;
  // Eight bytes per round keeps checksumming a multi-GB segment fast; the
  // tail is folded byte by byte.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 1099511628211ull;
  }
  for (; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace paged
