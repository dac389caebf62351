// An in-memory ModelSource with random f32 (or other) tensors, for layout and
// conversion tests that need no file.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "store/model_source.h"

namespace paged::testing {

struct SyntheticModel {
  ModelSource source;
  std::vector<std::unique_ptr<std::vector<uint8_t>>> storage;
};

inline ModelConfig SmallConfig() {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.n_layers = 3;
  c.hidden = 64;
  c.ffn = 172;  // not a multiple of the quantization groups on purpose
  c.n_heads = 8;
  c.n_kv_heads = 2;
  c.head_dim = 8;
  c.vocab = 100;
  c.max_context = 256;
  c.bos_id = 1;
  c.n_eos = 1;
  c.eos_ids[0] = 2;
  return c;
}

// Every tensor the config needs, f32 values uniform in [-1, 1].
inline std::unique_ptr<SyntheticModel> MakeSyntheticModel(const ModelConfig& c, uint32_t seed = 7) {
  auto m = std::make_unique<SyntheticModel>();
  m->source.path = "synthetic";
  m->source.format = "synthetic";
  m->source.config = c;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  auto add = [&](std::string name, int layer, int64_t rows, int64_t cols) {
    auto buf = std::make_unique<std::vector<uint8_t>>(size_t(rows * cols * 4));
    auto* f = reinterpret_cast<float*>(buf->data());
    for (int64_t i = 0; i < rows * cols; ++i) f[i] = dist(rng);
    SourceTensor t;
    t.name = std::move(name);
    t.layer = layer;
    t.type = SourceType::kF32;
    t.rows = rows;
    t.cols = cols;
    t.data = buf->data();
    t.bytes = buf->size();
    m->source.tensors.push_back(t);
    m->storage.push_back(std::move(buf));
  };
  add("tok_embd", -1, c.vocab, c.hidden);
  add("output_norm", -1, 1, c.hidden);
  if (!c.tied_embeddings) add("output", -1, c.vocab, c.hidden);
  for (int l = 0; l < c.n_layers; ++l) {
    add("attn_norm", l, 1, c.hidden);
    add("wq", l, c.q_dim(), c.hidden);
    add("wk", l, c.kv_dim(), c.hidden);
    add("wv", l, c.kv_dim(), c.hidden);
    add("wo", l, c.hidden, c.q_dim());
    if (c.qkv_bias) {
      add("bq", l, 1, c.q_dim());
      add("bk", l, 1, c.kv_dim());
      add("bv", l, 1, c.kv_dim());
    }
    add("ffn_norm", l, 1, c.hidden);
    add("w_gate", l, c.ffn, c.hidden);
    add("w_up", l, c.ffn, c.hidden);
    add("w_down", l, c.hidden, c.ffn);
  }
  return m;
}

}  // namespace paged::testing
