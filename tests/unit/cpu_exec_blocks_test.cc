// The CPU executor's products over the ggml block formats (q4_0 ... mxfp4,
// worker/backends/cpu_exec/matmul_<format>.cc) against the scalar reference:
//   - exact dequantization: with x the identity, out(c, r) is W[r, c] as the
//     kernel decoded it, which must equal DequantizeRow's value bit for bit,
//     on random blocks and on every block tensor of the llama-quantize
//     fixtures (tests/golden/gguf/), on every SIMD target this CPU runs;
//   - products against paged::cpu::MatMul (which decodes through
//     DequantizeRow): shapes with many rows, batches around the token tile,
//     bias, ldo and row ranges;
//   - the determinism contract bit for bit: split row ranges vs whole, a
//     token alone vs in a batch, thread counts.
// Random blocks are random bytes with valid scale fields: finite f16 scales
// (subnormal ones included), mxfp4 exponents that keep values finite.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/block_quant.h"
#include "common/dtype.h"
#include "hwy/targets.h"
#include "store/gguf.h"
#include "tests/unit/cpu_exec_test_util.h"
#include "tests/unit/test_util.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::cpu_exec {
namespace {

using paged::testing::ExpectSameBits;
using paged::testing::RandomVector;
using paged::testing::Reference;
using paged::testing::Whole;

// Only the f32 summation order differs from the reference (the weights are
// the same values): the bound of cpu_exec_test.cc, relative to sum |x * w|.
constexpr double kRelTolerance = 1e-5;

using Weights = paged::testing::BlockWeights;
using paged::testing::RandomBlocks;

std::string Describe(const WeightRef& w, int n) {
  return std::string(DTypeName(w.dtype)) + " " + std::to_string(w.rows) + "x" +
         std::to_string(w.cols) + " n=" + std::to_string(n) + " target " + TargetName();
}

// The weights as the kernel decodes them: x = identity [cols, cols], so
// out(c, r) = 1 * W[r, c] + 0 * (the rest), exact. Checked against
// DequantizeRow bit for bit (+0 and -0 alike: a zero lane sum is +0).
void ExpectExactWeights(ExecPool& pool, const WeightRef& w, const std::string& what) {
  const int64_t cols = w.cols;
  std::vector<float> eye(size_t(cols * cols), 0.f);
  for (int64_t c = 0; c < cols; ++c) eye[size_t(c * cols + c)] = 1.f;
  std::vector<float> out(size_t(cols * w.rows));
  MatMul(pool, eye.data(), int(cols), w, 0, w.rows, nullptr, out.data(), w.rows);
  const uint64_t row_bytes = PayloadBytes(w.dtype, 1, uint64_t(cols));
  std::vector<float> want(static_cast<size_t>(cols));
  int reported = 0;
  for (int64_t r = 0; r < w.rows; ++r) {
    DequantizeRow(w.dtype, static_cast<const uint8_t*>(w.data) + uint64_t(r) * row_bytes, cols,
                  want.data());
    for (int64_t c = 0; c < cols; ++c) {
      const float got = out[size_t(c * w.rows + r)];
      const float v = want[size_t(c)];
      const bool same = got == v || BitsFromF32(got) == BitsFromF32(v);
      if (!same && reported++ < 5) {
        ADD_FAILURE() << what << " " << Describe(w, 1) << ": W[" << r << ", " << c << "] = " << got
                      << ", DequantizeRow gives " << v;
      }
    }
  }
}

// Rows [r0, r1) of the product (into [n, ldo] with a sentinel past r1 - r0)
// against the reference, for each batch size (odd ones with a bias).
void ExpectMatchesReference(ExecPool& pool, const WeightRef& w, const std::vector<int>& batches,
                            int64_t r0, int64_t r1, int64_t pad, std::mt19937& rng) {
  const std::vector<float> bias = RandomVector(rng, size_t(w.rows));
  for (int n : batches) {
    const std::vector<float> x = RandomVector(rng, size_t(n * w.cols));
    paged::testing::ExpectProductMatches(pool, w, x, x, n, n % 2 == 1 ? bias.data() : nullptr, r0,
                                         r1, pad, kRelTolerance, Describe(w, n));
  }
}

// Row lengths: one block, a few, and a llama-sized row for the K formats.
std::vector<int64_t> ColsFor(DType t) {
  if (BlockValues(t) == 256) return {256, 512, 1280};
  return {32, 64, 96, 160, 1024};
}

TEST(CpuExecBlocksTest, SupportsEveryBlockFormat) {
  for (DType t : kBlockFormats) EXPECT_TRUE(Supports(t)) << DTypeName(t);
}

TEST(CpuExecBlocksTest, DecodedWeightsAreDequantizeRowsBitForBit) {
  std::mt19937 rng(11);
  ExecPool pool(2);
  for (DType t : kBlockFormats) {
    for (int64_t cols : ColsFor(t)) {
      if (cols > 512) continue;  // the identity is [cols, cols]
      const Weights w = RandomBlocks(t, 37, cols, rng);
      ExpectExactWeights(pool, w.ref, "random blocks");
    }
  }
}

// The same one token row at a time: a decode (n = 1) reads rows through the
// decoders' multi-chunk Step where they have one (q4_k, q5_k, q6_k on
// AVX-512), which a tile of several token rows may not use. x = e_c.
TEST(CpuExecBlocksTest, DecodedWeightsAtOneTokenRowAreDequantizeRowsBitForBit) {
  std::mt19937 rng(15);
  ExecPool pool(2);
  for (DType t : kBlockFormats) {
    const int64_t cols = ColsFor(t)[1];
    const Weights w = RandomBlocks(t, 9, cols, rng);
    const uint64_t row_bytes = PayloadBytes(t, 1, uint64_t(cols));
    std::vector<float> want(size_t(9 * cols));
    for (int64_t r = 0; r < 9; ++r) {
      DequantizeRow(t, w.data.data() + uint64_t(r) * row_bytes, cols, want.data() + r * cols);
    }
    std::vector<float> x(size_t(cols), 0.f), out(9);
    int reported = 0;
    for (int64_t c = 0; c < cols; ++c) {
      x[size_t(c)] = 1.f;
      MatMul(pool, x.data(), 1, w.ref, 0, 9, nullptr, out.data(), 9);
      x[size_t(c)] = 0.f;
      for (int64_t r = 0; r < 9; ++r) {
        const float got = out[size_t(r)], v = want[size_t(r * cols + c)];
        if (!(got == v || BitsFromF32(got) == BitsFromF32(v)) && reported++ < 5) {
          ADD_FAILURE() << Describe(w.ref, 1) << ": W[" << r << ", " << c << "] = " << got
                        << ", DequantizeRow gives " << v;
        }
      }
    }
  }
}

TEST(CpuExecBlocksTest, MatchesReferenceForEveryFormatShapeAndBatch) {
  std::mt19937 rng(12);
  ExecPool pool(3);
  for (DType t : kBlockFormats) {
    for (int64_t cols : ColsFor(t)) {
      for (int64_t rows : {int64_t{1}, int64_t{5}, int64_t{130}}) {
        const Weights w = RandomBlocks(t, rows, cols, rng);
        ExpectMatchesReference(pool, w.ref, {1, 2, 3, 4, 8, 9, 33}, 0, rows, 0, rng);
      }
    }
  }
}

TEST(CpuExecBlocksTest, RowRangesBiasAndLdo) {
  std::mt19937 rng(13);
  ExecPool pool(2);
  for (DType t : kBlockFormats) {
    const Weights w = RandomBlocks(t, 45, ColsFor(t)[1], rng);
    for (const auto& [r0, r1] : std::vector<std::pair<int64_t, int64_t>>{
             {7, 38}, {0, 1}, {44, 45}, {3, 4}, {1, 45}, {9, 9}}) {
      ExpectMatchesReference(pool, w.ref, {1, 3, 8, 9}, r0, r1, 5, rng);
    }
  }
}

// The library holds a decoder per SIMD target (AVX-512 tables, AVX2 lanes,
// the portable fallback through DequantizeRow): each one this CPU runs.
TEST(CpuExecBlocksTest, EveryTargetThisCpuRunsIsExact) {
  std::mt19937 rng(14);
  ExecPool pool(2);
  paged::testing::ForEachTargetThisCpuRuns([&] {
    for (DType t : kBlockFormats) {
      const Weights w = RandomBlocks(t, 13, ColsFor(t)[1], rng);
      ExpectExactWeights(pool, w.ref, "random blocks");
      ExpectMatchesReference(pool, w.ref, {1, 3, 9}, 0, w.ref.rows, 0, rng);
      ExpectMatchesReference(pool, w.ref, {2}, 5, 11, 3, rng);
    }
  });
}

// ---- the llama-quantize fixtures ----------------------------------------

struct FixtureTensor {
  std::string file, name;
  WeightRef w;
};

// Every block-format tensor of tests/golden/gguf/*.gguf, read in place from
// the file's bytes (kept alive for the test binary's life).
const std::vector<FixtureTensor>& FixtureTensors() {
  static const std::vector<FixtureTensor>* all = [] {
    auto* v = new std::vector<FixtureTensor>;
    const std::string dir = testing::SourceDir() + "/tests/golden/gguf/";
    for (const char* f :
         {"tiny-q4_0.gguf", "tiny-q4_1.gguf", "tiny-q5_0.gguf", "tiny-q5_1.gguf", "tiny-q2_k.gguf",
          "tiny-q3_k_m.gguf", "tiny-q4_k_m.gguf", "tiny-q5_k_m.gguf", "tiny-q6_k.gguf",
          "tiny-iq4_nl.gguf", "tiny-iq4_xs.gguf", "tiny-mxfp4.gguf"}) {
      auto* bytes = new std::string(testing::ReadFile(dir + f));
      auto g = ParseGguf(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size(), f);
      EXPECT_TRUE(g.ok()) << g.status();
      if (!g.ok()) continue;
      for (const GgufTensorInfo& t : g->tensors) {
        std::string name(GgmlTypeName(t.type));
        for (char& ch : name) ch = char(std::tolower(static_cast<unsigned char>(ch)));
        const absl::StatusOr<DType> dt = ParseDType(name);
        if (!dt.ok() || !IsBlockFormat(*dt) || t.ne.size() != 2) continue;
        FixtureTensor ft{f, t.name, {}};
        ft.w.data = bytes->data() + t.begin;
        ft.w.dtype = *dt;
        ft.w.cols = int64_t(t.ne[0]);
        ft.w.rows = int64_t(t.ne[1]);
        v->push_back(ft);
      }
    }
    return v;
  }();
  return *all;
}

TEST(CpuExecBlocksFixtureTest, EveryFormatIsInTheFixtures) {
  for (DType t : kBlockFormats) {
    bool found = false;
    for (const FixtureTensor& f : FixtureTensors()) found = found || f.w.dtype == t;
    EXPECT_TRUE(found) << DTypeName(t);
  }
}

TEST(CpuExecBlocksFixtureTest, DecodedWeightsAreDequantizeRowsBitForBit) {
  ExecPool pool(2);
  for (const FixtureTensor& f : FixtureTensors()) {
    ExpectExactWeights(pool, f.w, f.file + " " + f.name);
  }
}

TEST(CpuExecBlocksFixtureTest, ProductsMatchTheReference) {
  std::mt19937 rng(15);
  ExecPool pool(2);
  for (const FixtureTensor& f : FixtureTensors()) {
    SCOPED_TRACE(f.file + " " + f.name);
    ExpectMatchesReference(pool, f.w, {1, 3, 8, 9}, 0, f.w.rows, 0, rng);
    ExpectMatchesReference(pool, f.w, {1, 9}, f.w.rows / 3, f.w.rows - 5, 2, rng);
  }
}

// ---- determinism -------------------------------------------------------

TEST(CpuExecBlocksDeterminismTest, SplitRowRangesMatchWholeBitForBit) {
  std::mt19937 rng(16);
  ExecPool pool(2);
  for (DType t : kBlockFormats) {
    const Weights w = RandomBlocks(t, 37, ColsFor(t)[1], rng);
    const std::vector<float> bias = RandomVector(rng, 37);
    for (int n : {1, 5, 9}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * w.ref.cols));
      const std::vector<float> whole = Whole(pool, x, n, w.ref, bias.data());
      for (const std::vector<int64_t>& cuts :
           std::vector<std::vector<int64_t>>{{1}, {3}, {17}, {36}, {2, 9, 10}}) {
        std::vector<float> joined(whole.size(), 0.f);
        int64_t lo = 0;
        std::vector<int64_t> bounds = cuts;
        bounds.push_back(37);
        for (int64_t hi : bounds) {
          std::vector<float> part(size_t(n * (hi - lo)));
          MatMul(pool, x.data(), n, w.ref, lo, hi, bias.data(), part.data(), hi - lo);
          for (int i = 0; i < n; ++i) {
            for (int64_t r = lo; r < hi; ++r) {
              joined[size_t(i * 37 + r)] = part[size_t(i * (hi - lo) + (r - lo))];
            }
          }
          lo = hi;
        }
        ExpectSameBits(whole, joined, Describe(w.ref, n) + " split at " + std::to_string(cuts[0]));
      }
    }
  }
}

