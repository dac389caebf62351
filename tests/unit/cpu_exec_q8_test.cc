// The CPU executor's products with 8-bit activations
// (ExecPoolOptions::q8_activations, worker/backends/cpu_exec/matmul_q8.cc):
//   - the quantizer against its definition, written here in scalar code: per
//     block of 256 (the K formats) or 32 (the others), d = max |x| / 127,
//     q = round-half-even(x * (1 / d)), d then kept as f16 in blocks of 32,
//     and the sums of q over 16 and 32 columns;
//   - q4_k, q5_k, q6_k, q8_0 and q4_0 products, and int8 / int4 with groups
//     of 32 to 512 columns, against the scalar reference applied to x' = d * q
//     (the product the integer kernels compute, up to the rounding of their
//     few f32 terms): 1e-5 of sum |x' * w|, shapes with 1 to 130 rows,
//     batches around the token tiles, bias, ldo and row ranges, on every SIMD
//     target this CPU runs (integer kernels: the K formats on AVX-512 and
//     AVX2, the others on AVX2; elsewhere the f32 kernels get x');
//   - the determinism contract bit for bit: split row ranges, a token alone
//     vs in a batch, thread counts, MatMulMany (x quantized once per input);
//   - other formats, and int8 / int4 with groups that are not a multiple of
//     32, keep f32 activations.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/block_quant.h"
#include "common/dtype.h"
#include "hwy/targets.h"
#include "tests/unit/cpu_exec_test_util.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/backends/cpu_exec/kernels.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::cpu_exec {
namespace {

using paged::testing::ExpectSameBits;
using paged::testing::RandomVector;
using paged::testing::Whole;

constexpr double kRelTolerance = 1e-5;
constexpr DType kQ8Formats[] = {DType::kQ4_K, DType::kQ5_K, DType::kQ6_K, DType::kQ8_0,
                                DType::kQ4_0, DType::kI8,   DType::kI4};

// A q8 format's random matrix: ggml blocks, or int8 / int4 of `group`.
struct Weights {
  paged::testing::BlockWeights blocks;
  paged::testing::StoredWeights stored;
  WeightRef ref;
};
Weights RandomWeights(DType t, int64_t rows, int64_t cols, std::mt19937& rng, int group = 64) {
  Weights w;
  if (IsBlockFormat(t)) {
    w.blocks = paged::testing::RandomBlocks(t, rows, cols, rng);
    w.ref = w.blocks.ref;
  } else {
    w.stored = paged::testing::MakeWeights(t, rows, cols, group, rng);
    w.ref = w.stored.ref;
  }
  return w;
}

ExecPoolOptions Q8Options(int threads) {
  ExecPoolOptions o;
  o.threads = threads;
  o.q8_activations = true;
  return o;
}

// The definition of the 8-bit activations, scalar: x [n, cols] -> q, d,
// and x' = d * q.
struct Quantized {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int16_t> s16, s32;
  std::vector<float> rounded;  // x'
};

Quantized Quantize(const std::vector<float>& x, int64_t block) {
  Quantized r;
  const int64_t blocks = int64_t(x.size()) / block;
  r.q.resize(x.size());
  r.rounded.resize(x.size());
  for (int64_t b = 0; b < blocks; ++b) {
    float m = 0.f;
    for (int64_t c = 0; c < block; ++c) m = std::max(m, std::fabs(x[size_t(b * block + c)]));
    const float d = m / 127.f;
    const float inv = d > 0.f ? 1.f / d : 0.f;
    // Blocks of 32 keep d as f16, rounded once q is computed (llama.cpp's q8_0).
    const float kept = block == 32 ? HalfToFloat(FloatToHalf(d)) : d;
    r.d.push_back(kept);
    for (int64_t c = 0; c < block; ++c) {
      const size_t i = size_t(b * block + c);
      r.q[i] = int8_t(std::nearbyint(x[i] * inv));
      r.rounded[i] = kept * float(r.q[i]);
    }
  }
  for (size_t g = 0; g < x.size() / 16; ++g) {
    int s = 0;
    for (size_t c = 0; c < 16; ++c) s += r.q[16 * g + c];
    r.s16.push_back(int16_t(s));
  }
  for (size_t g = 0; g < x.size() / 32; ++g)
    r.s32.push_back(int16_t(r.s16[2 * g] + r.s16[2 * g + 1]));
  return r;
}

std::string Describe(const WeightRef& w, int n) {
  return std::string(DTypeName(w.dtype)) + " " + std::to_string(w.rows) + "x" +
         std::to_string(w.cols) + " n=" + std::to_string(n) + " target " + TargetName();
}

// Rows [r0, r1) of the q8 product (into [n, ldo], a sentinel past r1 - r0)
// against the reference on x', for each batch size (odd ones with a bias).
void ExpectReferenceOnRoundedX(ExecPool& pool, const WeightRef& w, const std::vector<int>& batches,
                               int64_t r0, int64_t r1, int64_t pad, std::mt19937& rng) {
  const std::vector<float> bias = RandomVector(rng, size_t(w.rows));
  for (int n : batches) {
    std::vector<float> x = RandomVector(rng, size_t(n * w.cols));
    if (n > 2) {  // a block of zeros (d = 0) and one of large values
      std::fill(x.begin() + w.cols, x.begin() + w.cols + 256, 0.f);
      for (size_t c = 0; c < 256; ++c) x[size_t(2 * w.cols) + c] *= 1000.f;
    }
    const Quantized xq = Quantize(x, Q8BlockOf(w.dtype));
    paged::testing::ExpectProductMatches(pool, w, x, xq.rounded, n,
                                         n % 2 == 1 ? bias.data() : nullptr, r0, r1, pad,
                                         kRelTolerance, Describe(w, n));
  }
}

TEST(CpuExecQ8Test, QuantizerIsItsDefinition) {
  std::mt19937 rng(40);
  for (int64_t block : {kQ8Block, kQ8ChunkBlock}) {
    for (int64_t cols : {256, 512, 4096}) {
      for (int n : {1, 3}) {
        std::vector<float> x = RandomVector(rng, size_t(n * cols));
        std::fill(x.begin(), x.begin() + 256, 0.f);  // a block of zeros
        const Quantized want = Quantize(x, block);
        std::vector<int8_t> q(x.size());
        std::vector<float> d(x.size() / size_t(block));
        std::vector<int16_t> s16(x.size() / 16), s32(x.size() / 32);
        QuantizeQ8(x.data(), n, cols, block, q.data(), d.data(), s16.data(), s32.data());
        const std::string what = std::to_string(cols) + " n=" + std::to_string(n) + " blocks of " +
                                 std::to_string(block);
        EXPECT_EQ(q, want.q) << what;
        EXPECT_EQ(d, want.d) << what;
        EXPECT_EQ(s16, want.s16) << what;
        EXPECT_EQ(s32, want.s32) << what;
        EXPECT_EQ(d[0], 0.f);
        for (int8_t v : q) ASSERT_TRUE(v >= -127 && v <= 127);
      }
    }
  }
}

TEST(CpuExecQ8Test, ProductsAreTheReferenceOnRoundedActivations) {
  std::mt19937 rng(41);
  ExecPool pool(Q8Options(3));
  for (DType t : kQ8Formats) {
    for (int64_t cols : {256, 512, 1280, 4096}) {
      for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{130}}) {
        const Weights w = RandomWeights(t, rows, cols, rng);
        ExpectReferenceOnRoundedX(pool, w.ref, {1, 2, 3, 4, 5, 8, 9, 33}, 0, rows, 0, rng);
      }
    }
  }
}

