// A model of random f32 weights in memory and an independent forward pass
// over it in double, written from the definitions (transformers' modeling
// code): the oracle of tests/unit/arch_engine_test.cc and moe_test.cc.
// Every architecture feature of ModelConfig, mixtures of experts included.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/model_config.h"
#include "store/model_source.h"
#include "worker/offline/local_model.h"

namespace paged::reference {

using Rows = std::vector<std::vector<double>>;  // [position][dim]

// The tests' small model: 64 wide, 4 heads (2 KV) of 16, vocabulary 128.
inline ModelConfig SmallConfig(Arch arch, int layers) {
  ModelConfig c;
  c.arch = arch;
  c.n_layers = layers;
  c.hidden = 64;
  c.ffn = 96;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab = 128;
  c.max_context = 256;
  c.norm_eps = 1e-6f;
  c.rope_theta = 10000.f;
  return c;
}

// Tokens spread over the vocabulary, the same in every test.
inline std::vector<int32_t> Tokens(int n, int vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t((i * 37 + 11) % vocab));
  return t;
}

// The engine's logits at the last position after prefill chunks of `chunk`
// tokens (one sequence, blocks 0, 1, ...).
inline std::vector<float> Prefill(LocalModel& lm, const std::vector<int32_t>& tokens, int chunk) {
  const int bt = lm.engine->block_tokens();
  SeqStep s;
  s.seq_id = 7;
  s.return_logits = true;
  for (int b = 0; b * bt < int(tokens.size()); ++b) s.block_table.push_back(b);
  std::vector<float> last;
  for (size_t i = 0; i < tokens.size(); i += size_t(chunk)) {
    s.start_pos = int32_t(i);
    s.tokens.assign(tokens.begin() + long(i),
                    tokens.begin() + long(std::min(tokens.size(), i + size_t(chunk))));
    auto r = lm.engine->Step(StepBatch{{s}});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    last = r->logits[0];
  }
  return last;
}

// A ModelSource with every tensor `c` needs: matrices N(0, 0.08), embeddings
// N(0, 0.2), norms 1 + N(0, 0.1), biases N(0, 0.1) (make_golden.py's spread).
struct Model {
  ModelSource src;
  std::vector<std::unique_ptr<std::vector<float>>> storage;

  const std::vector<float>& Get(const std::string& name, int layer = -1, int expert = -1) const {
    for (size_t i = 0; i < src.tensors.size(); ++i) {
      const SourceTensor& t = src.tensors[i];
      if (t.name == name && t.layer == layer && t.expert == expert) return *storage[i];
    }
    ADD_FAILURE() << "no tensor " << name << " " << layer << " " << expert;
    static const std::vector<float> empty;
    return empty;
  }
};

