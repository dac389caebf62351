// The engine's per-architecture features on the CPU reference backend against
// an independent forward pass in double written here from the definitions
// (transformers' modeling code): sliding windows (mistral, gemma's local
// layers), q/k norms (qwen3, gemma3), sandwich norms, GeGLU, embedding scale,
// attention and final soft-caps, query_pre_attn_scalar (gemma2/3), a local
// RoPE base (gemma3), linear / yarn / longrope RoPE with their attention
// factors. Weights are random, f32, in memory (no file).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/test_util.h"
#include "worker/engine/generator.h"
#include "worker/offline/local_model.h"

namespace paged {
namespace {

using Rows = std::vector<std::vector<double>>;  // [position][dim]

// A ModelSource with every tensor `c` needs: matrices N(0, 0.08), embeddings
// N(0, 0.2), norms 1 + N(0, 0.1), biases N(0, 0.1) (make_golden.py's spread).
struct Model {
  ModelSource src;
  std::vector<std::unique_ptr<std::vector<float>>> storage;

  const std::vector<float>& Get(const std::string& name, int layer = -1) const {
    for (size_t i = 0; i < src.tensors.size(); ++i) {
      if (src.tensors[i].name == name && src.tensors[i].layer == layer) return *storage[i];
    }
    ADD_FAILURE() << "no tensor " << name << " " << layer;
    static const std::vector<float> empty;
    return empty;
  }
};

std::unique_ptr<Model> MakeModel(const ModelConfig& c, uint32_t seed) {
  auto m = std::make_unique<Model>();
  m->src.path = "arch-test";
  m->src.format = "synthetic";
  m->src.config = c;
  std::mt19937 rng(seed);
  auto add = [&](const std::string& name, int layer, int64_t rows, int64_t cols, double mean,
                 double std) {
    std::normal_distribution<double> d(mean, std);
    auto buf = std::make_unique<std::vector<float>>(size_t(rows * cols));
    for (float& x : *buf) x = float(d(rng));
    SourceTensor t;
    t.name = name;
    t.layer = layer;
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
    add("w_gate", l, c.ffn, c.hidden, 0, 0.08);
    add("w_up", l, c.ffn, c.hidden, 0, 0.08);
    add("w_down", l, c.hidden, c.ffn, 0, 0.08);
  }
  return m;
}

// ---- the reference, in double --------------------------------------------

std::vector<double> RmsNorm(const std::vector<double>& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1 / std::sqrt(ss / double(x.size()) + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * w[i];
  return out;
}

// y = W x (+ b), W [rows, cols] row-major.
std::vector<double> Linear(const std::vector<float>& w, const std::vector<double>& x, size_t rows,
                           const std::vector<float>* bias = nullptr) {
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
std::vector<double> InvFreq(const ModelConfig& c, bool sliding, double* attn_factor) {
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
      const double lo = std::max(0.0, std::floor(dim_of(c.rope_beta_fast)));
      const double hi = std::min(double(d - 1), std::ceil(dim_of(c.rope_beta_slow)));
      const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
      v = v / c.rope_factor * ramp + v * (1 - ramp);
    }
    f[size_t(i)] = v;
  }
  return f;
}

void Rotate(std::vector<double>& x, int heads, int d, int pos, const std::vector<double>& freq,
            double attn_factor) {
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

// Logits at every position of one forward pass over `tokens` (positions 0..).
Rows Reference(const Model& m, const std::vector<int32_t>& tokens) {
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
        double sum = 0;
        for (double& e : w) sum += (e = std::exp(e - mx));
        for (int s = 0; s <= t; ++s) {
          for (int e = 0; e < hd; ++e)
            att[size_t(hh * hd + e)] += w[size_t(s)] / sum * v[size_t(s)][size_t(kvh * hd + e)];
        }
      }
      std::vector<double> o = Linear(m.Get("wo", l), att, size_t(c.hidden));
      if (c.sandwich_norm) o = RmsNorm(o, m.Get("post_attn_norm", l).data(), eps);
      for (int j = 0; j < c.hidden; ++j) x[size_t(t)][size_t(j)] += o[size_t(j)];
    }
    for (int t = 0; t < n; ++t) {
      const std::vector<double> h = RmsNorm(x[size_t(t)], m.Get("ffn_norm", l).data(), eps);
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

// ---- the engine ------------------------------------------------------------

std::unique_ptr<LocalModel> Load(const Model& m, int block_tokens = 4) {
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  layout.block_tokens = block_tokens;  // small: windows and contexts cross blocks
  auto lm = LocalModel::Load(m.src, layout, "cpu", 2);
  EXPECT_TRUE(lm.ok()) << lm.status();
  return lm.ok() ? std::move(*lm) : nullptr;
}

// Every position's logits, one decode step each.
std::vector<std::vector<float>> Decode(LocalModel& lm, const std::vector<int32_t>& tokens) {
  auto r = TeacherForcedLogits(*lm.engine, tokens, lm.kv_blocks());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : std::vector<std::vector<float>>{};
}

// The last position's logits after prefill chunks of `chunk` tokens.
std::vector<float> Prefill(LocalModel& lm, const std::vector<int32_t>& tokens, int chunk) {
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

std::vector<int32_t> Tokens(int n, int vocab) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(int32_t((i * 37 + 11) % vocab));
  return t;
}

ModelConfig Base(Arch arch) {
  ModelConfig c;
  c.arch = arch;
  c.n_layers = 3;
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

// Every position by decode steps, and the last by chunked prefill, against
// the reference: f32 arithmetic against double, so about 1e-6 relative; the
// bound is the golden tests' 1e-4.
void ExpectMatchesReference(const ModelConfig& c, int n_tokens, uint32_t seed) {
  ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c);
  const auto m = MakeModel(c, seed);
  auto lm = Load(*m);
  ASSERT_NE(lm, nullptr);
  const std::vector<int32_t> tokens = Tokens(n_tokens, c.vocab);
  const Rows want = Reference(*m, tokens);
  const auto got = Decode(*lm, tokens);
  ASSERT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t p = 0; p < got.size(); ++p) {
    const double err = testing::RelativeError(got[p], want[p]);
    worst = std::max(worst, err);
    EXPECT_LT(err, 1e-4) << DescribeConfig(c) << " pos " << p;
  }
  std::printf("%s\n  largest relative error over %d positions: %.2g\n", DescribeConfig(c).c_str(),
              n_tokens, worst);
  for (int chunk : {n_tokens, 5}) {
    auto lm2 = Load(*m);
    EXPECT_LT(testing::RelativeError(Prefill(*lm2, tokens, chunk), want.back()), 1e-4)
        << "prefill in chunks of " << chunk;
  }
}

// Mistral with a window shorter than the context: positions past the window
// differ from the windowless model's, the ones before it do not, and both
// match the reference; decode, one-shot and chunked prefill agree.
TEST(ArchEngineTest, SlidingWindowAppliedAndMatchesReference) {
  ModelConfig c = Base(Arch::kMistral);
  c.sliding_window = 6;  // not a multiple of the 4-token blocks
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, true);
  const int n = 24;
  ExpectMatchesReference(c, n, 31);