TEST(CpuExecQ8Test, RowRangesBiasAndLdo) {
  std::mt19937 rng(42);
  ExecPool pool(Q8Options(2));
  for (DType t : kQ8Formats) {
    const Weights w = RandomWeights(t, 45, 512, rng);
    for (const auto& [r0, r1] : std::vector<std::pair<int64_t, int64_t>>{
             {7, 38}, {0, 1}, {44, 45}, {3, 4}, {1, 45}, {9, 9}}) {
      ExpectReferenceOnRoundedX(pool, w.ref, {1, 3, 8, 9}, r0, r1, 5, rng);
    }
  }
}

// int8 / int4 groups of every multiple of 32 (one scale over 1 to 16
// chunks), on rows of whole chunks that are not whole blocks of 256.
TEST(CpuExecQ8Test, GroupsOfEveryMultipleOf32) {
  std::mt19937 rng(47);
  ExecPool pool(Q8Options(2));
  for (DType t : {DType::kI8, DType::kI4}) {
    for (int group : {32, 96, 256, 512}) {
      for (int64_t cols : {1536, 1568}) {
        const Weights w = RandomWeights(t, 11, cols, rng, group);
        ExpectReferenceOnRoundedX(pool, w.ref, {1, 2, 5}, 0, 11, 0, rng);
      }
    }
  }
}

