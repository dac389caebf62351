// Causal grouped-query attention over the paged KV cache on the CPU, for the
// CPU backend of --device=cpu (HostExecutor::Attention): the reference's
// algorithm (worker/backends/cpu/cpu_attention.cc: the scores of a query row
// against every key of its window, scaled and soft-capped, a softmax with
// the maximum subtracted and the head's sink in the denominator, the
// weighted sum of the values), vectorized with Highway. A work item is a
// query row and a kv head: each key and value row of the head is widened to
// f32 once for the query heads of its group, each score is a dot over
// head_dim in vectors, the softmax's exponentials are vectors, the weighted
// sum a multiply-add per vector of head_dim. The results differ from the
// reference's by the order of the f32 sums and by Highway's exp (1 ulp),
// not by thread count, row range or batch: an item's operations are fixed.
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
