// The worker's host executor: matrix products computed by the host CPU
// directly on weights in host memory (the segment's read-only mapping), in
// their stored format, for the rows of a matrix that a hybrid step gives the
// host (docs/design.md, "Two paths to the weights"). Implemented by the CPU
// executor (worker/backends/cpu_exec); the engine knows only this interface.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/dtype.h"
#include "worker/engine/types.h"

namespace paged {

class HostExecutor {
 public:
  virtual ~HostExecutor() = default;

  // out[i * ldo + (r - r0)] = x[i, :] . W[r, :] (+ bias[r]) for i < n,
  // r0 <= r < r1. x: [n, w.cols] f32, w: the whole matrix, bias: [w.rows] or
  // null, out: [n, ldo] f32, all host memory. Runs on the calling thread and
  // the executor's threads; returns when done. Each out(i, r) does not depend
  // on n, on [r0, r1) or on the thread count (bit for bit).
  virtual void MatMul(const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1,
                      const float* bias, float* out, int64_t ldo) = 0;
  // Several products at once (a layer's q, k and v rows, its gate and up
  // rows, or the experts of a sparse layer the host computes): one dispatch
  // over the executor's threads instead of one per product, the same bits as
  // MatMul for each. Each reads x and n unless it names its own input
  // (own_x: [own_n, w.cols], an expert's rows).
  struct Product {
    const WeightRef* w;
    int64_t r0, r1;
    const float* bias;
    float* out;
    int64_t ldo;
    const float* own_x = nullptr;
    int own_n = 0;
  };
  virtual void MatMulMany(const float* x, int n, const Product* products, int count) {
    for (int k = 0; k < count; ++k) {
      const Product& p = products[k];
      MatMul(p.own_x != nullptr ? p.own_x : x, p.own_x != nullptr ? p.own_n : n, *p.w, p.r0, p.r1,
             p.bias, p.out, p.ldo);
    }
  }
  // A dispatch is coming soon (a sparse layer's host experts, once its
  // router's logits are down): idle threads that went to sleep get up and
  // wait spinning, so that its start does not wait for their wake-ups. A
  // hint; no effect where there is nothing to wake.
  virtual void Wake() {}
  // out[j] = silu(gate[j]) * up[j] for j < count (host memory; out may
  // alias gate): the element-wise half of an expert the host computes, the
  // CPU backend's SwiGlu bit for bit.
  virtual void SwiGlu(const float* gate, const float* up, int64_t count, float* out) = 0;
  // gpt-oss's clamped SwiGLU, the CPU backend's SwiGluOai bit for bit:
  // g = min(gate[j], limit), u = clamp(up[j], -limit, limit),
  // out[j] = (u + 1) * g * sigmoid(alpha * g) (out may alias gate).
  virtual void SwiGluOai(const float* gate, const float* up, int64_t count, float alpha,
                         float limit, float* out) = 0;
  // out[i, :] = f32(table[ids[i], :]) for i < n (host memory; ids checked
  // by the caller). Every stored dtype.
  virtual void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) = 0;
  // Calls fn(lo, hi) on disjoint chunks (of at least `grain` items but the
  // last) that cover [begin, end), on the executor's threads and the
  // caller's, and returns when all are done; nested calls run inline. The
  // CPU backend runs its other ops here, so that they and the products share
  // one set of threads. Default: one call on the calling thread.
  virtual void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                           const std::function<void(int64_t lo, int64_t hi)>& fn) {
    (void)grain;
    if (end > begin) fn(begin, end);
  }
  // Attention as Backend::Attention (worker/engine/backend.h) on host
  // memory, where the executor has a kernel for it: false (nothing done)
  // where it has not, and the caller runs its own.
  virtual bool Attention(const float* q, const AttnSeq* seqs, int n_seqs,
                         const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim,
                         int max_ctx, const KvLayerView& kv, const AttnParams& p, float* out) {
    (void)q, (void)seqs, (void)n_seqs, (void)block_tables, (void)n_heads, (void)n_kv_heads;
    (void)head_dim, (void)max_ctx, (void)kv, (void)p, (void)out;
    return false;
  }
  // Whether MatMul reads weights of this dtype.
  virtual bool Supports(DType t) const = 0;
  // Threads sharing a product, the caller included.
  virtual int threads() const = 0;
  // For people: "cpu executor (AVX3, 16 threads, pinned)".
  virtual std::string Describe() const = 0;
};

}  // namespace paged