// The integer kernels where the target has them for the format; elsewhere
// x' through the f32 kernels: the same product either way.
TEST(CpuExecQ8Test, EveryTargetThisCpuRunsComputesTheSameProduct) {
  std::mt19937 rng(43);
  ExecPool pool(Q8Options(2));
  std::vector<Weights> weights;
  for (DType t : kQ8Formats) weights.push_back(RandomWeights(t, 13, 512, rng));
  paged::testing::ForEachTargetThisCpuRuns(
      [&] {
        for (const Weights& w : weights) {
          ExpectReferenceOnRoundedX(pool, w.ref, {1, 3, 9}, 0, w.ref.rows, 0, rng);
          ExpectReferenceOnRoundedX(pool, w.ref, {2}, 5, 11, 3, rng);
        }
      },
      [&] {
        std::string integer;
        for (const Weights& w : weights) {
          if (HasQ8Kernels(w.ref))
            integer +=
                std::string(integer.empty() ? "" : " ") + std::string(DTypeName(w.ref.dtype));
        }
        return TargetName() + (integer.empty() ? " (f32 on x')" : " (integer: " + integer + ")");
      });
}

TEST(CpuExecQ8Test, OtherFormatsKeepF32Activations) {
  std::mt19937 rng(44);
  ExecPool exact(2), q8(Q8Options(2));
  std::vector<Weights> others;
  for (DType t : {DType::kQ3_K, DType::kMXFP4, DType::kQ4_1}) {
    others.push_back(RandomWeights(t, 9, 512, rng));
  }
  // Groups that are not a multiple of 32, and rows of a part of a chunk.
  others.push_back(RandomWeights(DType::kI8, 9, 512, rng, 16));
  others.push_back(RandomWeights(DType::kI4, 9, 512, rng, 48));
  others.push_back(RandomWeights(DType::kI8, 9, 336, rng, 32));
  for (const Weights& w : others) {
    EXPECT_FALSE(IsQ8Format(w.ref)) << Describe(w.ref, 3);
    const std::vector<float> x = RandomVector(rng, size_t(3 * w.ref.cols));
    ExpectSameBits(Whole(exact, x, 3, w.ref, nullptr), Whole(q8, x, 3, w.ref, nullptr),
                   Describe(w.ref, 3));
  }
}

