// The element-wise ops (RmsNorm, Rope, SwiGlu, Add, GatherRows) and Sample,
// each the plain loop of run.c (or of HF where run.c has no counterpart).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/engine/sampling.h"

namespace paged::cpu {
namespace {

// Rows per chunk for an op that costs about `per_row` operations a row.
int64_t RowGrain(int64_t per_row) {
  return std::max<int64_t>(1, kChunkWork / std::max<int64_t>(per_row, 1));
}

}  // namespace

void RmsNorm(ThreadPool& pool, const float* x, const float* w, int n, int dim, float eps,
             float* out) {
  pool.ParallelFor(0, n, RowGrain(2 * dim), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* xi = x + i * dim;
      float* o = out + i * dim;
      float ss = 0.f;
      for (int j = 0; j < dim; ++j) ss += xi[j] * xi[j];
      ss /= float(dim);
      ss += eps;
      ss = 1.f / std::sqrt(ss);
      for (int j = 0; j < dim; ++j) o[j] = w[j] * (ss * xi[j]);
    }
  });
}

// HF: inv_freq = 1 / theta^(arange(0, d, 2) / d) in f32; llama3 scaling as
// transformers' _compute_llama3_parameters.
void RopeInvFreq(const RopeParams& p, float* inv_freq) {
  const int half = p.head_dim / 2;
  for (int i = 0; i < half; ++i) {
    inv_freq[i] = 1.f / std::pow(p.theta, float(2 * i) / float(p.head_dim));
  }
  if (p.scaling != RopeScaling::kLlama3) return;
  const float old_ctx = float(p.original_max_pos);
  const float low_freq_wavelen = old_ctx / p.low_freq_factor;
  const float high_freq_wavelen = old_ctx / p.high_freq_factor;
  for (int i = 0; i < half; ++i) {
    const float freq = inv_freq[i];
    const float wavelen = 2.f * std::numbers::pi_v<float> / freq;
    if (wavelen < high_freq_wavelen) continue;  // high frequency: kept
    if (wavelen > low_freq_wavelen) {           // low frequency: slowed by factor
      inv_freq[i] = freq / p.factor;
      continue;
    }
    const float smooth =
        (old_ctx / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
    inv_freq[i] = (1.f - smooth) * freq / p.factor + smooth * freq;
  }
}

void Rope(ThreadPool& pool, float* q, float* k, const int32_t* pos, int n, int n_heads,
          int n_kv_heads, const RopeParams& p) {
  const int hd = p.head_dim, half = hd / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));
  RopeInvFreq(p, inv_freq.data());
  pool.ParallelFor(0, n, RowGrain(int64_t(n_heads + n_kv_heads) * hd * 2 + half * 20),
                   [&](int64_t lo, int64_t hi) {
                     thread_local std::vector<float> cos_t, sin_t;
                     cos_t.resize(size_t(half));
                     sin_t.resize(size_t(half));
                     for (int64_t i = lo; i < hi; ++i) {
                       // f32 angles and f32 cos / sin, as HF's rotary embedding computes them.
                       for (int j = 0; j < half; ++j) {
                         const float angle = float(pos[i]) * inv_freq[size_t(j)];
                         cos_t[size_t(j)] = std::cos(angle);
                         sin_t[size_t(j)] = std::sin(angle);
                       }
                       auto rotate = [&](float* x, int heads) {
                         for (int h = 0; h < heads; ++h) {
                           float* xh = x + h * hd;
                           for (int j = 0; j < half; ++j) {
                             const float a = xh[j], b = xh[j + half];
                             xh[j] = a * cos_t[size_t(j)] - b * sin_t[size_t(j)];
                             xh[j + half] = b * cos_t[size_t(j)] + a * sin_t[size_t(j)];
                           }
                         }
                       };
                       rotate(q + i * int64_t(n_heads) * hd, n_heads);
                       rotate(k + i * int64_t(n_kv_heads) * hd, n_kv_heads);
                     }
                   });
}

void SwiGlu(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float* out) {
  const int64_t count = int64_t(n) * dim;
  pool.ParallelFor(0, count, kChunkWork / 8, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      float val = gate[j];
      val *= 1.f / (1.f + std::exp(-val));  // silu
      out[j] = val * up[j];
    }
  });
}

void Add(float* x, const float* y, int64_t count) {
  for (int64_t j = 0; j < count; ++j) x[j] += y[j];
}

void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) {
  for (int i = 0; i < n; ++i) {
    std::memcpy(out + int64_t(i) * dim, x + int64_t(rows[i]) * dim, size_t(dim) * sizeof(float));
  }
}

void Sample(ThreadPool& pool, const float* logits, int n, int vocab, const SamplingParams* params,
            const int32_t* positions, int32_t* out_tokens) {
  pool.ParallelFor(0, n, RowGrain(int64_t(vocab) * 8), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      out_tokens[i] = SampleRow(logits + i * vocab, vocab, params[i], positions[i]);
    }
  });
}

}  // namespace paged::cpu