inline std::unique_ptr<Model> MakeModel(const ModelConfig& c, uint32_t seed) {
  auto m = std::make_unique<Model>();
  m->src.path = "arch-test";
  m->src.format = "synthetic";
  m->src.config = c;
  std::mt19937 rng(seed);
  auto add = [&](const std::string& name, int layer, int64_t rows, int64_t cols, double mean,
                 double std, int expert = -1) {
    std::normal_distribution<double> d(mean, std);
    auto buf = std::make_unique<std::vector<float>>(size_t(rows * cols));
    for (float& x : *buf) x = float(d(rng));
    SourceTensor t;
    t.name = name;
    t.layer = layer;
    t.expert = expert;
    t.type = SourceType::kF32;
    t.rows = rows;
    t.cols = cols;
    t.data = reinterpret_cast<const uint8_t*>(buf->data());
    t.bytes = buf->size() * 4;
    m->src.tensors.push_back(t);
    m->storage.push_back(std::move(buf));
  };
  add("tok_embd", -1, c.vocab, c.hidden, 0, 0.2);
  add("output_norm", -1, 1, c.hidden, 1, 0.1);
  if (!c.tied_embeddings) add("output", -1, c.vocab, c.hidden, 0, 0.1);
  for (int l = 0; l < c.n_layers; ++l) {
    add("attn_norm", l, 1, c.hidden, 1, 0.1);
    add("wq", l, c.q_dim(), c.hidden, 0, 0.08);
    add("wk", l, c.kv_dim(), c.hidden, 0, 0.08);
    add("wv", l, c.kv_dim(), c.hidden, 0, 0.08);
    add("wo", l, c.hidden, c.q_dim(), 0, 0.08);
    if (c.o_bias) add("bo", l, 1, c.hidden, 0, 0.1);
    // Sinks of the scores' size: they take a visible share of each softmax.
    if (c.attn_sinks) add("attn_sinks", l, 1, c.n_heads, 0, 1.0);
    if (c.qkv_bias) {
      add("bq", l, 1, c.q_dim(), 0, 0.1);
      add("bk", l, 1, c.kv_dim(), 0, 0.1);
      add("bv", l, 1, c.kv_dim(), 0, 0.1);
    }
    if (c.qk_norm) {
      add("q_norm", l, 1, c.head_dim, 1, 0.1);
      add("k_norm", l, 1, c.head_dim, 1, 0.1);
    }
    if (c.sandwich_norm) {
      add("post_attn_norm", l, 1, c.hidden, 1, 0.1);
      add("post_ffn_norm", l, 1, c.hidden, 1, 0.1);
    }
    add("ffn_norm", l, 1, c.hidden, 1, 0.1);
    if (!c.IsMoeLayer(l)) {
      add("w_gate", l, c.ffn, c.hidden, 0, 0.08);
      add("w_up", l, c.ffn, c.hidden, 0, 0.08);
      add("w_down", l, c.hidden, c.ffn, 0, 0.08);
      continue;
    }
    // A router wide enough that the top-k are well apart (no near-ties
    // between f32 and double), plus `router_bias` (if any) on each expert's
    // row mean: a skew the tests use to starve or favour experts.
    add("router", l, c.n_experts, c.hidden, 0, 0.3);
    if (c.router_bias) add("router_b", l, 1, c.n_experts, 0, 0.3);
    if (c.expert_bias) {
      add("exp_gate_b", l, c.n_experts, c.expert_ffn, 0, 0.1);
      add("exp_up_b", l, c.n_experts, c.expert_ffn, 0, 0.1);
      add("exp_down_b", l, c.n_experts, c.hidden, 0, 0.1);
    }
    if (c.shared_expert_ffn > 0) {
      add("shexp_gate_inp", l, 1, c.hidden, 0, 0.2);
      add("shexp_gate", l, c.shared_expert_ffn, c.hidden, 0, 0.08);
      add("shexp_up", l, c.shared_expert_ffn, c.hidden, 0, 0.08);
      add("shexp_down", l, c.hidden, c.shared_expert_ffn, 0, 0.08);
    }
    for (int e = 0; e < c.n_experts; ++e) {
      add("exp_gate", l, c.expert_ffn, c.hidden, 0, 0.08, e);
      add("exp_up", l, c.expert_ffn, c.hidden, 0, 0.08, e);
      add("exp_down", l, c.hidden, c.expert_ffn, 0, 0.08, e);
    }
  }
  return m;
}

// ---- the reference, in double --------------------------------------------

