// attention.h. Compiled per SIMD target like the products (matmul.cc's
// HWY_DYNAMIC_DISPATCH); the front at the bottom splits the items over the
// pool.
#include "worker/backends/cpu_exec/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/dtype.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "worker/backends/cpu_exec/attention.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

// After highway.h, once per target.
#include "hwy/contrib/math/math-inl.h"
#include "worker/backends/cpu_exec/matmul-inl.h"  // DF, VF, HalvesToFloats

#ifndef PAGED_CPU_EXEC_ATTENTION_ONCE
#define PAGED_CPU_EXEC_ATTENTION_ONCE
namespace paged::cpu_exec {

// One call's shape, as every target's item function sees it.
struct AttnCall {
  const float* q;
  const AttnSeq* seqs;
  const int32_t* tables;
  const KvLayerView* kv;
  const AttnParams* p;
  float* out;
  int n_heads, n_kv_heads, head_dim;
  float scale;
  // Work items: keys [j0, j1) of a query row's window (row = sequence s,
  // its new row i), all heads; each leaves its partial softmax state in
  // partials[item]: [n_heads][head_dim] unnormalised output, then the
  // [n_heads] maxima and [n_heads] sums.
  struct Item {
    int32_t s, i;
    int64_t j0, j1;
  };
  const Item* items;
  float* partials;
  int64_t partial_floats;  // per item: n_heads * (head_dim + 2)
};

}  // namespace paged::cpu_exec
#endif

