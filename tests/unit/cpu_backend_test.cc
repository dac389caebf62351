// The CPU reference backend against naive double-precision references written
// out plainly here: every weight dtype of MatMul / Embedding, RmsNorm, RoPE
// (llama3 scaling included), the paged KV cache (KvWrite, Attention over
// scattered blocks with GQA), the element-wise ops and sampling.
#include "worker/backends/cpu/cpu_backend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/dtype.h"
#include "common/quant.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/engine/rope.h"
#include "worker/engine/sampling.h"

namespace paged {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<float> RandomFloats(std::mt19937& rng, size_t n, float stddev = 1.f) {
  std::normal_distribution<float> dist(0.f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Multiples of 1/32 in [-2, 2]: exact in f32, f16 and bf16.
float ExactValue(std::mt19937& rng) {
  return float(std::uniform_int_distribution<int>(-64, 64)(rng)) / 32.f;
}

// ---- weights ----------------------------------------------------------------

// A [rows, cols] weight in one storage dtype plus the values (double) that
// the backend must see after decoding it.
struct TestWeight {
  std::vector<uint8_t> data;
  std::vector<uint16_t> scales;
  std::vector<double> dense;  // [rows][cols]
  WeightRef ref;
};

TestWeight MakeWeight(DType t, int64_t rows, int64_t cols, int group, std::mt19937& rng) {
  TestWeight w;
  w.dense.resize(size_t(rows * cols));
  w.data.resize(PayloadBytes(t, uint64_t(rows), uint64_t(cols)));
  if (t == DType::kF32) {
    std::vector<float> v = RandomFloats(rng, size_t(rows * cols));
    std::memcpy(w.data.data(), v.data(), v.size() * 4);
    for (size_t i = 0; i < v.size(); ++i) w.dense[i] = v[i];
  } else if (t == DType::kF16 || t == DType::kBF16) {
    uint16_t* d = reinterpret_cast<uint16_t*>(w.data.data());
    for (size_t i = 0; i < w.dense.size(); ++i) {
      const float x = ExactValue(rng);
      d[i] = t == DType::kF16 ? FloatToHalf(x) : FloatToBf16(x);
      w.dense[i] = x;
    }
  } else {
    const int64_t groups = GroupsPerRow(cols, group);
    const int64_t row_bytes = t == DType::kI8 ? cols : (cols + 1) / 2;
    w.scales.resize(size_t(rows * groups));
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> x = RandomFloats(rng, size_t(cols));
      uint8_t* q = w.data.data() + r * row_bytes;
      uint16_t* s = w.scales.data() + r * groups;
      if (t == DType::kI8) {
        QuantizeRowInt8(x.data(), cols, group, reinterpret_cast<int8_t*>(q), s);
      } else {
        QuantizeRowInt4(x.data(), cols, group, q, s);
      }
      // The format, decoded by hand: s * q, int4 nibbles hold q + 8.
      for (int64_t c = 0; c < cols; ++c) {
        int qv;
        if (t == DType::kI8) {
          qv = reinterpret_cast<const int8_t*>(q)[c];
        } else {
          qv = ((c % 2 == 1) ? (q[c / 2] >> 4) : (q[c / 2] & 0xf)) - 8;
        }
        w.dense[size_t(r * cols + c)] = double(HalfToFloat(s[c / group])) * qv;
      }
    }
  }
  w.ref.data = w.data.data();
  w.ref.scales = w.scales.empty() ? nullptr : w.scales.data();
  w.ref.dtype = t;
  w.ref.group = IsQuantized(t) ? group : 0;
  w.ref.rows = rows;
  w.ref.cols = cols;
  return w;
}

struct MatMulCase {
  DType dtype;
  int n;
  int64_t rows, cols;
  int group;
  bool bias;
};

class CpuMatMulTest : public ::testing::TestWithParam<MatMulCase> {};

TEST_P(CpuMatMulTest, MatchesDoubleReference) {
  const MatMulCase c = GetParam();
  std::mt19937 rng(uint32_t(c.n * 1000 + c.rows * 7 + c.cols + int(c.dtype)));
  TestWeight w = MakeWeight(c.dtype, c.rows, c.cols, c.group, rng);
  std::vector<float> x = RandomFloats(rng, size_t(c.n * c.cols));
  std::vector<float> bias = RandomFloats(rng, size_t(c.rows));
  std::vector<float> out(size_t(c.n * c.rows), -1.f);
  auto be = MakeCpuBackend(4);
  be->MatMul(x.data(), c.n, w.ref, c.bias ? bias.data() : nullptr, out.data());
  for (int i = 0; i < c.n; ++i) {
    for (int64_t r = 0; r < c.rows; ++r) {
      double want = c.bias ? bias[size_t(r)] : 0.0, mag = 0.0;
      for (int64_t k = 0; k < c.cols; ++k) {
        const double p = double(x[size_t(i * c.cols + k)]) * w.dense[size_t(r * c.cols + k)];
        want += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(out[size_t(i * c.rows + r)], want, 1e-5 * mag + 1e-6)
          << DTypeName(c.dtype) << " row " << i << " col " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, CpuMatMulTest,
                         ::testing::Values(MatMulCase{DType::kF32, 1, 7, 33, 0, false},
                                           MatMulCase{DType::kF32, 5, 37, 45, 0, true},
                                           MatMulCase{DType::kF32, 40, 300, 129, 0, true},
                                           MatMulCase{DType::kF16, 5, 37, 45, 0, true},
                                           MatMulCase{DType::kF16, 40, 300, 129, 0, false},
                                           MatMulCase{DType::kBF16, 5, 37, 45, 0, false},
                                           MatMulCase{DType::kBF16, 40, 300, 129, 0, true},
                                           MatMulCase{DType::kI8, 1, 7, 33, 16, true},
                                           MatMulCase{DType::kI8, 5, 37, 45, 16, true},
                                           MatMulCase{DType::kI8, 40, 300, 129, 64, false},
                                           MatMulCase{DType::kI4, 1, 7, 33, 16, false},
                                           MatMulCase{DType::kI4, 5, 37, 45, 16, true},
                                           MatMulCase{DType::kI4, 40, 300, 129, 32, true}),
                         [](const ::testing::TestParamInfo<MatMulCase>& info) {
                           const MatMulCase& c = info.param;
                           return std::string(DTypeName(c.dtype)) + "_n" + std::to_string(c.n) +
                                  "_" + std::to_string(c.rows) + "x" + std::to_string(c.cols);
                         });

// A token's output does not depend on its batch or on the thread count.
TEST(CpuBackendTest, MatMulRowsIndependentOfBatchAndThreads) {
  std::mt19937 rng(7);
  TestWeight w = MakeWeight(DType::kI8, 200, 96, 32, rng);
  const int n = 37;
  std::vector<float> x = RandomFloats(rng, size_t(n * 96));
  std::vector<float> batch(size_t(n * 200)), single(200), threaded(size_t(n * 200));
  auto one = MakeCpuBackend(1);
  auto four = MakeCpuBackend(4);
  one->MatMul(x.data(), n, w.ref, nullptr, batch.data());
  four->MatMul(x.data(), n, w.ref, nullptr, threaded.data());
  EXPECT_EQ(0, std::memcmp(batch.data(), threaded.data(), batch.size() * 4));
  for (int i = 0; i < n; ++i) {
    one->MatMul(x.data() + i * 96, 1, w.ref, nullptr, single.data());
    EXPECT_EQ(0, std::memcmp(single.data(), batch.data() + i * 200, 200 * 4)) << "row " << i;
  }
}

// MatMulMany's jobs with add_to (a layer's output projection and down into
// the residual stream): each residual ends as itself plus its job's product,
// bit for bit MatMul then Add; jobs without one write out as MatMul does.
TEST(CpuBackendTest, MatMulManyAddsIntoTheResidual) {
  std::mt19937 rng(11);
  const int n = 3;
  TestWeight a = MakeWeight(DType::kF16, 70, 64, 0, rng);
  TestWeight b = MakeWeight(DType::kI8, 40, 64, 32, rng);
  const std::vector<float> x = RandomFloats(rng, size_t(n * 64));
  const std::vector<float> bias = RandomFloats(rng, 70);
  const std::vector<float> residual = RandomFloats(rng, size_t(n * 70));
  auto be = MakeCpuBackend(2);
  std::vector<float> added = residual, scratch(size_t(n * 70)), out_b(size_t(n * 40));
  const Backend::MatMulJob jobs[2] = {{&a.ref, bias.data(), scratch.data(), added.data()},
                                      {&b.ref, nullptr, out_b.data()}};
  be->MatMulMany(x.data(), n, jobs, 2);
  std::vector<float> want = residual, product(size_t(n * 70)), want_b(size_t(n * 40));
  be->MatMul(x.data(), n, a.ref, bias.data(), product.data());
  be->Add(want.data(), product.data(), int64_t(want.size()));
  be->MatMul(x.data(), n, b.ref, nullptr, want_b.data());
  EXPECT_EQ(0, std::memcmp(added.data(), want.data(), want.size() * 4));
  EXPECT_EQ(0, std::memcmp(out_b.data(), want_b.data(), want_b.size() * 4));
  EXPECT_NE(0, std::memcmp(added.data(), residual.data(), residual.size() * 4));
}

// NormMatMulMany's default: the norm into h, then the products of h, bit for
// bit (the CPU folds nothing; the engine's transcripts rest on it).
TEST(CpuBackendTest, NormMatMulManyIsTheNormThenTheProducts) {
  std::mt19937 rng(12);
  const int n = 2;
  TestWeight a = MakeWeight(DType::kF16, 30, 64, 0, rng);
  TestWeight b = MakeWeight(DType::kI4, 20, 64, 32, rng);
  const std::vector<float> x = RandomFloats(rng, size_t(n * 64));
  const std::vector<float> gamma = RandomFloats(rng, 64);
  auto be = MakeCpuBackend(2);
  std::vector<float> h(size_t(n * 64)), out_a(size_t(n * 30)), out_b(size_t(n * 20));
  const Backend::MatMulJob jobs[2] = {{&a.ref, nullptr, out_a.data()},
                                      {&b.ref, nullptr, out_b.data()}};
  be->NormMatMulMany(x.data(), {gamma.data(), 64, 1e-5f, h.data()}, n, jobs, 2);
  std::vector<float> want_h(h.size()), want_a(out_a.size()), want_b(out_b.size());
  be->RmsNorm(x.data(), gamma.data(), n, 64, 1e-5f, want_h.data());
  be->MatMul(want_h.data(), n, a.ref, nullptr, want_a.data());
  be->MatMul(want_h.data(), n, b.ref, nullptr, want_b.data());
  EXPECT_EQ(0, std::memcmp(h.data(), want_h.data(), h.size() * 4));
  EXPECT_EQ(0, std::memcmp(out_a.data(), want_a.data(), out_a.size() * 4));
  EXPECT_EQ(0, std::memcmp(out_b.data(), want_b.data(), out_b.size() * 4));
  EXPECT_NE(0, std::memcmp(h.data(), x.data(), h.size() * 4));
}

TEST(CpuBackendTest, EmbeddingDecodesEveryDType) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kI8, DType::kI4}) {
    std::mt19937 rng(11);
    const int64_t rows = 19, cols = 37;
    TestWeight w = MakeWeight(t, rows, cols, 16, rng);
    const std::vector<int32_t> ids = {3, 0, 18, 3, 7};
    std::vector<float> out(ids.size() * cols);
    auto be = MakeCpuBackend(2);
    be->Embedding(w.ref, ids.data(), int(ids.size()), out.data());
    for (size_t i = 0; i < ids.size(); ++i) {
      for (int64_t c = 0; c < cols; ++c) {
        // Decoded values are exact in f32 (an f16 scale times a small int).
        ASSERT_EQ(out[i * cols + size_t(c)], float(w.dense[size_t(ids[i] * cols + c)]))
            << DTypeName(t) << " id " << ids[i] << " col " << c;
      }
    }
  }
}

// ---- element-wise -----------------------------------------------------------

TEST(CpuBackendTest, RmsNormMatchesReference) {
  std::mt19937 rng(3);
  const int n = 6, dim = 77;
  const float eps = 1e-5f;
  std::vector<float> x = RandomFloats(rng, n * dim, 3.f), w = RandomFloats(rng, dim);
  std::vector<float> out(n * dim), in_place = x;
  auto be = MakeCpuBackend(2);
  be->RmsNorm(x.data(), w.data(), n, dim, eps, out.data());
  be->RmsNorm(in_place.data(), w.data(), n, dim, eps, in_place.data());
  for (int i = 0; i < n; ++i) {
    double ss = 0;
    for (int j = 0; j < dim; ++j) ss += double(x[i * dim + j]) * x[i * dim + j];
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int j = 0; j < dim; ++j) {
      const double want = double(x[i * dim + j]) * inv * w[j];
      EXPECT_NEAR(out[i * dim + j], want, 1e-5 * (std::fabs(want) + 1e-3));
      EXPECT_EQ(out[i * dim + j], in_place[i * dim + j]);
    }
  }
}

TEST(CpuBackendTest, SwiGluAddGatherRows) {
  std::mt19937 rng(5);
  const int n = 3, dim = 10;
  std::vector<float> g = RandomFloats(rng, n * dim, 4.f), u = RandomFloats(rng, n * dim);
  std::vector<float> out(n * dim);
  auto be = MakeCpuBackend(1);
  be->SwiGlu(g.data(), u.data(), n, dim, out.data());
  for (int j = 0; j < n * dim; ++j) {
    const double want = g[j] / (1.0 + std::exp(-double(g[j]))) * u[j];
    EXPECT_NEAR(out[j], want, 1e-6 * (std::fabs(want) + 1));
  }
  std::vector<float> sum = g;
  be->Add(sum.data(), u.data(), n * dim);
  for (int j = 0; j < n * dim; ++j) EXPECT_EQ(sum[j], g[j] + u[j]);
  const std::vector<int32_t> rows = {2, 0, 2};
  std::vector<float> gathered(rows.size() * dim);
  be->GatherRows(g.data(), rows.data(), int(rows.size()), dim, gathered.data());
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int j = 0; j < dim; ++j) EXPECT_EQ(gathered[i * dim + j], g[rows[i] * dim + j]);
  }
}

