// Attention of the decode rows of a step (sequences with n_new == 1) on a
// kernel of their own. LaunchAttention (attention.h) calls it for those rows
// and runs the CUDA-core kernel for the rest; nothing else needs to.
//
// A row reads each key once, so the kernel is one pass over the keys in
// registers, with nothing staged in shared memory: a key's head_dim is
// spread over a few lanes (16 bytes each: 16 lanes for 128 f16 values), so
// a warp scores 32 / lanes keys at a time, the loads of the next keys
// already in flight; each group of lanes keeps an online softmax per query
// head of the kv head (grouped-query attention reads K and V once for the
// group), and the groups, then the warps, merge at the end. Work items are
// (sequence, kv head, split of the keys); a short row is still split when
// the batch is small, so that a batch-1 step fills the device, and the last
// split to finish merges the others (attention_util.cuh), in split order:
// the result does not depend on timing.
#pragma once

#include "worker/backends/cuda/attention.h"

namespace paged::cuda {

// Fewest keys of a decode split, and the most splits of one row.
inline constexpr int kDecodeSplitKeys = 32;
inline constexpr int kDecodeMaxSplits = 16;

// Splits of a decode row of `keys` keys at most (sizes the partials).
int AttentionDecodeMaxSplits(int keys);

// Whether the decode kernel takes the decode rows of `a` (KV alignment,
// head_dim up to 32 lanes of 16 bytes, at most 8 query heads per kv head);
// LaunchAttention asks it.
bool AttentionDecodeSupports(const AttentionArgs& a);

// Runs every sequence of `a` with n_new == 1 (others are skipped): writes
// their rows of a.out. partials / counters as LaunchAttention's, with room
// for `max_splits` splits a row. Needs AttentionDecodeSupports(a).
CudaError LaunchAttentionDecode(const AttentionArgs& a, int max_splits, float* partials,
                                int32_t* counters, cudaStream_t stream);

// Process-wide switch of the decode kernel. Off by default until it has run
// on a GPU: it was written in a session with no device time left, so neither
// its tests nor its timing have run (docs/BENCHMARKS.md). Environment
// PAGED_CUDA_ATTN_DECODE=1 turns it on; the GPU tests run both kernels.
// Off, decode rows run on the CUDA-core kernel (attention.h).
void SetAttentionDecode(bool on);
bool AttentionDecodeOn();

}  // namespace paged::cuda