HWY_BEFORE_NAMESPACE();
namespace paged::cpu_exec::HWY_NAMESPACE {
namespace {

// head_dim elements of a cached row as f32 into dst [padded], zeros past
// head_dim (padded: head_dim rounded up to whole vectors). Only where
// head_dim is not whole vectors (Items reads the others in place).
void Widen(const uint8_t* src, DType t, int head_dim, int64_t padded, float* dst) {
  if (t == DType::kF32) {
    memcpy(dst, src, size_t(head_dim) * sizeof(float));
  } else if (t == DType::kF16) {
    HalvesToFloats(reinterpret_cast<const uint16_t*>(src), head_dim, dst);
  } else {
    const uint16_t* u = reinterpret_cast<const uint16_t*>(src);
    for (int d = 0; d < head_dim; ++d) dst[d] = Bf16ToFloat(u[d]);
  }
  std::fill(dst + head_dim, dst + padded, 0.f);
}

// N elements of a cached row at p as f32.
template <typename T>
HWY_INLINE VF LoadF(DF df, const T* p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else {
    return hn::PromoteTo(df, hn::LoadU(hn::Rebind<T, DF>(), p));
  }
}

// sum a[d] * b[d] over `len` (whole vectors), four accumulators.
template <typename T>
HWY_INLINE float Dot(const float* HWY_RESTRICT a, const T* HWY_RESTRICT b, int64_t len) {
  const DF df;
  const int64_t n = int64_t(hn::Lanes(df));
  VF s0 = hn::Zero(df), s1 = hn::Zero(df), s2 = hn::Zero(df), s3 = hn::Zero(df);
  int64_t d = 0;
  for (; d + 4 * n <= len; d += 4 * n) {
    s0 = hn::MulAdd(hn::LoadU(df, a + d), LoadF(df, b + d), s0);
    s1 = hn::MulAdd(hn::LoadU(df, a + d + n), LoadF(df, b + d + n), s1);
    s2 = hn::MulAdd(hn::LoadU(df, a + d + 2 * n), LoadF(df, b + d + 2 * n), s2);
    s3 = hn::MulAdd(hn::LoadU(df, a + d + 3 * n), LoadF(df, b + d + 3 * n), s3);
  }
  for (; d < len; d += n) s0 = hn::MulAdd(hn::LoadU(df, a + d), LoadF(df, b + d), s0);
  return hn::GetLane(hn::SumOfLanes(df, hn::Add(hn::Add(s0, s1), hn::Add(s2, s3))));
}

// o[d] += sum over keys j < len of w[j] * row(j)[d], for d < dims (whole
// vectors), keys in order: four vectors of o at a time in registers across
// the keys. (Each o[d] is one chain of multiply-adds over the keys, so
// calls over consecutive key ranges give the bits of one call.)
template <typename T, class RowAt>
HWY_INLINE void WeightedSum(const float* HWY_RESTRICT w, int64_t len, const RowAt& row_at,
                            int64_t dims, float* HWY_RESTRICT o) {
  const DF df;
  const int64_t n = int64_t(hn::Lanes(df));
  int64_t d = 0;
  for (; d + 4 * n <= dims; d += 4 * n) {
    VF a0 = hn::LoadU(df, o + d), a1 = hn::LoadU(df, o + d + n);
    VF a2 = hn::LoadU(df, o + d + 2 * n), a3 = hn::LoadU(df, o + d + 3 * n);
    for (int64_t j = 0; j < len; ++j) {
      const T* v = reinterpret_cast<const T*>(row_at(j)) + d;
      const VF x = hn::Set(df, w[j]);
      a0 = hn::MulAdd(x, LoadF(df, v), a0);
      a1 = hn::MulAdd(x, LoadF(df, v + n), a1);
      a2 = hn::MulAdd(x, LoadF(df, v + 2 * n), a2);
      a3 = hn::MulAdd(x, LoadF(df, v + 3 * n), a3);
    }
    hn::StoreU(a0, df, o + d);
    hn::StoreU(a1, df, o + d + n);
    hn::StoreU(a2, df, o + d + 2 * n);
    hn::StoreU(a3, df, o + d + 3 * n);
  }
  for (; d < dims; d += n) {
    VF a0 = hn::LoadU(df, o + d);
    for (int64_t j = 0; j < len; ++j) {
      a0 = hn::MulAdd(hn::Set(df, w[j]), LoadF(df, reinterpret_cast<const T*>(row_at(j)) + d), a0);
    }
    hn::StoreU(a0, df, o + d);
  }
}

// The partial softmax of scores a [len] (room for len_padded): *m their
// maximum, a[j] = exp(a[j] - m) in place, *l their sum. The sink and the
// normalisation come in the merge.
HWY_INLINE void Exps(float* a, int64_t len, int64_t len_padded, float* m, float* l) {
  const DF df;
  const int64_t n = int64_t(hn::Lanes(df));
  std::fill(a + len, a + len_padded, -INFINITY);
  VF vmax = hn::Set(df, -INFINITY);
  for (int64_t t = 0; t < len_padded; t += n) vmax = hn::Max(vmax, hn::LoadU(df, a + t));
  *m = hn::GetLane(hn::MaxOfLanes(df, vmax));
  const VF mv = hn::Set(df, *m);
  VF vsum = hn::Zero(df);
  for (int64_t t = 0; t < len_padded; t += n) {
    const VF e = hn::Exp(df, hn::Sub(hn::LoadU(df, a + t), mv));  // 0 past len (-inf)
    hn::StoreU(e, df, a + t);
    vsum = hn::Add(vsum, e);
  }
  *l = hn::GetLane(hn::SumOfLanes(df, vsum));
}

// Items [lo, hi) of element type T (AttnCall::Item). Keys go a KV block at
// a time, each key's whole row (every kv head, contiguous) for the scores,
// then each head's slice of the block's rows for the values, so that the
// block's pages are read together and in order. Where head_dim is whole
// vectors the rows are read in place, else each slice is widened into a
// zero-padded buffer first. A partial's operations depend on its keys
// alone.
template <typename T>
void Items(const AttnCall& c, int64_t lo, int64_t hi) {
  const DF df;
  const int64_t n = int64_t(hn::Lanes(df));
  const KvLayerView& kv = *c.kv;
  const AttnParams& p = *c.p;
  const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads, heads = c.n_heads;
  const bool direct = hd % n == 0;
  const int64_t padded = (hd + n - 1) / n * n;
  const uint64_t row_bytes = uint64_t(kv.kv_dim) * sizeof(T);
  const uint64_t head_bytes = uint64_t(hd) * sizeof(T);
  const uint64_t v_offset = uint64_t(kv.block_tokens) * row_bytes;
  const uint8_t* base = static_cast<const uint8_t*>(kv.base);
  const int q_dim = heads * hd;
  thread_local std::vector<float> qbuf, kbuf, att, acc;
  for (int64_t item = lo; item < hi; ++item) {
    const AttnCall::Item& it = c.items[item];
    const AttnSeq& seq = c.seqs[it.s];
    const int32_t pos = seq.start_pos + it.i;
    const int32_t t0 = p.window > 0 ? std::max(0, pos - p.window + 1) : 0;
    const int64_t len = it.j1 - it.j0;  // keys t0 + j0 ..
    const int64_t len_padded = (len + n - 1) / n * n;
    const int32_t* table = c.tables + seq.table_offset;
    qbuf.resize(size_t(heads * padded));
    kbuf.resize(size_t(padded));
    acc.assign(size_t(heads * padded), 0.f);
    att.resize(size_t(heads * len_padded));
    const float* qrow = c.q + int64_t(seq.q_offset + it.i) * q_dim;
    for (int h = 0; h < heads; ++h) {
      std::memcpy(&qbuf[size_t(h * padded)], qrow + h * hd, size_t(hd) * 4);
      std::fill(qbuf.begin() + h * padded + hd, qbuf.begin() + (h + 1) * padded, 0.f);
    }
    // The item's keys by KV block: [j0, j1) of its own, whose K rows start
    // at `rows`; V rows v_offset after.
    auto for_each_block = [&](auto&& fn) {
      for (int64_t j0 = 0; j0 < len;) {
        const int64_t t = t0 + it.j0 + j0;
        const int64_t j1 = std::min(len, j0 + kv.block_tokens - t % kv.block_tokens);
        fn(j0, j1,
           base + uint64_t(table[t / kv.block_tokens]) * kv.block_bytes +
               uint64_t(t % kv.block_tokens) * row_bytes);
        j0 = j1;
      }
    };
    for_each_block([&](int64_t j0, int64_t j1, const uint8_t* rows) {
      for (int64_t j = j0; j < j1; ++j) {
        const uint8_t* row = rows + uint64_t(j - j0) * row_bytes;
        for (int k = 0; k < c.n_kv_heads; ++k) {
          const T* key = reinterpret_cast<const T*>(row + k * head_bytes);
          if (!direct) Widen(row + k * head_bytes, kv.dtype, hd, padded, kbuf.data());
          for (int h = k * group; h < (k + 1) * group; ++h) {
            const float* qh = &qbuf[size_t(h * padded)];
            float x =
                (direct ? Dot<T>(qh, key, hd) : Dot<float>(qh, kbuf.data(), padded)) * c.scale;
            if (p.softcap > 0.f) x = std::tanh(x / p.softcap) * p.softcap;
            att[size_t(h * len_padded + j)] = x;
          }
        }
      }
    });
    float* part = c.partials + item * c.partial_floats;
    float* part_m = part + int64_t(heads) * hd;
    float* part_l = part_m + heads;
    for (int h = 0; h < heads; ++h)
      Exps(&att[size_t(h * len_padded)], len, len_padded, &part_m[h], &part_l[h]);
    for_each_block([&](int64_t j0, int64_t j1, const uint8_t* rows) {
      for (int k = 0; k < c.n_kv_heads; ++k) {
        const uint8_t* v0 = rows + v_offset + k * head_bytes;
        if (direct) {
          auto v_at = [&](int64_t j) { return v0 + uint64_t(j) * row_bytes; };
          for (int h = k * group; h < (k + 1) * group; ++h) {
            WeightedSum<T>(&att[size_t(h * len_padded + j0)], j1 - j0, v_at, hd,
                           &acc[size_t(h * padded)]);
          }
          continue;
        }
        for (int64_t j = j0; j < j1; ++j) {
          Widen(v0 + uint64_t(j - j0) * row_bytes, kv.dtype, hd, padded, kbuf.data());
          auto buf_at = [&](int64_t) { return reinterpret_cast<const uint8_t*>(kbuf.data()); };
          for (int h = k * group; h < (k + 1) * group; ++h) {
            WeightedSum<float>(&att[size_t(h * len_padded + j)], 1, buf_at, padded,
                               &acc[size_t(h * padded)]);
          }
        }
      }
    });
    for (int h = 0; h < heads; ++h) {
      std::memcpy(part + int64_t(h) * hd, &acc[size_t(h * padded)], size_t(hd) * 4);
    }
  }
}

}  // namespace

void AttentionItems(const AttnCall& c, int64_t lo, int64_t hi) {
  switch (c.kv->dtype) {
    case DType::kF32:
      return Items<float>(c, lo, hi);
    case DType::kF16:
      return Items<hwy::float16_t>(c, lo, hi);
    default:
      return Items<hwy::bfloat16_t>(c, lo, hi);
  }
}

}  // namespace paged::cpu_exec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace paged::cpu_exec {