  ModelConfig full = c;
  full.sliding_window = 0;
  ExpectMatchesReference(full, n, 31);
  const auto m_win = MakeModel(c, 31), m_full = MakeModel(full, 31);  // the same weights
  auto windowed = Load(*m_win), unwindowed = Load(*m_full);
  const std::vector<int32_t> tokens = Tokens(n, c.vocab);
  const auto a = Decode(*windowed, tokens), b = Decode(*unwindowed, tokens);
  ASSERT_EQ(a.size(), size_t(n));
  ASSERT_EQ(b.size(), size_t(n));
  for (int p = 0; p < n; ++p) {
    const std::vector<double> bd(b[size_t(p)].begin(), b[size_t(p)].end());
    const double diff = testing::RelativeError(a[size_t(p)], bd);
    if (p < c.sliding_window) {
      EXPECT_EQ(diff, 0.0) << "position " << p << " sees no more than the window";
    } else {
      EXPECT_GT(diff, 1e-3) << "position " << p << ": the window changed nothing";
    }
  }
}

// A window of 1: each token attends to itself only.
TEST(ArchEngineTest, WindowOfOne) {
  ModelConfig c = Base(Arch::kMistral);
  c.sliding_window = 1;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, true);
  ExpectMatchesReference(c, 9, 32);
}

