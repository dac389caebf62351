// The element-wise ops (RmsNorm, Rope, SwiGlu, GeGlu, Scale, SoftCap, Add,
// GatherRows) and Sample, each the plain loop of run.c (or of HF where run.c
// has no counterpart).

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/engine/rope.h"
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
                       // f32 angles and f32 cos / sin (times the attention factor),
                       // as HF's rotary embedding computes them.
                       for (int j = 0; j < half; ++j) {
                         const float angle = float(pos[i]) * inv_freq[size_t(j)];
                         cos_t[size_t(j)] = std::cos(angle) * p.attn_factor;
                         sin_t[size_t(j)] = std::sin(angle) * p.attn_factor;
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

void SwiGluOai(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float alpha,
               float limit, float* out) {
  const int64_t count = int64_t(n) * dim;
  pool.ParallelFor(0, count, kChunkWork / 8, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      const float g = std::min(gate[j], limit);
      const float u = std::clamp(up[j], -limit, limit);
      const float glu = g * (1.f / (1.f + std::exp(-(g * alpha))));
      out[j] = (u + 1.f) * glu;
    }
  });
}

void GeGlu(ThreadPool& pool, const float* gate, const float* up, int n, int dim, float* out) {
  const int64_t count = int64_t(n) * dim;
  // torch's gelu(approximate="tanh"): kBeta = sqrt(2) * (2 / sqrt(pi)) / 2.
  constexpr float kBeta = float(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);
  constexpr float kKappa = 0.044715f;
  pool.ParallelFor(0, count, kChunkWork / 16, [&](int64_t lo, int64_t hi) {
    for (int64_t j = lo; j < hi; ++j) {
      const float x = gate[j];
      const float inner = kBeta * (x + kKappa * (x * x * x));
      out[j] = (0.5f * x * (1.f + std::tanh(inner))) * up[j];
    }
  });
}

void Scale(float* x, int64_t count, float s) {
  for (int64_t j = 0; j < count; ++j) x[j] *= s;
}

void SoftCap(float* x, int64_t count, float cap) {
  for (int64_t j = 0; j < count; ++j) x[j] = std::tanh(x[j] / cap) * cap;
}

void Add(float* x, const float* y, int64_t count) {
  for (int64_t j = 0; j < count; ++j) x[j] += y[j];
}

void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) {
  for (int i = 0; i < n; ++i) {
    std::memcpy(out + int64_t(i) * dim, x + int64_t(rows[i]) * dim, size_t(dim) * sizeof(float));
  }
}

void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                    float* out) {
  for (int i = 0; i < n; ++i) {
    float* o = out + int64_t(rows[i]) * dim;
    const float* in = y + int64_t(i) * dim;
    for (int j = 0; j < dim; ++j) o[j] += w[i] * in[j];
  }
}

void CombineRows(const float* y, const float* w, const int32_t* tokens, const int32_t* begin,
                 const int32_t* pos, int n_tokens, int dim, float* out) {
  for (int i = 0; i < n_tokens; ++i) {
    float* o = out + int64_t(tokens[i]) * dim;
    for (int32_t k = begin[i]; k < begin[i + 1]; ++k) {
      const float* in = y + int64_t(pos[k]) * dim;
      const float wk = w[pos[k]];
      for (int j = 0; j < dim; ++j) o[j] += wk * in[j];
    }
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