HWY_EXPORT(AttentionItems);

namespace {

// Keys of a split of a window of `len` keys: about an eighth of it, whole
// KV blocks of 16, 64 to 512.
int64_t SplitKeys(int64_t len) { return std::clamp<int64_t>((len / 8 + 15) / 16 * 16, 64, 512); }

}  // namespace

void Attention(ExecPool& pool, const float* q, const AttnSeq* seqs, int n_seqs,
               const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim, int max_ctx,
               const KvLayerView& kv, const AttnParams& p, float* out) {
  PAGED_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0 && head_dim > 0, "attention: heads ",
              n_heads, "/", n_kv_heads, ", head_dim ", head_dim);
  PAGED_CHECK(kv.dtype == DType::kF32 || kv.dtype == DType::kF16 || kv.dtype == DType::kBF16,
              "attention: KV dtype ", int(kv.dtype));
  // Items: each row's window in splits of SplitKeys keys (a function of
  // the window's length alone, so that a row's bits depend on nothing else).
  thread_local std::vector<AttnCall::Item> items;
  thread_local std::vector<int64_t> first_item;  // per row, and the end
  items.clear();
  first_item.clear();
  for (int s = 0; s < n_seqs; ++s) {
    for (int32_t i = 0; i < seqs[s].n_new; ++i) {
      const int32_t pos = seqs[s].start_pos + i;
      PAGED_CHECK(pos < max_ctx, "attention: position ", pos, " past ", max_ctx);
      const int64_t len = p.window > 0 ? std::min<int64_t>(pos + 1, p.window) : pos + 1;
      const int64_t split = SplitKeys(len);
      first_item.push_back(int64_t(items.size()));
      for (int64_t j0 = 0; j0 < len; j0 += split) {
        items.push_back(AttnCall::Item{s, i, j0, std::min(len, j0 + split)});
      }
    }
  }
  if (items.empty()) return;
  first_item.push_back(int64_t(items.size()));
  thread_local std::vector<float> partials;
  const int64_t per_item = int64_t(n_heads) * (head_dim + 2);
  partials.resize(size_t(per_item) * items.size());
  AttnCall c;
  c.q = q;
  c.seqs = seqs;
  c.tables = block_tables;
  c.kv = &kv;
  c.p = &p;
  c.out = out;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_dim;
  c.scale = p.scale > 0.f ? p.scale : 1.f / std::sqrt(float(head_dim));
  c.items = items.data();
  c.partials = partials.data();
  c.partial_floats = per_item;
  pool.ParallelFor(0, int64_t(items.size()), 1, [&](int64_t lo, int64_t hi) {
    HWY_DYNAMIC_DISPATCH(AttentionItems)(c, lo, hi);
  });
  // Each (row, head): its splits merged in order, with the head's sink.
  // (The workers see the caller's thread_local vectors through pointers.)
  const AttnCall::Item* item_of = items.data();
  const int64_t* first_of = first_item.data();
  const float* parts = partials.data();
  const int64_t rows = int64_t(first_item.size()) - 1;
  const int q_dim = n_heads * head_dim;
  pool.ParallelFor(0, rows * n_heads, 16, [&](int64_t lo, int64_t hi) {
    for (int64_t rh = lo; rh < hi; ++rh) {
      const int64_t row = rh / n_heads;
      const int h = int(rh % n_heads);
      const AttnCall::Item& first = item_of[first_of[row]];
      float mx = p.sinks != nullptr ? p.sinks[h] : -INFINITY;
      for (int64_t k = first_of[row]; k < first_of[row + 1]; ++k) {
        mx = std::max(mx, parts[k * per_item + int64_t(n_heads) * head_dim + h]);
      }
      float den = p.sinks != nullptr ? std::exp(p.sinks[h] - mx) : 0.f;
      float* o = out + int64_t(seqs[first.s].q_offset + first.i) * q_dim + int64_t(h) * head_dim;
      std::fill(o, o + head_dim, 0.f);
      for (int64_t k = first_of[row]; k < first_of[row + 1]; ++k) {
        const float* part = parts + k * per_item;
        const float e = std::exp(part[int64_t(n_heads) * head_dim + h] - mx);
        den += part[int64_t(n_heads) * (head_dim + 1) + h] * e;
        const float* a = part + int64_t(h) * head_dim;
        for (int d = 0; d < head_dim; ++d) o[d] += a[d] * e;
      }
      const float inv = 1.f / den;
      for (int d = 0; d < head_dim; ++d) o[d] *= inv;
    }
  });
}

}  // namespace paged::cpu_exec
#endif  // HWY_ONCE
