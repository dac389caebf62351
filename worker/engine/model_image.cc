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

LayerWeights ModelImage::LayerAt(int layer, const uint8_t* block) const {
  const LayerTable& t = header->Layer(layer);
  auto ref = [&](std::string_view name) {
    const TensorEntry* e = t.Find(name);
    return e == nullptr ? WeightRef{} : RefOf(*e, block);
  };
  auto vec = [&](std::string_view name) -> const float* {
    const TensorEntry* e = t.Find(name);
    return e == nullptr ? nullptr : reinterpret_cast<const float*>(block + e->offset);
  };
  LayerWeights w;
  w.attn_norm = vec("attn_norm");
  w.wq = ref("wq");
  w.wk = ref("wk");
  w.wv = ref("wv");
  w.wo = ref("wo");
  w.bq = vec("bq");
  w.bk = vec("bk");
  w.bv = vec("bv");
  w.ffn_norm = vec("ffn_norm");
  w.w_gate = ref("w_gate");
  w.w_up = ref("w_up");
  w.w_down = ref("w_down");
  w.q_norm = vec("q_norm");
  w.k_norm = vec("k_norm");
  w.post_attn_norm = vec("post_attn_norm");
  w.post_ffn_norm = vec("post_ffn_norm");
  w.router = ref("router");
  w.shexp_gate_inp = ref("shexp_gate_inp");
  w.shexp_gate = ref("shexp_gate");
  w.shexp_up = ref("shexp_up");
  w.shexp_down = ref("shexp_down");
  w.bo = vec("bo");
  w.attn_sinks = vec("attn_sinks");
  w.router_b = vec("router_b");
  w.exp_gate_b = vec("exp_gate_b");
  w.exp_up_b = vec("exp_up_b");
  w.exp_down_b = vec("exp_down_b");
  const ExpertTable& x = t.experts;
  if (x.n_experts > 0) {
    w.experts.n = int(x.n_experts);
    w.experts.stride = x.stride;
    w.experts.gate = RefOf(x.tensors[0], block + x.offset);
    w.experts.up = RefOf(x.tensors[1], block + x.offset);
    w.experts.down = RefOf(x.tensors[2], block + x.offset);
  }
  return w;
}

ExpertRef ModelImage::ExpertAt(int layer, const uint8_t* expert_block) const {
  const ExpertTable& x = header->Layer(layer).experts;
  ExpertRef r;
  r.gate = RefOf(x.tensors[0], expert_block);
  r.up = RefOf(x.tensors[1], expert_block);
  r.down = RefOf(x.tensors[2], expert_block);
  return r;
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
