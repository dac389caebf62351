// The CPU backend's operations as free functions over host memory, one file
// per concern: cpu_matmul.cc (weight rows, MatMul, Embedding),
// cpu_attention.cc (the paged KV cache: KvWrite, Attention), cpu_ops.cc (the
// element-wise rest and sampling). fp32 arithmetic in plain loops that read
// like llama2.c's run.c; rows are split over a ThreadPool when the work is
// big enough to pay for the wake-up. Every sum over a row runs in the same
// order whatever the batch or thread count, so a token's result does not
// depend on what it is batched with. Shapes as in worker/engine/backend.h.
#pragma once

#include <cstdint>

#include "worker/backends/cpu/thread_pool.h"
#include "worker/engine/types.h"

namespace paged::cpu {

// Multiply-adds worth one ParallelFor chunk: below this an op runs inline.
inline constexpr int64_t kChunkWork = 64 * 1024;

// f16 bits -> f32 through a 64K-entry table (the values of HalfToFloat).
const float* HalfTable();

// Row r of w as f32: a pointer into w itself for f32 weights, else `scratch`
// [w.cols] filled with the decoded (dequantized) row.
const float* WeightRow(const WeightRef& w, int64_t r, float* scratch);

void Embedding(ThreadPool& pool, const WeightRef& table, const int32_t* ids, int n, float* out);
// out[i * ldo + r] for r < w.rows (ldo >= w.rows; 0: w.rows).
void MatMul(ThreadPool& pool, const float* x, int n, const WeightRef& w, const float* bias,
            float* out, int64_t ldo = 0);

void KvWrite(const float* k, const float* v, const int32_t* slots, int n, const KvLayerView& kv);
void Attention(ThreadPool& pool, const float* q, const AttnSeq* seqs, int n_seqs,
               const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
               const KvLayerView& kv, const AttnParams& p, float* out);

void Rope(ThreadPool& pool, float* q, float* k, const int32_t* pos, int n, int n_heads,
          int n_kv_heads, const RopeParams& p);
void RmsNorm(ThreadPool& pool, const float* x, const float* w, int n, int dim, float eps,
             float* out);
void SwiGlu(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float* out);
void GeGlu(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float* out);
void SwiGluOai(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float alpha,
               float limit, float* out);
void Scale(float* x, int64_t count, float s);
void SoftCap(float* x, int64_t count, float cap);
void Add(float* x, const float* y, int64_t count);
void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out);
void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                    float* out);
// out[tokens[i]] += w[pos[k]] * y[pos[k]] for k in [begin[i], begin[i+1]), in order.
void CombineRows(const float* y, const float* w, const int32_t* tokens, const int32_t* begin,
                 const int32_t* pos, int n_tokens, int dim, float* out);
void Sample(ThreadPool& pool, const float* logits, int n, int vocab, const SamplingParams* params,
            const int32_t* positions, int32_t* out_tokens);

}  // namespace paged::cpu