// gpt-oss's clamped SwiGLU against its definition in double, values on
// both sides of the limit; in place too.
TEST(CpuBackendTest, SwiGluOaiClampsAndMatchesFormula) {
  std::mt19937 rng(9);
  const int n = 4, dim = 13;
  const float alpha = 1.702f, limit = 1.5f;
  std::vector<float> g = RandomFloats(rng, n * dim, 4.f), u = RandomFloats(rng, n * dim, 4.f);
  std::vector<float> out(n * dim), in_place = g;
  auto be = MakeCpuBackend(1);
  be->SwiGluOai(g.data(), u.data(), n, dim, alpha, limit, out.data());
  be->SwiGluOai(in_place.data(), u.data(), n, dim, alpha, limit, in_place.data());
  int clamped_gate = 0, clamped_up = 0;
  for (int j = 0; j < n * dim; ++j) {
    const double gj = std::min(double(g[j]), double(limit));
    const double uj = std::clamp(double(u[j]), -double(limit), double(limit));
    const double want = (uj + 1) * gj / (1 + std::exp(-double(alpha) * gj));
    EXPECT_NEAR(out[j], want, 1e-6 * (std::fabs(want) + 1)) << g[j] << " " << u[j];
    EXPECT_EQ(in_place[j], out[j]);
    clamped_gate += g[j] > limit;
    clamped_up += std::fabs(u[j]) > limit;
  }
  EXPECT_GT(clamped_gate, 0);
  EXPECT_GT(clamped_up, 0);
}

