// Tensor-core (mma.sync m16n8k16) flash attention for the prefill rows of an
// attention step: sequences with n_new > 1, f16 or bf16 KV cache, head_dim 64
// or 128. LaunchAttention (attention.h) calls it for those sequences and runs
// its own kernel for the rest; nothing else needs to.
//
// Work items are (sequence, query head, tile of 64 rows); a block of 4 warps
// (16 rows each) walks the tile's causal key range (from its first row's
// sliding window on, when there is one) 64 keys at a time through the block
// table (cp.async, double-buffered). Scores and the softmax stay in
// f32 registers. Both mma operands that are not already 16-bit, q and the
// probabilities P, are split into hi + lo 16-bit halves (two mmas each), so
// the result matches the f32 path to ~1e-6 relative instead of the ~1e-3 of a
// single 16-bit rounding.
#pragma once

#include "worker/backends/cuda/attention.h"

namespace paged::cuda {

// Whether the mma path takes the prefill sequences of `a` (dtype, head_dim,
// alignment of the cache and of q / out); LaunchAttention asks it.
bool AttentionPrefillMmaSupports(const AttentionArgs& a);

// Runs every sequence of `a` with n_new > 1 (others are skipped): writes
// their rows of a.out. Needs AttentionPrefillMmaSupports(a).
CudaError LaunchAttentionPrefillMma(const AttentionArgs& a, cudaStream_t stream);

}  // namespace paged::cuda