TEST(CpuExecQ8DeterminismTest, SplitRowRangesTokensAndThreadsDoNotChangeBits) {
  std::mt19937 rng(45);
  ExecPool one(Q8Options(1)), two(Q8Options(2)), five(Q8Options(5));
  for (DType t : kQ8Formats) {
    const Weights w = RandomWeights(t, 37, 512, rng);
    const int64_t cols = w.ref.cols;
    const std::vector<float> bias = RandomVector(rng, 37);
    for (int n : {1, 5, 9}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * cols));
      const std::vector<float> whole = Whole(two, x, n, w.ref, bias.data());
      ExpectSameBits(whole, Whole(one, x, n, w.ref, bias.data()), Describe(w.ref, n) + " 1 thread");
      ExpectSameBits(whole, Whole(five, x, n, w.ref, bias.data()), Describe(w.ref, n) + " 5");
      // Split at 17: rows [0, 17) and [17, 37).
      std::vector<float> lo(size_t(n * 17)), hi(size_t(n * 20)), joined(whole.size());
      MatMul(two, x.data(), n, w.ref, 0, 17, bias.data(), lo.data(), 17);
      MatMul(two, x.data(), n, w.ref, 17, 37, bias.data(), hi.data(), 20);
      for (int i = 0; i < n; ++i) {
        for (int64_t r = 0; r < 37; ++r) {
          joined[size_t(i * 37 + r)] =
              r < 17 ? lo[size_t(i * 17 + r)] : hi[size_t(i * 20 + (r - 17))];
        }
      }
      ExpectSameBits(whole, joined, Describe(w.ref, n) + " split");
      // Each token alone.
      for (int i = 0; i < n; ++i) {
        const std::vector<float> xi(x.begin() + i * cols, x.begin() + (i + 1) * cols);
        ExpectSameBits(Whole(two, xi, 1, w.ref, bias.data()),
                       std::vector<float>(whole.begin() + i * 37, whole.begin() + (i + 1) * 37),
                       Describe(w.ref, n) + " token " + std::to_string(i) + " alone");
      }
    }
  }
}

// MatMulMany quantizes each input once and lends it to the products that
// share it (gate and up, a wave's experts): the same bits as one by one,
// with f32 products (f16) mixed in.
TEST(CpuExecQ8DeterminismTest, ManyProductsMatchOneByOne) {
  std::mt19937 rng(46);
  ExecPool pool(Q8Options(2));
  const Weights a = RandomWeights(DType::kQ4_K, 21, 512, rng);
  const Weights b = RandomWeights(DType::kQ6_K, 14, 512, rng);
  const Weights c = RandomWeights(DType::kQ4_K, 9, 1024, rng);
  const Weights d = RandomWeights(DType::kI8, 7, 512, rng, 32);
  std::vector<uint16_t> f16(size_t(11 * 512));
  for (uint16_t& h : f16) h = FloatToHalf(std::normal_distribution<float>(0.f, 1.f)(rng));
  WeightRef f;
  f.data = f16.data();
  f.dtype = DType::kF16;
  f.rows = 11;
  f.cols = 512;
  for (int n : {1, 3}) {
    const std::vector<float> x = RandomVector(rng, size_t(n * 512));
    const std::vector<float> x2 = RandomVector(rng, size_t(n * 1024));
    const std::vector<float> x3 = RandomVector(rng, size_t(n * 512));
    struct P {
      const WeightRef* w;
      const std::vector<float>* x;
    };
    const std::vector<P> products = {{&a.ref, &x},  {&b.ref, &x},  {&f, &x},     {&d.ref, &x},
                                     {&c.ref, &x2}, {&a.ref, &x3}, {&b.ref, &x}, {&d.ref, &x3}};
    std::vector<std::vector<float>> outs(products.size());
    std::vector<MatMulJob> jobs;
    for (size_t k = 0; k < products.size(); ++k) {
      outs[k].assign(size_t(n * products[k].w->rows), 0.f);
      jobs.push_back(MatMulJob{products[k].w, 0, products[k].w->rows, nullptr, outs[k].data(),
                               products[k].w->rows, products[k].x->data(), n});
    }
    MatMulMany(pool, jobs.data(), int(jobs.size()));
    for (size_t k = 0; k < products.size(); ++k) {
      ExpectSameBits(Whole(pool, *products[k].x, n, *products[k].w, nullptr), outs[k],
                     Describe(*products[k].w, n) + " job " + std::to_string(k));
    }
  }
}

TEST(CpuExecQ8Test, HostExecutorOptionsTakeTheActivationsFlag) {
  EXPECT_FALSE(HostExecutorOptions(2, "none").value().q8_activations);
  EXPECT_FALSE(HostExecutorOptions(2, "none", "f32").value().q8_activations);
  EXPECT_TRUE(HostExecutorOptions(2, "none", "q8").value().q8_activations);
  const absl::StatusOr<ExecPoolOptions> bad = HostExecutorOptions(2, "none", "int8");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--host-activations=int8"), std::string::npos);
}

}  // namespace
}  // namespace paged::cpu_exec