// GeGlu against torch's gelu(approximate="tanh") in double; Scale; SoftCap.
TEST(CpuBackendTest, GeGluScaleSoftCap) {
  std::mt19937 rng(6);
  const int n = 3, dim = 11;
  std::vector<float> g = RandomFloats(rng, n * dim, 4.f), u = RandomFloats(rng, n * dim);
  std::vector<float> out(n * dim), in_place = g;
  auto be = MakeCpuBackend(1);
  be->GeGlu(g.data(), u.data(), n, dim, out.data());
  be->GeGlu(in_place.data(), u.data(), n, dim, in_place.data());
  for (int j = 0; j < n * dim; ++j) {
    const double x = g[j];
    const double want =
        0.5 * x * (1 + std::tanh(std::sqrt(2 / kPi) * (x + 0.044715 * x * x * x))) * u[j];
    EXPECT_NEAR(out[j], want, 1e-6 * (std::fabs(want) + 1)) << "gate " << x;
    EXPECT_EQ(in_place[j], out[j]);
  }
  std::vector<float> x = g;
  be->Scale(x.data(), n * dim, 8.f);
  for (int j = 0; j < n * dim; ++j) EXPECT_EQ(x[j], g[j] * 8.f);
  be->SoftCap(x.data(), n * dim, 5.f);
  for (int j = 0; j < n * dim; ++j) {
    const double want = 5 * std::tanh(double(g[j]) * 8 / 5);
    EXPECT_NEAR(x[j], want, 1e-6 * 5);
    EXPECT_LT(std::fabs(x[j]), 5.f + 1e-6f);
  }
}