inline std::vector<double> RmsNorm(const std::vector<double>& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1 / std::sqrt(ss / double(x.size()) + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * w[i];
  return out;
}

// y = W x (+ b), W [rows, cols] row-major.
inline std::vector<double> Linear(const std::vector<float>& w, const std::vector<double>& x,
                                  size_t rows, const std::vector<float>* bias = nullptr) {
  std::vector<double> y(rows);
  for (size_t r = 0; r < rows; ++r) {
    double s = bias ? (*bias)[r] : 0;
    for (size_t j = 0; j < x.size(); ++j) s += double(w[r * x.size() + j]) * x[j];
    y[r] = s;
  }
  return y;
}

// The rotation frequencies of a layer, from the definitions: default,
// linear (/ factor), YaRN (arXiv 2309.00071: interpolate pairs that turn
// fewer than beta_slow times over the original context, keep those that
// turn more than beta_fast times, ramp between), LongRoPE (/ factor[i]).
inline std::vector<double> InvFreq(const ModelConfig& c, bool sliding, double* attn_factor) {
  const int d = c.head_dim;
  const bool local = sliding && c.rope_local_theta > 0;
  const double theta = local ? c.rope_local_theta : c.rope_theta;
  const RopeScaling sc = local ? RopeScaling::kNone : c.rope_scaling;
  *attn_factor = local ? 1 : c.rope_attn_factor;
  std::vector<double> f(size_t(d / 2));
  for (int i = 0; i < d / 2; ++i) {
    double v = 1 / std::pow(theta, 2.0 * i / d);
    if (sc == RopeScaling::kLinear) v /= c.rope_factor;
    if (sc == RopeScaling::kLongRope) v /= c.rope_factors[i];
    if (sc == RopeScaling::kYarn) {
      auto dim_of = [&](double rot) {
        return d * std::log(c.rope_original_max_pos / (rot * 2 * std::numbers::pi)) /
               (2 * std::log(theta));
      };
      // (Rounded to whole pairs unless the config says truncate: false.)
      const double lo_dim = dim_of(c.rope_beta_fast), hi_dim = dim_of(c.rope_beta_slow);
      const double lo = std::max(0.0, c.rope_yarn_truncate ? std::floor(lo_dim) : lo_dim);
      const double hi = std::min(double(d - 1), c.rope_yarn_truncate ? std::ceil(hi_dim) : hi_dim);
      const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
      v = v / c.rope_factor * ramp + v * (1 - ramp);
    }
    f[size_t(i)] = v;
  }
  return f;
}

inline void Rotate(std::vector<double>& x, int heads, int d, int pos,
                   const std::vector<double>& freq, double attn_factor) {
  for (int h = 0; h < heads; ++h) {
    double* v = x.data() + h * d;
    for (int i = 0; i < d / 2; ++i) {
      const double cs = std::cos(pos * freq[size_t(i)]) * attn_factor;
      const double sn = std::sin(pos * freq[size_t(i)]) * attn_factor;
      const double a = v[i], b = v[i + d / 2];
      v[i] = a * cs - b * sn;
      v[i + d / 2] = b * cs + a * sn;
    }
  }
}

// Which experts the reference's rows went to: counts[layer][expert], over
// every position of one Reference call.
struct MoeTrace {
  std::vector<std::vector<int>> counts;
  // [layer][position] the experts that position routes to (in call order:
  // positions ascending).
  std::vector<std::vector<std::vector<int>>> picked;
};

// down(silu(gate h) * up h).
inline std::vector<double> SwiGluMlp(const std::vector<float>& gate, const std::vector<float>& up,
                                     const std::vector<float>& down, const std::vector<double>& h,
                                     size_t ffn) {
  const std::vector<double> g = Linear(gate, h, ffn);
  std::vector<double> a = Linear(up, h, ffn);
  for (size_t j = 0; j < ffn; ++j) a[j] *= g[j] / (1 + std::exp(-g[j]));
  return Linear(down, a, h.size());
}

// One row of a bias table [rows, width].
inline std::vector<float> Row(const std::vector<float>& table, int row, int width) {
  return {table.begin() + long(row) * width, table.begin() + long(row + 1) * width};
}

// gpt-oss's expert (transformers' GptOssExperts): gate_up = W h + b,
// g = min(gate, limit), u = clamp(up, -limit, limit),
// y = down((u + 1) * g * sigmoid(alpha g)) + b_down.
inline std::vector<double> GptOssExpert(const Model& m, int l, int e,
                                        const std::vector<double>& h) {
  const ModelConfig& c = m.src.config;
  const size_t f = size_t(c.expert_ffn);
  const std::vector<float> bg = Row(m.Get("exp_gate_b", l), e, c.expert_ffn);
  const std::vector<float> bu = Row(m.Get("exp_up_b", l), e, c.expert_ffn);
  const std::vector<float> bd = Row(m.Get("exp_down_b", l), e, c.hidden);
  const std::vector<double> g = Linear(m.Get("exp_gate", l, e), h, f, &bg);
  const std::vector<double> u = Linear(m.Get("exp_up", l, e), h, f, &bu);
  const double limit = c.swiglu_limit, alpha = c.swiglu_alpha;
  std::vector<double> a(f);
  for (size_t j = 0; j < f; ++j) {
    const double gj = std::min(g[j], limit), uj = std::clamp(u[j], -limit, limit);
    a[j] = (uj + 1) * gj / (1 + std::exp(-alpha * gj));
  }
  return Linear(m.Get("exp_down", l, e), a, h.size(), &bd);
}

// gpt-oss's sparse MLP (GptOssTopKRouter): the k largest logits (with the
// router's bias), a softmax over those k, their experts weighted.
inline std::vector<double> GptOssMoeMlp(const Model& m, int l, const std::vector<double>& h,
                                        MoeTrace* trace) {
  const ModelConfig& c = m.src.config;
  const std::vector<double> logits =
      Linear(m.Get("router", l), h, size_t(c.n_experts), &m.Get("router_b", l));
  std::vector<int> order(logits.size());
  for (size_t e = 0; e < order.size(); ++e) order[e] = int(e);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  const int k = c.n_experts_used;
  double mx = logits[size_t(order[0])], sum = 0;
  for (int j = 0; j < k; ++j) sum += std::exp(logits[size_t(order[size_t(j)])] - mx);
  std::vector<double> out(h.size(), 0.0);
  for (int j = 0; j < k; ++j) {
    const int e = order[size_t(j)];
    const double w = std::exp(logits[size_t(e)] - mx) / sum;
    const std::vector<double> y = GptOssExpert(m, l, e, h);
    for (size_t i = 0; i < h.size(); ++i) out[i] += w * y[i];
    if (trace != nullptr) {
      trace->counts.resize(size_t(c.n_layers), std::vector<int>(size_t(c.n_experts), 0));
      ++trace->counts[size_t(l)][size_t(e)];
    }
  }
  return out;
}

// A sparse layer's MLP (transformers' MixtralSparseMoeBlock /
// Qwen2MoeSparseMoeBlock): softmax over the router's logits, the top k
// (renormalized with norm_topk_prob), their experts weighted, plus the
// shared expert times sigmoid of its gate.
inline std::vector<double> MoeMlp(const Model& m, int l, const std::vector<double>& h,
                                  MoeTrace* trace) {
  const ModelConfig& c = m.src.config;
  if (c.arch == Arch::kGptOss) return GptOssMoeMlp(m, l, h, trace);
  const std::vector<double> logits = Linear(m.Get("router", l), h, size_t(c.n_experts));
  const double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t e = 0; e < p.size(); ++e) sum += (p[e] = std::exp(logits[e] - mx));
  for (double& v : p) v /= sum;
  std::vector<int> order(p.size());
  for (size_t e = 0; e < order.size(); ++e) order[e] = int(e);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  double top = 0;
  for (int j = 0; j < c.n_experts_used; ++j) top += p[size_t(order[size_t(j)])];
  if (trace != nullptr) {
    trace->picked.resize(size_t(c.n_layers));
    trace->picked[size_t(l)].emplace_back(order.begin(), order.begin() + c.n_experts_used);
  }
  std::vector<double> out(h.size(), 0.0);
  for (int j = 0; j < c.n_experts_used; ++j) {
    const int e = order[size_t(j)];
    const double w = c.norm_topk_prob ? p[size_t(e)] / top : p[size_t(e)];
    const std::vector<double> y = SwiGluMlp(m.Get("exp_gate", l, e), m.Get("exp_up", l, e),
                                            m.Get("exp_down", l, e), h, size_t(c.expert_ffn));
    for (size_t i = 0; i < h.size(); ++i) out[i] += w * y[i];
    if (trace != nullptr) {
      trace->counts.resize(size_t(c.n_layers), std::vector<int>(size_t(c.n_experts), 0));
      ++trace->counts[size_t(l)][size_t(e)];
    }
  }
  if (c.shared_expert_ffn > 0) {
    const double g = Linear(m.Get("shexp_gate_inp", l), h, 1)[0];
    const std::vector<double> y = SwiGluMlp(m.Get("shexp_gate", l), m.Get("shexp_up", l),
                                            m.Get("shexp_down", l), h, size_t(c.shared_expert_ffn));
    for (size_t i = 0; i < h.size(); ++i) out[i] += y[i] / (1 + std::exp(-g));
  }
  return out;
}