TEST(ArchEngineTest, Qwen3QkNormsAndWideHeads) {
  ModelConfig c = Base(Arch::kQwen3);
  c.head_dim = 32;  // q_dim 128 != hidden 64
  c.qk_norm = 1;
  c.rope_theta = 1000000.f;
  ExpectMatchesReference(c, 12, 33);
}

TEST(ArchEngineTest, Gemma2SandwichGegluSoftCapsAlternatingWindows) {
  ModelConfig c = Base(Arch::kGemma2);
  c.n_layers = 4;
  c.sandwich_norm = 1;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.embed_scale = std::sqrt(64.f);
  c.attn_scale = float(1 / std::sqrt(24.0));  // query_pre_attn_scalar 24 != head_dim
  c.attn_softcap = 1.5f;                      // small, so that it bites on these weights
  c.final_softcap = 2.f;
  c.tied_embeddings = 1;
  c.sliding_window = 5;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, l % 2 == 0);
  ExpectMatchesReference(c, 20, 34);
}

TEST(ArchEngineTest, Gemma3QkNormsLocalRopeBaseLinearGlobalScaling) {
  ModelConfig c = Base(Arch::kGemma3);
  c.n_layers = 3;
  c.qk_norm = 1;
  c.sandwich_norm = 1;
  c.mlp_act = MlpActivation::kGeluTanh;
  c.embed_scale = std::sqrt(64.f);
  c.attn_scale = 0.25f;
  c.tied_embeddings = 1;
  c.rope_theta = 1000000.f;
  c.rope_local_theta = 10000.f;
  c.rope_scaling = RopeScaling::kLinear;
  c.rope_factor = 8.f;
  c.sliding_window = 4;
  for (int l = 0; l < c.n_layers; ++l) c.SetSlidingLayer(l, (l + 1) % 3 != 0);
  ExpectMatchesReference(c, 17, 35);
}

TEST(ArchEngineTest, Qwen2YarnWithAttentionFactor) {
  ModelConfig c = Base(Arch::kQwen2);
  c.qkv_bias = 1;
  c.rope_theta = 1000000.f;
  c.rope_scaling = RopeScaling::kYarn;
  c.rope_factor = 4.f;
  c.rope_original_max_pos = 32;
  c.rope_attn_factor = float(0.1 * std::log(4.0) + 1);
  ExpectMatchesReference(c, 40, 36);  // past the original context
}

TEST(ArchEngineTest, Phi3LongRope) {
  ModelConfig c = Base(Arch::kPhi3);
  c.rope_scaling = RopeScaling::kLongRope;
  c.rope_original_max_pos = 16;
  c.rope_attn_factor = 1.2f;
  c.n_rope_factors = c.head_dim / 2;
  for (int i = 0; i < c.n_rope_factors; ++i) c.rope_factors[i] = 1.f + 0.4f * float(i);
  ExpectMatchesReference(c, 20, 37);
}

// A config whose layers lack the norms it asks for fails the step, and says so.
TEST(ArchEngineTest, MissingNormsAreAnErrorNotACrash) {
  ModelConfig c = Base(Arch::kQwen3);
  const auto m = MakeModel(c, 38);  // no q_norm / k_norm tensors
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  auto lm = LocalModel::Load(m->src, layout, "cpu", 1);
  ASSERT_TRUE(lm.ok()) << lm.status();
  // The segment's copy of the config now asks for q/k norms it does not have.
  ModelConfig wants = c;
  wants.qk_norm = 1;
  Engine engine((*lm)->backend.get(), (*lm)->provider.get(), wants, (*lm)->engine->block_tokens());
  SeqStep s;
  s.seq_id = 1;
  s.tokens = {1, 2};
  s.block_table = {0};
  auto r = engine.Step(StepBatch{{s}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("lacks the q/k or sandwich norms"), std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace paged
