// The paged KV cache on the CPU: KvWrite stores rows in the cache dtype and
// Attention reads them back through block tables, one (query row, head) at a
// time, exactly like run.c's attention loop (with gemma's scale and
// soft-cap, gpt-oss's sinks, and a sliding window that skips the keys before
// it).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/dtype.h"
#include "worker/backends/cpu/cpu_kernels.h"

namespace paged::cpu {
namespace {

int ElementBytes(DType t) { return t == DType::kF32 ? 4 : 2; }

// Byte offset of K row `row` of block `block` in the layer view; V is block_tokens
// rows further on.
uint64_t KRowOffset(const KvLayerView& kv, int64_t block, int64_t row) {
  return uint64_t(block) * kv.block_bytes +
         uint64_t(row) * uint64_t(kv.kv_dim) * ElementBytes(kv.dtype);
}

void StoreRow(const float* src, int n, DType t, void* dst) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, size_t(n) * sizeof(float));
      return;
    case DType::kF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int j = 0; j < n; ++j) d[j] = FloatToHalf(src[j]);
      return;
    }
    case DType::kBF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (int j = 0; j < n; ++j) d[j] = FloatToBf16(src[j]);
      return;
    }
    default:
      PAGED_CHECK(false, "unsupported KV dtype ", int(t));
  }
}

// One head's slice of a cached row, widened to f32: [head_dim].
inline const float* LoadHead(const uint8_t* src, int head_dim, DType t, const float* h2f,
                             float* buf) {
  if (t == DType::kF32) return reinterpret_cast<const float*>(src);
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  if (t == DType::kF16) {
    for (int d = 0; d < head_dim; ++d) buf[d] = h2f[s[d]];
  } else {
    for (int d = 0; d < head_dim; ++d) buf[d] = Bf16ToFloat(s[d]);
  }
  return buf;
}

}  // namespace

void KvWrite(const float* k, const float* v, const int32_t* slots, int n, const KvLayerView& kv) {
  const uint64_t v_offset = uint64_t(kv.block_tokens) * kv.kv_dim * ElementBytes(kv.dtype);
  uint8_t* base = static_cast<uint8_t*>(kv.base);
  for (int i = 0; i < n; ++i) {
    PAGED_CHECK(slots[i] >= 0 && uint64_t(slots[i] / kv.block_tokens) < kv.n_blocks, "KV slot ",
                slots[i]);
    const uint64_t off = KRowOffset(kv, slots[i] / kv.block_tokens, slots[i] % kv.block_tokens);
    StoreRow(k + int64_t(i) * kv.kv_dim, kv.kv_dim, kv.dtype, base + off);
    StoreRow(v + int64_t(i) * kv.kv_dim, kv.kv_dim, kv.dtype, base + off + v_offset);
  }
}

void Attention(ThreadPool& pool, const float* q, const AttnSeq* seqs, int n_seqs,
               const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
               const KvLayerView& kv, const AttnParams& p, float* out) {
  const int q_dim = n_heads * head_dim;
  const int kv_mul = n_heads / n_kv_heads;  // query heads per kv head
  const int elt = ElementBytes(kv.dtype);
  const uint64_t v_offset = uint64_t(kv.block_tokens) * kv.kv_dim * elt;
  const uint8_t* base = static_cast<const uint8_t*>(kv.base);
  const float scale = p.scale > 0.f ? p.scale : 1.f / std::sqrt(float(head_dim));
  const float softcap = p.softcap;
  const float* h2f = HalfTable();

  // The step's query rows as (sequence, row within it); work items are
  // (query row, head) pairs.
  std::vector<std::pair<int32_t, int32_t>> rows;
  int64_t work = 0;
  for (int s = 0; s < n_seqs; ++s) {
    for (int32_t i = 0; i < seqs[s].n_new; ++i) {
      rows.emplace_back(s, i);
      const int64_t ctx = seqs[s].start_pos + i + 1;
      work += (p.window > 0 ? std::min<int64_t>(ctx, p.window) : ctx) * n_heads * head_dim * 2;
    }
  }
  const int64_t n_items = int64_t(rows.size()) * n_heads;
  if (n_items == 0) return;
  const int64_t grain = std::max<int64_t>(1, kChunkWork / std::max<int64_t>(1, work / n_items));

  pool.ParallelFor(0, n_items, grain, [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> att, kbuf, vbuf;
    if (att.size() < size_t(max_ctx)) att.resize(size_t(max_ctx));
    if (kbuf.size() < size_t(head_dim)) {
      kbuf.resize(size_t(head_dim));
      vbuf.resize(size_t(head_dim));
    }
    for (int64_t item = lo; item < hi; ++item) {
      const auto [s, i] = rows[size_t(item / n_heads)];
      const int h = int(item % n_heads);
      const AttnSeq& seq = seqs[s];
      const int32_t pos = seq.start_pos + i;  // attends to [t0, pos]
      const int32_t t0 = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
      PAGED_CHECK(pos < max_ctx);
      const int32_t* table = block_tables + seq.table_offset;
      const float* qh = q + int64_t(seq.q_offset + i) * q_dim + h * head_dim;
      const uint64_t head_off = uint64_t(h / kv_mul) * head_dim * elt;

      // Scores against every cached key of the window, up to and including pos.
      for (int32_t t = t0; t <= pos; ++t) {
        const uint64_t off = KRowOffset(kv, table[t / kv.block_tokens], t % kv.block_tokens);
        const float* kt = LoadHead(base + off + head_off, head_dim, kv.dtype, h2f, kbuf.data());
        float score = 0.f;
        for (int d = 0; d < head_dim; ++d) score += qh[d] * kt[d];
        score *= scale;
        if (softcap > 0.f) score = std::tanh(score / softcap) * softcap;
        att[size_t(t)] = score;
      }
      // Softmax over [t0, pos] (and the head's sink, whose share is
      // dropped), max-subtracted.
      float max_val = att[size_t(t0)];
      for (int32_t t = t0 + 1; t <= pos; ++t) max_val = std::max(max_val, att[size_t(t)]);
      if (p.sinks != nullptr) max_val = std::max(max_val, p.sinks[h]);
      float sum = p.sinks != nullptr ? std::exp(p.sinks[h] - max_val) : 0.f;
      for (int32_t t = t0; t <= pos; ++t) {
        att[size_t(t)] = std::exp(att[size_t(t)] - max_val);
        sum += att[size_t(t)];
      }
      for (int32_t t = t0; t <= pos; ++t) att[size_t(t)] /= sum;
      // Weighted sum of the values.
      float* oh = out + int64_t(seq.q_offset + i) * q_dim + h * head_dim;
      std::fill(oh, oh + head_dim, 0.f);
      for (int32_t t = t0; t <= pos; ++t) {
        const uint64_t off = KRowOffset(kv, table[t / kv.block_tokens], t % kv.block_tokens);
        const float* vt =
            LoadHead(base + off + v_offset + head_off, head_dim, kv.dtype, h2f, vbuf.data());
        const float a = att[size_t(t)];
        for (int d = 0; d < head_dim; ++d) oh[d] += a * vt[d];
      }
    }
  });
}

}  // namespace paged::cpu