// Logits at every position of one forward pass over `tokens` (positions 0..).
inline Rows Reference(const Model& m, const std::vector<int32_t>& tokens,
                      MoeTrace* trace = nullptr) {
  const ModelConfig& c = m.src.config;
  const int n = int(tokens.size()), hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  const double eps = c.norm_eps;
  Rows x(static_cast<size_t>(n));
  const std::vector<float>& emb = m.Get("tok_embd");
  for (int t = 0; t < n; ++t) {
    x[size_t(t)].resize(size_t(c.hidden));
    for (int j = 0; j < c.hidden; ++j)
      x[size_t(t)][size_t(j)] =
          double(emb[size_t(tokens[size_t(t)] * c.hidden + j)]) * double(c.embed_scale);
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const bool sliding = c.IsSlidingLayer(l);
    const int window = sliding ? c.sliding_window : 0;
    double attn_factor = 1;
    const std::vector<double> freq = InvFreq(c, sliding, &attn_factor);
    Rows q(static_cast<size_t>(n)), k(q), v(q);
    for (int t = 0; t < n; ++t) {
      const std::vector<double> h = RmsNorm(x[size_t(t)], m.Get("attn_norm", l).data(), eps);
      const bool bias = c.qkv_bias;
      q[size_t(t)] = Linear(m.Get("wq", l), h, size_t(c.q_dim()), bias ? &m.Get("bq", l) : nullptr);
      k[size_t(t)] =
          Linear(m.Get("wk", l), h, size_t(c.kv_dim()), bias ? &m.Get("bk", l) : nullptr);
      v[size_t(t)] =
          Linear(m.Get("wv", l), h, size_t(c.kv_dim()), bias ? &m.Get("bv", l) : nullptr);
      if (c.qk_norm) {
        for (auto [rows, heads, name] :
             {std::tuple{&q, c.n_heads, "q_norm"}, std::tuple{&k, c.n_kv_heads, "k_norm"}}) {
          std::vector<double>& r = (*rows)[size_t(t)];
          for (int hh = 0; hh < heads; ++hh) {
            std::vector<double> head(r.begin() + hh * hd, r.begin() + (hh + 1) * hd);
            head = RmsNorm(head, m.Get(name, l).data(), eps);
            std::copy(head.begin(), head.end(), r.begin() + hh * hd);
          }
        }
      }
      Rotate(q[size_t(t)], c.n_heads, hd, t, freq, attn_factor);
      Rotate(k[size_t(t)], c.n_kv_heads, hd, t, freq, attn_factor);
    }
    const double scale = c.attn_scale > 0 ? double(c.attn_scale) : 1 / std::sqrt(double(hd));
    for (int t = 0; t < n; ++t) {
      std::vector<double> att(size_t(c.q_dim()), 0.0);
      for (int hh = 0; hh < c.n_heads; ++hh) {
        const int kvh = hh / group;
        std::vector<double> w(size_t(t + 1), -INFINITY);
        double mx = -INFINITY;
        for (int s = 0; s <= t; ++s) {
          if (window > 0 && t - s >= window) continue;  // outside the window
          double dot = 0;
          for (int e = 0; e < hd; ++e)
            dot += q[size_t(t)][size_t(hh * hd + e)] * k[size_t(s)][size_t(kvh * hd + e)];
          double score = dot * scale;
          if (c.attn_softcap > 0) score = std::tanh(score / c.attn_softcap) * c.attn_softcap;
          w[size_t(s)] = score;
          mx = std::max(mx, score);
        }
        // gpt-oss: the head's sink is one more logit of the softmax, its
        // share dropped (transformers' eager_attention_forward).
        const double sink = c.attn_sinks ? double(m.Get("attn_sinks", l)[size_t(hh)]) : -INFINITY;
        mx = std::max(mx, sink);
        double sum = std::exp(sink - mx);
        for (double& e : w) sum += (e = std::exp(e - mx));
        for (int s = 0; s <= t; ++s) {
          for (int e = 0; e < hd; ++e)
            att[size_t(hh * hd + e)] += w[size_t(s)] / sum * v[size_t(s)][size_t(kvh * hd + e)];
        }
      }
      std::vector<double> o =
          Linear(m.Get("wo", l), att, size_t(c.hidden), c.o_bias ? &m.Get("bo", l) : nullptr);
      if (c.sandwich_norm) o = RmsNorm(o, m.Get("post_attn_norm", l).data(), eps);
      for (int j = 0; j < c.hidden; ++j) x[size_t(t)][size_t(j)] += o[size_t(j)];
    }
    for (int t = 0; t < n; ++t) {
      const std::vector<double> h = RmsNorm(x[size_t(t)], m.Get("ffn_norm", l).data(), eps);
      if (c.IsMoeLayer(l)) {
        const std::vector<double> d = MoeMlp(m, l, h, trace);
        for (int j = 0; j < c.hidden; ++j) x[size_t(t)][size_t(j)] += d[size_t(j)];
        continue;
      }
      const std::vector<double> g = Linear(m.Get("w_gate", l), h, size_t(c.ffn));
      std::vector<double> a = Linear(m.Get("w_up", l), h, size_t(c.ffn));
      for (int j = 0; j < c.ffn; ++j) {
        const double z = g[size_t(j)];
        const double act =
            c.mlp_act == MlpActivation::kGeluTanh
                ? 0.5 * z *
                      (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (z + 0.044715 * z * z * z)))
                : z / (1 + std::exp(-z));
        a[size_t(j)] *= act;
      }
      std::vector<double> d = Linear(m.Get("w_down", l), a, size_t(c.hidden));
      if (c.sandwich_norm) d = RmsNorm(d, m.Get("post_ffn_norm", l).data(), eps);
      for (int j = 0; j < c.hidden; ++j) x[size_t(t)][size_t(j)] += d[size_t(j)];
    }
  }
  Rows logits(static_cast<size_t>(n));
  const std::vector<float>& out = m.Get(c.tied_embeddings ? "tok_embd" : "output");
  for (int t = 0; t < n; ++t) {
    logits[size_t(t)] =
        Linear(out, RmsNorm(x[size_t(t)], m.Get("output_norm").data(), eps), size_t(c.vocab));
    if (c.final_softcap > 0) {
      for (double& z : logits[size_t(t)]) z = std::tanh(z / c.final_softcap) * c.final_softcap;
    }
  }
  return logits;
}

}  // namespace paged::reference
