#include "worker/engine/model_image.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace paged {
namespace {

WeightRef RefOf(const TensorEntry& e, const uint8_t* origin) {
  WeightRef w;
  w.data = origin + e.offset;
  w.scales = e.scale_bytes ? origin + e.scale_offset : nullptr;
  w.dtype = e.Type();
  w.group = int(e.group);
  w.rows = e.rows;
  w.cols = e.cols;
  return w;
}

}  // namespace

WeightRef ModelImage::Global(std::string_view name) const {
  const TensorEntry* e = header->FindGlobal(name);
  return e == nullptr ? WeightRef{} : RefOf(*e, weights);
}

WeightRef ModelImage::LayerTensor(int layer, std::string_view name) const {
  const TensorEntry* e = header->LayerTensor(layer, name);
  return e == nullptr ? WeightRef{} : RefOf(*e, weights + header->LayerOffset(layer));
}

const float* ModelImage::LayerVector(int layer, std::string_view name) const {
  const TensorEntry* e = header->LayerTensor(layer, name);
  if (e == nullptr) return nullptr;
  return reinterpret_cast<const float*>(weights + header->LayerOffset(layer) + e->offset);
}

KvLayerView ModelImage::KvLayer(int layer) const {
  KvLayerView v;
  v.base = kv + (header->KvBlockOffset(layer, 0) - header->kv_offset);
  v.dtype = static_cast<DType>(header->kv_dtype);
  v.block_tokens = int(header->block_tokens);
  v.kv_dim = header->model.kv_dim();
  v.block_bytes = header->kv_block_bytes;
  v.n_blocks = header->kv_n_blocks;
  return v;
}

ModelImage ImageOf(const SegmentMapping& m) {
  ModelImage img;
  img.header = &m.header();
  img.weights = m.weights_base();
  img.kv = m.kv_base();
  return img;
}

}  // namespace paged
