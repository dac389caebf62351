// Data the engine and its backends exchange. Plain structs, no CUDA types.
//
// Memory: every pointer handed to a Backend op points into memory of that
// backend (host memory for the CPU backend, device memory for CUDA), unless
// the comment says "host".
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "common/model_config.h"
#include "common/step.h"

namespace paged {

// A weight matrix [rows, cols] (out x in) in backend memory. For quantized
// dtypes `scales` holds f16 [rows][ceil(cols / group)] (common/quant.h).
struct WeightRef {
  const void* data = nullptr;
  const void* scales = nullptr;
  DType dtype = DType::kF32;
  int group = 0;
  int64_t rows = 0;
  int64_t cols = 0;
};

// The rows of a matrix that the host computes in a hybrid step
// (docs/design.md, "Two paths to the weights"): rows [row0, w.rows) of the
// whole matrix `w`, read in place from host memory (the segment's read-only
// mapping) by the worker's HostExecutor. The backend computes rows [0, row0)
// from the layer's device view of the same matrix, whose `rows` is row0.
struct HostRows {
  WeightRef w;                  // the whole matrix in host memory; rows == 0: not split
  int64_t row0 = 0;             // first host-computed row
  const float* bias = nullptr;  // [w.rows] host, or null
  bool any() const { return w.rows > row0; }
};

// A layer's host-computed rows, one entry per matrix.
struct LayerHostRows {
  HostRows wq, wk, wv, wo, w_gate, w_up, w_down;
  bool any() const {
    return wq.any() || wk.any() || wv.any() || wo.any() || w_gate.any() || w_up.any() ||
           w_down.any();
  }
};

// The experts of a sparse layer: expert e's matrices are expert 0's views
// moved by e * stride bytes (one block per expert, docs/store.md).
struct ExpertWeights {
  int n = 0;                 // experts; 0: a dense layer
  uint64_t stride = 0;       // bytes from one expert's block to the next
  WeightRef gate, up, down;  // expert 0's: [expert_ffn, hidden] x2, [hidden, expert_ffn]
  // Expert-level paging: the layer's weights hold no expert (gate / up /
  // down give only shapes and types); the engine asks the provider for the
  // experts a chunk routes to (WeightProvider::AcquireExperts).
  bool by_request = false;

