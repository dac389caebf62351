// Causal grouped-query attention over the paged KV cache on the CPU, for the
// CPU backend of --device=cpu (HostExecutor::Attention): the reference's
// scores (worker/backends/cpu/cpu_attention.cc: each query row against every
// key of its window, scaled and soft-capped, a softmax with the maximum
// subtracted and the head's sink in the denominator, the weighted sum of the
// values), vectorized with Highway and split by keys. A work item is a query
// row's run of keys (an eighth of its window, whole KV blocks of 16, 64 to
// 512 keys) for all heads: the keys go a KV block at a time, each key's whole
// row (every kv head, contiguous) read once for the scores, each score a dot
// over head_dim in vectors, the exponentials in vectors, the weighted sum a
// multiply-add per vector of head_dim held in registers across the block's
// keys. Each item leaves its partial state (maximum, sum, unnormalised
// output) and a second pass merges a row's items in order with the sink.
// The results differ from the reference's by the order of the f32 sums and
// by Highway's exp (1 ulp); an item's bounds depend on its window's length
// alone, so nothing depends on the thread count, the row range or the batch.
#pragma once

#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/engine/types.h"

namespace paged::cpu_exec {

// As Backend::Attention (worker/engine/backend.h), on host memory; the KV
// dtype f32, f16 or bf16.
void Attention(ExecPool& pool, const float* q, const AttnSeq* seqs, int n_seqs,
               const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
               const KvLayerView& kv, const AttnParams& p, float* out);

}  // namespace paged::cpu_exec
