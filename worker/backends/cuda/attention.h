// Causal grouped-query attention over the paged KV cache, for a step that
// mixes prefill chunks (many rows per sequence) and decode rows (one row),
// with an optional sliding window (keys before it are neither read nor
// scored), score scale and soft-cap (gemma), and attention sinks (gpt-oss: a
// per-head logit in each softmax's denominator, applied where a row's
// output is normalised).
//
// Work items are (sequence, kv head, unit): for a prefill sequence a unit is
// a tile of consecutive rows (all query heads of the kv head), attending to
// its whole causal range; for a decode row whose context is long, units are
// splits of the context (split-K): each writes a partial softmax state
// (max, sum, unnormalised output) and the last split to finish merges them.
// A persistent grid of blocks walks the items; each block derives the item
// list from `seqs` itself, so the host needs no per-sequence information.
//
// Prefill sequences (n_new > 1) with an f16/bf16 cache and head_dim 64 or 128
// go to a tensor-core kernel instead (attention_prefill_mma.h), and decode
// rows, where the decode kernel is switched on, to it (attention_decode.h),
// each launched before this one on the same stream; each kernel skips the
// others' rows, and this one is not launched when nothing is left for it.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

struct AttentionArgs {
  const float* q;           // [n, n_heads * head_dim]
  float* out;               // [n, n_heads * head_dim]
  const AttnSeqView* seqs;  // [n_seqs] device
  int n_seqs = 0;
  const int32_t* tables;  // block ids, device; seq s uses tables[seqs[s].table_offset ...]
  KvView kv;
  int n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int max_ctx = 0;      // longest start_pos + n_new of the step (sizes the split scratch)
  int num_sms = 1;      // multiprocessors of the device (grid size)
  float scale = 0.f;    // multiplies q . k; 0: 1 / sqrt(head_dim)
  float softcap = 0.f;  // > 0: score = softcap * tanh(score / softcap)
  int window = 0;       // > 0: a row at position p sees keys (p - window, p] only
  // [n_heads] device, or null: each head's sink logit joins its softmax's
  // denominator (gpt-oss), not scaled or capped, adding no value.
  const float* sinks = nullptr;
  bool decode_rows = false;  // every sequence has one new row: no prefill launch
};

// Largest head_dim and sequence count the kernel supports.
inline constexpr int kAttnMaxHeadDim = 256;
inline constexpr int kAttnMaxSeqs = 8192;

// Scratch of a launch: split-K partials (float, bytes below) and completion
// counters (int32 [n_seqs * n_kv_heads]) that must be zero before the first
// launch; each launch leaves them zero again. Keep the counters in their own
// buffer so that partials of one launch never land on counters of another.
uint64_t AttentionPartialBytes(const AttentionArgs& a);
inline int64_t AttentionCounterCount(const AttentionArgs& a) {
  return int64_t(a.n_seqs) * a.n_kv_heads;
}

CudaError LaunchAttention(const AttentionArgs& a, float* partials, int32_t* counters,
                          cudaStream_t stream);

// Process-wide switch of the tensor-core prefill path, on by default; off,
// every sequence runs on the CUDA-core kernel. For timing comparisons.
void SetAttentionPrefillMma(bool on);

}  // namespace paged::cuda