// ---- RoPE -------------------------------------------------------------------

// The frequencies written out from the definition (double), llama3 included.
std::vector<double> ReferenceInvFreq(const RopeParams& p) {
  std::vector<double> f(size_t(p.head_dim / 2));
  for (size_t i = 0; i < f.size(); ++i) {
    double freq = 1.0 / std::pow(double(p.theta), double(2 * i) / p.head_dim);
    if (p.scaling == RopeScaling::kLinear) freq /= p.factor;
    if (p.scaling == RopeScaling::kLongRope) freq /= p.ext_factors[i];
    if (p.scaling == RopeScaling::kYarn) {
      // YaRN (arXiv 2309.00071): pairs that turn fewer than beta_slow times
      // over the original context are interpolated (/ factor), those that
      // turn more than beta_fast times kept, a linear ramp between.
      auto dim_of = [&](double rotations) {
        return p.head_dim * std::log(p.original_max_pos / (rotations * 2 * kPi)) /
               (2 * std::log(double(p.theta)));
      };
      const double lo = std::max(0.0, std::floor(dim_of(p.beta_fast)));
      const double hi = std::min(double(p.head_dim - 1), std::ceil(dim_of(p.beta_slow)));
      const double ramp = std::clamp((double(i) - lo) / (hi - lo), 0.0, 1.0);
      freq = freq / p.factor * ramp + freq * (1 - ramp);
    }
    if (p.scaling == RopeScaling::kLlama3) {
      const double wavelen = 2 * kPi / freq;
      if (wavelen < p.original_max_pos / double(p.high_freq_factor)) {
        // kept
      } else if (wavelen > p.original_max_pos / double(p.low_freq_factor)) {
        freq /= p.factor;
      } else {
        const double smooth = (p.original_max_pos / wavelen - p.low_freq_factor) /
                              (p.high_freq_factor - p.low_freq_factor);
        freq = (1 - smooth) * freq / p.factor + smooth * freq;
      }
    }
    f[i] = freq;
  }
  return f;
}

RopeParams Llama3Rope() {
  RopeParams p;
  p.head_dim = 64;
  p.theta = 500000.f;
  p.scaling = RopeScaling::kLlama3;
  p.factor = 8.f;
  p.low_freq_factor = 1.f;
  p.high_freq_factor = 4.f;
  p.original_max_pos = 8192;
  return p;
}

void CheckRopeAgainstFormula(const RopeParams& p) {
  const int n_heads = 4, n_kv_heads = 2, hd = p.head_dim, half = hd / 2;
  const std::vector<int32_t> pos = {0, 1, 7, 100, 1000, 4097};
  const int n = int(pos.size());
  std::mt19937 rng(13);
  std::vector<float> q = RandomFloats(rng, size_t(n * n_heads * hd));
  std::vector<float> k = RandomFloats(rng, size_t(n * n_kv_heads * hd));
  std::vector<float> q0 = q, k0 = k;
  auto be = MakeCpuBackend(2);
  be->Rope(q.data(), k.data(), pos.data(), n, n_heads, n_kv_heads, p);
  const std::vector<double> freq = ReferenceInvFreq(p);
  auto check = [&](const std::vector<float>& before, const std::vector<float>& after, int heads) {
    for (int i = 0; i < n; ++i) {
      for (int h = 0; h < heads; ++h) {
        const size_t o = size_t((i * heads + h) * hd);
        for (int j = 0; j < half; ++j) {
          const double a = before[o + j], b = before[o + j + half];
          const double c = std::cos(pos[i] * freq[j]) * p.attn_factor,
                       s = std::sin(pos[i] * freq[j]) * p.attn_factor;
          const double tol = 1e-3 * (std::fabs(a) + std::fabs(b)) + 1e-6;
          ASSERT_NEAR(after[o + j], a * c - b * s, tol) << "pos " << pos[i] << " i " << j;
          ASSERT_NEAR(after[o + j + half], b * c + a * s, tol) << "pos " << pos[i] << " i " << j;
        }
      }
    }
  };
  check(q0, q, n_heads);
  check(k0, k, n_kv_heads);
}

TEST(CpuBackendTest, RopeMatchesFormula) {
  RopeParams p;
  p.head_dim = 16;
  p.theta = 10000.f;
  CheckRopeAgainstFormula(p);
}