  static WeightRef Moved(WeightRef w, uint64_t by) {
    w.data = static_cast<const uint8_t*>(w.data) + by;
    if (w.scales != nullptr) w.scales = static_cast<const uint8_t*>(w.scales) + by;
    return w;
  }
  WeightRef Gate(int e) const { return Moved(gate, uint64_t(e) * stride); }
  WeightRef Up(int e) const { return Moved(up, uint64_t(e) * stride); }
  WeightRef Down(int e) const { return Moved(down, uint64_t(e) * stride); }
};

// One routed expert as a chunk uses it (expert-level paging): its matrices
// in backend memory (the device expert cache), or in host memory (the
// segment's read-only mapping) for the host executor to compute in place.
struct ExpertRef {
  WeightRef gate, up, down;  // [expert_ffn, hidden] x2, [hidden, expert_ffn]
  bool on_host = false;
  // on_host, gpt-oss (ModelConfig::expert_bias): its rows of the layer's
  // expert bias tables in host memory (the segment's); null otherwise (the
  // device path reads LayerWeights::exp_*_b).
  const float* gate_b = nullptr;  // [expert_ffn]
  const float* up_b = nullptr;    // [expert_ffn]
  const float* down_b = nullptr;  // [hidden]
};

// One layer's tensors. Norms and biases are f32 vectors.
struct LayerWeights {
  const float* attn_norm = nullptr;  // [hidden]
  WeightRef wq, wk, wv, wo;          // [q_dim, hidden], [kv_dim, hidden] x2, [hidden, q_dim]
  const float* bq = nullptr;         // [q_dim] or null
  const float* bk = nullptr;         // [kv_dim] or null
  const float* bv = nullptr;         // [kv_dim] or null
  const float* ffn_norm = nullptr;   // [hidden]
  WeightRef w_gate, w_up, w_down;    // [ffn, hidden] x2, [hidden, ffn]
  LayerHostRows host;                // rows the host computes (a hybrid step); empty: none
  // Present only where the config asks for them (qk_norm, sandwich_norm).
  const float* q_norm = nullptr;          // [head_dim], each q head before RoPE
  const float* k_norm = nullptr;          // [head_dim], each k head before RoPE
  const float* post_attn_norm = nullptr;  // [hidden], the attention output
  const float* post_ffn_norm = nullptr;   // [hidden], the MLP output
  // A sparse layer (ModelConfig::IsMoeLayer): no w_gate / w_up / w_down.
  WeightRef router;                            // [n_experts, hidden], f32
  ExpertWeights experts;                       // n == 0 for a dense layer
  WeightRef shexp_gate_inp;                    // [1, hidden] f32; rows == 0: no shared expert
  WeightRef shexp_gate, shexp_up, shexp_down;  // [shared_ffn, hidden] x2, [hidden, shared_ffn]
  // gpt_oss (ModelConfig::o_bias, attn_sinks, router_bias, expert_bias); null otherwise.
  const float* bo = nullptr;          // [hidden], the o-projection's bias
  const float* attn_sinks = nullptr;  // [n_heads], each head's sink logit
  const float* router_b = nullptr;    // [n_experts]
  const float* exp_gate_b = nullptr;  // [n_experts, expert_ffn], row e expert e's
  const float* exp_up_b = nullptr;    // [n_experts, expert_ffn]
  const float* exp_down_b = nullptr;  // [n_experts, hidden]
};

struct GlobalWeights {
  WeightRef tok_embd;                  // [vocab, hidden]; data null when on the host (below)
  const float* output_norm = nullptr;  // [hidden]
  WeightRef output;                    // [vocab, hidden]; == tok_embd when tied
  // The embedding table in host memory when the provider keeps it there (it
  // is read a few rows per step: the host gathers them and uploads the rows,
  // and the device memory buys resident layers); rows == 0 otherwise.
  WeightRef tok_embd_host;
};

// One layer's KV blocks as a backend sees them: block b holds K
// [block_tokens][kv_dim] at base + b * block_bytes and V right after it.
// Block ids index this view (for the resident case, the store's pool ids).
struct KvLayerView {
  void* base = nullptr;
  DType dtype = DType::kF16;  // f32, f16 or bf16
  int block_tokens = 16;
  int kv_dim = 0;
  uint64_t block_bytes = 0;
  uint64_t n_blocks = 0;
};

// One RoPE: the inverse frequencies follow from these (worker/engine/rope.h),
// and cos / sin are multiplied by attn_factor (yarn, longrope).
struct RopeParams {
  int head_dim = 0;
  float theta = 10000.f;
  RopeScaling scaling = RopeScaling::kNone;
  float factor = 1.f, low_freq_factor = 1.f, high_freq_factor = 4.f;  // llama3, linear, yarn
  int original_max_pos = 0;                                           // llama3, yarn
  float beta_fast = 32.f, beta_slow = 1.f;                            // yarn
  bool yarn_truncate = true;                                          // yarn
  float attn_factor = 1.f;
  float ext_factors[kMaxRopeFactors] = {};  // longrope: [head_dim / 2] frequency divisors
};

// How one layer's attention scores are formed, beyond causal GQA.
struct AttnParams {
  float scale = 0.f;    // multiplies q . k; 0: 1 / sqrt(head_dim)
  float softcap = 0.f;  // > 0: score = softcap * tanh(score / softcap), before the mask
  int32_t window = 0;   // > 0: the row at position p sees keys (p - window, p] only
  // [n_heads] in backend memory, or null: head h's softmax gets one more
  // logit, sinks[h] (not scaled or capped), that takes probability mass and
  // adds no value (gpt-oss's attention sinks).
  const float* sinks = nullptr;
  // Every sequence of the call has one new row (a decode step): a backend
  // may skip its prefill path.
  bool decode_rows = false;
};

// The engine runs each layer over the step's tokens in chunks of at most this
// many rows: a step may carry many more tokens (a whole batch of prompts, so
// that one pass over the layers serves them all) while the activations beyond
// the residual stream only need room for one chunk.
inline constexpr int kEngineChunkTokens = 2048;

// Attention work of one sequence inside a step, as the backend receives it
// (arrays of these live in backend memory).
struct AttnSeq {
  int32_t q_offset;      // first row of this sequence in the step's q / out
  int32_t n_new;         // rows (new tokens)
  int32_t start_pos;     // position of the first new token
  int32_t table_offset;  // first entry of its block table in the step's table array
};

}  // namespace paged