TEST(CpuExecBlocksDeterminismTest, TokenAloneMatchesTokenInBatch) {
  std::mt19937 rng(17);
  ExecPool pool(2);
  for (DType t : kBlockFormats) {
    const Weights w = RandomBlocks(t, 19, ColsFor(t)[1], rng);
    const int64_t cols = w.ref.cols;
    for (int n : {9, 33}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * cols));
      const std::vector<float> batch = Whole(pool, x, n, w.ref, nullptr);
      for (int i = 0; i < n; ++i) {
        const std::vector<float> xi(x.begin() + i * cols, x.begin() + (i + 1) * cols);
        const std::vector<float> alone = Whole(pool, xi, 1, w.ref, nullptr);
        std::vector<float> pair_x(x.begin() + ((i + 1) % n) * cols,
                                  x.begin() + ((i + 1) % n + 1) * cols);
        pair_x.insert(pair_x.end(), xi.begin(), xi.end());
        const std::vector<float> pair = Whole(pool, pair_x, 2, w.ref, nullptr);
        const std::vector<float> in_batch(batch.begin() + i * 19, batch.begin() + (i + 1) * 19);
        const std::string what = Describe(w.ref, n) + " token " + std::to_string(i);
        ExpectSameBits(alone, in_batch, what + " alone");
        ExpectSameBits(std::vector<float>(pair.begin() + 19, pair.end()), in_batch,
                       what + " in a pair");
      }
    }
  }
}

TEST(CpuExecBlocksDeterminismTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(18);
  ExecPool one(1), two(2), five(5);
  for (DType t : kBlockFormats) {
    const Weights w = RandomBlocks(t, 203, ColsFor(t)[1], rng);
    const std::vector<float> bias = RandomVector(rng, 203);
    for (int n : {1, 8, 13}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * w.ref.cols));
      const std::vector<float> base = Whole(one, x, n, w.ref, bias.data());
      ExpectSameBits(base, Whole(two, x, n, w.ref, bias.data()), Describe(w.ref, n) + " 2 threads");
      ExpectSameBits(base, Whole(five, x, n, w.ref, bias.data()),
                     Describe(w.ref, n) + " 5 threads");
      std::vector<float> rows(base.size());
      MatMulRows(x.data(), n, w.ref, 0, w.ref.rows, bias.data(), rows.data(), w.ref.rows);
      ExpectSameBits(base, rows, Describe(w.ref, n) + " MatMulRows");
    }
  }
}

TEST(CpuExecBlocksDeathTest, RowsOfPartialBlocksAbortWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::mt19937 rng(19);
  Weights w = RandomBlocks(DType::kQ4_K, 4, 512, rng);
  w.ref.cols = 300;
  const std::vector<float> x = RandomVector(rng, 300);
  std::vector<float> out(4);
  EXPECT_DEATH(MatMulRows(x.data(), 1, w.ref, 0, 4, nullptr, out.data(), 4),
               "300 columns are not whole q4_k blocks");
}

}  // namespace
}  // namespace paged::cpu_exec