TEST(CpuBackendTest, RopeLlama3MatchesFormula) {
  const RopeParams p = Llama3Rope();
  // The parameters reach all three bands: kept, divided by factor, smoothed.
  int kept = 0, divided = 0, smoothed = 0;
  for (int i = 0; i < p.head_dim / 2; ++i) {
    const double wavelen = 2 * kPi * std::pow(double(p.theta), double(2 * i) / p.head_dim);
    if (wavelen < p.original_max_pos / p.high_freq_factor) {
      ++kept;
    } else if (wavelen > p.original_max_pos / p.low_freq_factor) {
      ++divided;
    } else {
      ++smoothed;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
  CheckRopeAgainstFormula(p);
}

TEST(CpuBackendTest, RopeLinearYarnLongRopeMatchFormula) {
  RopeParams p;
  p.head_dim = 32;
  p.theta = 10000.f;
  p.scaling = RopeScaling::kLinear;
  p.factor = 4.f;
  CheckRopeAgainstFormula(p);

  // Qwen's long-context yarn: factor 4 over an original 64 positions (so the
  // ramp lies inside the 16 pairs), with its attention factor 0.1 ln 4 + 1.
  p.scaling = RopeScaling::kYarn;
  p.original_max_pos = 64;
  p.beta_fast = 32.f;
  p.beta_slow = 1.f;
  p.attn_factor = float(0.1 * std::log(4.0) + 1);
  std::vector<float> inv(16);
  RopeInvFreq(p, inv.data());
  const double plain0 = 1.0, plain15 = 1.0 / std::pow(10000.0, 30.0 / 32);
  EXPECT_NEAR(inv[0], plain0, 1e-6);                  // fast pairs kept
  EXPECT_NEAR(inv[15], plain15 / 4, 1e-6 * plain15);  // slow pairs interpolated
  CheckRopeAgainstFormula(p);

  p.scaling = RopeScaling::kLongRope;
  p.attn_factor = 1.19f;
  for (int i = 0; i < 16; ++i) p.ext_factors[i] = 1.f + 0.5f * float(i);
  CheckRopeAgainstFormula(p);
}

// q(p) . k(p') depends only on p - p' (and equals q . k when p == p').
TEST(CpuBackendTest, RopeDotDependsOnRelativePosition) {
  for (const RopeParams& p : {RopeParams{32, 10000.f}, Llama3Rope()}) {
    const int hd = p.head_dim;
    std::mt19937 rng(17);
    const std::vector<float> q = RandomFloats(rng, size_t(hd)), k = RandomFloats(rng, size_t(hd));
    auto be = MakeCpuBackend(1);
    // Row 0 rotates q at pq, row 1 rotates k at pk (the other halves are unused).
    auto rotated_dot = [&](int32_t pq, int32_t pk) {
      std::vector<float> qs(2 * size_t(hd)), ks(2 * size_t(hd));
      std::copy(q.begin(), q.end(), qs.begin());
      std::copy(k.begin(), k.end(), ks.begin() + hd);
      const int32_t pos[2] = {pq, pk};
      be->Rope(qs.data(), ks.data(), pos, 2, 1, 1, p);
      double dot = 0;
      for (int d = 0; d < hd; ++d) dot += double(qs[size_t(d)]) * ks[size_t(hd + d)];
      return dot;
    };
    double plain = 0, mag = 0;
    for (int d = 0; d < hd; ++d) {
      plain += double(q[size_t(d)]) * k[size_t(d)];
      mag += std::fabs(q[size_t(d)] * k[size_t(d)]);
    }
    const double tol = 1e-4 * mag;
    for (int32_t shift : {0, 1, 5, 40}) {
      EXPECT_NEAR(rotated_dot(3, 10), rotated_dot(3 + shift, 10 + shift), tol) << shift;
      EXPECT_NEAR(rotated_dot(25, 9), rotated_dot(25 + shift, 9 + shift), tol) << shift;
      EXPECT_NEAR(rotated_dot(shift, shift), plain, tol) << shift;
    }
    // And it does change with the distance.
    EXPECT_GT(std::fabs(rotated_dot(3, 10) - rotated_dot(3, 4)), tol);
  }
}

// ---- KV cache and attention -------------------------------------------------

int Elt(DType t) { return t == DType::kF32 ? 4 : 2; }

float ReadCached(const uint8_t* p, DType t) {
  if (t == DType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
}

float RoundTo(DType t, float x) {
  if (t == DType::kF16) return HalfToFloat(FloatToHalf(x));
  if (t == DType::kBF16) return Bf16ToFloat(FloatToBf16(x));
  return x;
}

// A layer view over host memory; blocks padded past K and V so that the
// stride is block_bytes, not 2 * block_tokens * kv_dim.
KvLayerView MakeView(std::vector<uint8_t>& mem, DType t, int block_tokens, int kv_dim,
                     int n_blocks) {
  KvLayerView kv;
  kv.dtype = t;
  kv.block_tokens = block_tokens;
  kv.kv_dim = kv_dim;
  kv.block_bytes = uint64_t(2 * block_tokens * kv_dim * Elt(t) + 32);
  kv.n_blocks = uint64_t(n_blocks);
  mem.assign(kv.block_bytes * kv.n_blocks, 0xAB);
  kv.base = mem.data();
  return kv;
}

class CpuKvTest : public ::testing::TestWithParam<DType> {};

TEST_P(CpuKvTest, KvWriteRoundTrip) {
  const DType t = GetParam();
  const int bt = 4, kv_dim = 24, n_blocks = 6;
  std::vector<uint8_t> mem;
  const KvLayerView kv = MakeView(mem, t, bt, kv_dim, n_blocks);
  const std::vector<int32_t> slots = {0, 5, 23, 9, 14, 3, 17};
  const int n = int(slots.size());
  std::mt19937 rng(23);
  std::vector<float> k = RandomFloats(rng, size_t(n * kv_dim)),
                     v = RandomFloats(rng, size_t(n * kv_dim));
  auto be = MakeCpuBackend(1);
  be->KvWrite(k.data(), v.data(), slots.data(), n, kv);
  std::vector<bool> written(mem.size(), false);
  for (int i = 0; i < n; ++i) {
    const int block = slots[size_t(i)] / bt, row = slots[size_t(i)] % bt;
    const size_t k_off = size_t(block) * kv.block_bytes + size_t(row * kv_dim * Elt(t));
    const size_t v_off = k_off + size_t(bt * kv_dim * Elt(t));
    for (int j = 0; j < kv_dim; ++j) {
      EXPECT_EQ(ReadCached(&mem[k_off + size_t(j * Elt(t))], t),
                RoundTo(t, k[size_t(i * kv_dim + j)]));
      EXPECT_EQ(ReadCached(&mem[v_off + size_t(j * Elt(t))], t),
                RoundTo(t, v[size_t(i * kv_dim + j)]));
    }
    std::fill_n(written.begin() + long(k_off), kv_dim * Elt(t), true);
    std::fill_n(written.begin() + long(v_off), kv_dim * Elt(t), true);
  }
  for (size_t b = 0; b < mem.size(); ++b) {
    if (!written[b]) {
      ASSERT_EQ(mem[b], 0xAB) << "byte " << b << " overwritten";
    }
  }
}

struct AttnSetup {
  DType dtype;
  int n_heads, n_kv_heads, head_dim, block_tokens, n_blocks;
  std::vector<std::pair<int, int>> seqs;  // (start_pos, n_new)
  int threads;
  AttnParams params = {};         // window, scale, soft-cap
  std::vector<float> sinks = {};  // [n_heads] (gpt-oss), or empty
};

// Fills each sequence's context [0, start_pos + n_new) through KvWrite into
// blocks drawn from a shuffled pool, runs Attention once for all sequences
// and compares with dense attention in double (the mask of a sliding window
// applied to the whole context: keys before the window weigh nothing).
void RunAttentionCase(const AttnSetup& c) {
  std::mt19937 rng(uint32_t(c.n_heads * 100 + c.n_kv_heads * 10 + int(c.dtype)));
  const int hd = c.head_dim, q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd;
  const int bt = c.block_tokens;
  std::vector<uint8_t> mem;
  const KvLayerView kv = MakeView(mem, c.dtype, bt, kv_dim, c.n_blocks);
  std::vector<int32_t> pool(size_t(c.n_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);

  std::vector<AttnSeq> seqs;
  std::vector<int32_t> tables, slots;
  std::vector<std::vector<float>> dense_k, dense_v;  // per sequence [ctx][kv_dim]
  std::vector<float> all_k, all_v;
  int rows = 0, max_ctx = 0;
  size_t next_block = 0;
  for (auto [start, n_new] : c.seqs) {
    const int ctx = start + n_new;
    max_ctx = std::max(max_ctx, ctx);
    seqs.push_back(AttnSeq{rows, n_new, start, int32_t(tables.size())});
    rows += n_new;
    const int n_blocks = (ctx + bt - 1) / bt;
    const size_t table_at = tables.size();
    for (int b = 0; b < n_blocks; ++b) tables.push_back(pool.at(next_block++));
    std::vector<float> kd(size_t(ctx * kv_dim)), vd(size_t(ctx * kv_dim));
    for (float& x : kd) x = ExactValue(rng);
    for (float& x : vd) x = ExactValue(rng);
    for (int t = 0; t < ctx; ++t) slots.push_back(tables[table_at + size_t(t / bt)] * bt + t % bt);
    all_k.insert(all_k.end(), kd.begin(), kd.end());
    all_v.insert(all_v.end(), vd.begin(), vd.end());
    dense_k.push_back(std::move(kd));
    dense_v.push_back(std::move(vd));
  }
  auto be = MakeCpuBackend(c.threads);
  be->KvWrite(all_k.data(), all_v.data(), slots.data(), int(slots.size()), kv);

  std::vector<float> q = RandomFloats(rng, size_t(rows * q_dim));
  std::vector<float> out(q.size(), -7.f);
  AttnParams params = c.params;
  if (!c.sinks.empty()) params.sinks = c.sinks.data();
  be->Attention(q.data(), seqs.data(), int(seqs.size()), tables.data(), c.n_heads, c.n_kv_heads, hd,
                max_ctx, kv, params, out.data());

  const int group = c.n_heads / c.n_kv_heads;
  const double scale = c.params.scale > 0 ? double(c.params.scale) : 1 / std::sqrt(double(hd));
  const int window = c.params.window;
  for (size_t s = 0; s < seqs.size(); ++s) {
    for (int i = 0; i < seqs[s].n_new; ++i) {
      const int pos = seqs[s].start_pos + i;
      const int row = seqs[s].q_offset + i;
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h / group;
        const float* qh = &q[size_t(row * q_dim + h * hd)];
        std::vector<double> w(size_t(pos + 1));
        double mx = -1e300;
        for (int t = 0; t <= pos; ++t) {
          double dot = 0;
          for (int d = 0; d < hd; ++d)
            dot += double(qh[d]) * dense_k[s][size_t(t * kv_dim + kvh * hd + d)];
          double score = dot * scale;
          if (c.params.softcap > 0)
            score = std::tanh(score / c.params.softcap) * double(c.params.softcap);
          const bool masked = window > 0 && t <= pos - window;
          w[size_t(t)] = masked ? -INFINITY : score;
          mx = std::max(mx, w[size_t(t)]);
        }
        // A sink: one more logit in the softmax, with no value.
        const double sink = c.sinks.empty() ? -INFINITY : double(c.sinks[size_t(h)]);
        mx = std::max(mx, sink);
        double sum = std::exp(sink - mx);
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int d = 0; d < hd; ++d) {
          double want = 0;
          for (int t = 0; t <= pos; ++t)
            want += w[size_t(t)] / sum * dense_v[s][size_t(t * kv_dim + kvh * hd + d)];
          ASSERT_NEAR(out[size_t(row * q_dim + h * hd + d)], want, 2e-5)
              << "seq " << s << " pos " << pos << " head " << h << " d " << d;
        }
      }
    }
  }
}

struct AttnCase {
  DType dtype;
  int ratio;  // query heads per kv head
};

class CpuAttentionTest : public ::testing::TestWithParam<AttnCase> {};

// A prefill chunk continuing a context, decodes, and a prefill from 0, in one
// call; block size 4 so every context crosses block boundaries.
TEST_P(CpuAttentionTest, MixedBatchMatchesDenseReference) {
  const AttnCase c = GetParam();
  RunAttentionCase(
      AttnSetup{c.dtype, 4, 4 / c.ratio, 16, 4, 40, {{5, 6}, {13, 1}, {0, 9}, {30, 1}}, 2});
}

INSTANTIATE_TEST_SUITE_P(DTypesAndGqa, CpuAttentionTest,
                         ::testing::Values(AttnCase{DType::kF32, 1}, AttnCase{DType::kF32, 2},
                                           AttnCase{DType::kF32, 4}, AttnCase{DType::kF16, 1},
                                           AttnCase{DType::kF16, 2}, AttnCase{DType::kF16, 4},
                                           AttnCase{DType::kBF16, 1}, AttnCase{DType::kBF16, 2},
                                           AttnCase{DType::kBF16, 4}),
                         [](const ::testing::TestParamInfo<AttnCase>& info) {
                           return std::string(DTypeName(info.param.dtype)) + "_gqa" +
                                  std::to_string(info.param.ratio);
                         });

// A sliding window shorter than the contexts (and not a multiple of the
// block size): every row sees only its last `window` keys, decode and
// prefill rows alike, with GQA and 16-bit caches.
TEST(CpuBackendTest, AttentionSlidingWindowMatchesMaskedDenseReference) {
  for (DType t : {DType::kF32, DType::kF16}) {
    for (int window : {1, 5, 8, 100}) {
      AttnSetup s{t, 4, 2, 16, 4, 40, {{5, 6}, {13, 1}, {0, 9}, {30, 1}, {2, 20}}, 2};
      s.params.window = window;
      RunAttentionCase(s);
    }
  }
}

// gemma's score scale (query_pre_attn_scalar) and soft-cap, with a window.
TEST(CpuBackendTest, AttentionScaleAndSoftCapMatchReference) {
  AttnSetup s{DType::kF32, 4, 1, 16, 4, 40, {{5, 6}, {13, 1}, {0, 9}}, 2};
  s.params.scale = 0.9f;  // large, so the cap bites: scores reach about +-10
  s.params.softcap = 2.5f;
  RunAttentionCase(s);
  s.params.window = 4;
  RunAttentionCase(s);
}

// gpt-oss's attention sinks: per-head logits from far below the scores
// (no effect) to far above them (most of the mass: small outputs), with
// and without a window, GQA, decode and prefill rows.
TEST(CpuBackendTest, AttentionSinksMatchReference) {
  for (DType t : {DType::kF32, DType::kBF16}) {
    for (int window : {0, 5}) {
      AttnSetup s{t, 4, 2, 16, 4, 40, {{5, 6}, {13, 1}, {0, 9}, {30, 1}}, 2};
      s.params.window = window;
      s.sinks = {-30.f, 0.f, 1.5f, 12.f};
      RunAttentionCase(s);
    }
  }
}

// Big enough to be split over the thread pool.
TEST(CpuBackendTest, AttentionLargeBatchThreaded) {
  RunAttentionCase(
      AttnSetup{DType::kF16, 8, 2, 32, 16, 64, {{100, 64}, {300, 1}, {250, 1}, {0, 40}}, 4});
}

INSTANTIATE_TEST_SUITE_P(CacheDTypes, CpuKvTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// ---- sampling ---------------------------------------------------------------

TEST(CpuBackendTest, SampleGreedyTiesTakeLowestId) {
  const std::vector<float> logits = {1.f, 3.f, 3.f, 2.f, 3.f};
  SamplingParams p;  // temperature 0
  const int32_t pos = 9;
  int32_t tok = -1;
  auto be = MakeCpuBackend(1);
  be->Sample(logits.data(), 1, 5, &p, &pos, &tok);
  EXPECT_EQ(tok, 1);
}

TEST(CpuBackendTest, SampleTopKOneIsGreedyAndSeedsRepeat) {
  std::mt19937 rng(29);
  const int n = 50, vocab = 97;
  std::vector<float> logits = RandomFloats(rng, size_t(n * vocab), 2.f);
  std::vector<int32_t> pos(n);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<SamplingParams> greedy(n), top1(n, SamplingParams{1.f, 1, 1.f, 42}),
      warm(n, SamplingParams{0.8f, 0, 0.9f, 42});
  std::vector<int32_t> g(n), t1(n), a(n), b(n);
  auto be = MakeCpuBackend(2);
  be->Sample(logits.data(), n, vocab, greedy.data(), pos.data(), g.data());
  be->Sample(logits.data(), n, vocab, top1.data(), pos.data(), t1.data());
  be->Sample(logits.data(), n, vocab, warm.data(), pos.data(), a.data());
  be->Sample(logits.data(), n, vocab, warm.data(), pos.data(), b.data());
  EXPECT_EQ(g, t1);
  EXPECT_EQ(a, b);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(a[size_t(i)],
              SampleRow(&logits[size_t(i * vocab)], vocab, warm[size_t(i)], pos[size_t(i)]));
  }
}

// 2000 draws at different positions of a 4-token distribution land close to
// its probabilities; rows with different params in one call stay separate.
TEST(CpuBackendTest, SampleFollowsProbabilities) {
  const double probs[4] = {0.1, 0.2, 0.3, 0.4};
  const int n = 2000, vocab = 4;
  std::vector<float> logits(size_t(n * vocab));
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < vocab; ++j) logits[size_t(i * vocab + j)] = float(std::log(probs[j]));
  }
  std::vector<SamplingParams> params(n, SamplingParams{1.f, 0, 1.f, 1234});
  params[5].temperature = 0.f;  // greedy: token 3
  std::vector<int32_t> pos(n), tokens(n, -1);
  std::iota(pos.begin(), pos.end(), 0);
  auto be = MakeCpuBackend(2);
  be->Sample(logits.data(), n, vocab, params.data(), pos.data(), tokens.data());
  EXPECT_EQ(tokens[5], 3);
  int counts[4] = {0, 0, 0, 0};
  for (int32_t t : tokens) {
    ASSERT_GE(t, 0);
    ASSERT_LT(t, vocab);
    ++counts[t];
  }
  for (int j = 0; j < vocab; ++j)
    EXPECT_NEAR(counts[j] / double(n), probs[j], 0.03) << "token " << j;
}

// ---- memory and the pool ----------------------------------------------------

TEST(CpuBackendTest, MemoryIsAlignedHostMemory) {
  auto be = MakeCpuBackend(1);
  EXPECT_EQ(be->name(), "cpu");
  for (uint64_t bytes : {0, 1, 100, 4096}) {
    absl::StatusOr<BackendBuffer> p = be->Allocate(bytes);
    ASSERT_TRUE(p.ok()) << p.status();
    ASSERT_TRUE(*p);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p->get()) % 64, 0u);
    std::vector<uint8_t> src(bytes), dst(bytes);
    for (size_t i = 0; i < bytes; ++i) src[i] = uint8_t(i * 7);
    be->Upload(p->get(), src.data(), bytes);
    be->Download(dst.data(), p->get(), bytes);
    EXPECT_EQ(src, dst);
    BackendBuffer moved = std::move(*p);  // ownership moves; freed once, by `moved`
    EXPECT_FALSE(*p);
    EXPECT_TRUE(moved);
  }
  EXPECT_TRUE(be->Synchronize().ok());
}

TEST(ThreadPoolTest, ParallelForCoversEachIndexOnce) {
  ThreadPool pool(4);
  EXPECT_EQ(pool.size(), 4);
  for (int64_t grain : {1, 3, 100, 5000}) {
    std::vector<std::atomic<int>> hits(1000);
    pool.ParallelFor(10, 1000, grain, [&](int64_t lo, int64_t hi) {
      EXPECT_LT(lo, hi);
      for (int64_t i = lo; i < hi; ++i) hits[size_t(i)].fetch_add(1);
      // A nested call runs inline instead of deadlocking.
      pool.ParallelFor(0, 4, 1, [](int64_t, int64_t) {});
    });
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(hits[size_t(i)].load(), i >= 10 ? 1 : 0) << i;
  }
  // Calls from two threads at once are serialized.
  std::atomic<int64_t> total{0};
  auto work = [&] {
    for (int r = 0; r < 50; ++r) {
      pool.ParallelFor(0, 100, 1, [&](int64_t lo, int64_t hi) { total += hi - lo; });
    }
  };
  std::thread other(work);
  work();
  other.join();
  EXPECT_EQ(total.load(), 2 * 50 * 100);
}

TEST(ThreadPoolTest, ARunnerPoolHandsEveryCallOver) {
  int calls = 0;
  ThreadPool pool([&](int64_t begin, int64_t end, int64_t grain, const ThreadPool::RangeFn& fn) {
    ++calls;
    EXPECT_EQ(grain, 7);
    fn(begin, end);
  });
  int64_t covered = 0;
  pool.ParallelFor(5, 105, 7, [&](int64_t lo, int64_t hi) { covered += hi - lo; });
  pool.ParallelFor(3, 3, 7, [&](int64_t, int64_t) { ADD_FAILURE() << "an empty range ran"; });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(covered, 100);
}

}  // namespace
}  // namespace paged
