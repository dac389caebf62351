// The CPU executor's matrix products (worker/backends/cpu_exec) against the
// scalar reference paged::cpu::MatMul for every weight dtype over shapes that
// hit every tail (1 row, odd cols, cols below the vector width, partial last
// groups, group sizes that are not powers of two) and batch sizes around the
// token tile; bias, ldo and row offsets; and the determinism contract bit for
// bit: split row ranges vs whole, a token alone vs inside a batch, 1 thread
// vs several. Also the ExecPool itself.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "common/quant.h"
#include "hwy/targets.h"
#include "tests/unit/cpu_exec_test_util.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::cpu_exec {
namespace {

using paged::testing::ExpectSameBits;
using paged::testing::RandomVector;
using paged::testing::Reference;
using paged::testing::Whole;

constexpr DType kAllDTypes[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kI8, DType::kI4};

// Tolerance relative to sum_c |x_c * W_rc|. Every format dequantizes to the
// same f32 values as the reference (f16 / bf16 widen exactly; q * scale is
// exact in f32), so only the f32 summation order differs: one bound for all.
double RelTolerance(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
    case DType::kI8:
    case DType::kI4:
      return 1e-5;
    default:  // block formats: not read by the executor yet
      break;
  }
  return 0;
}

using Weights = paged::testing::StoredWeights;
using paged::testing::MakeWeights;

struct Shape {
  int64_t rows, cols;
  int group;
};

std::string Describe(DType t, const Shape& s, int n) {
  return std::string(DTypeName(t)) + " rows=" + std::to_string(s.rows) +
         " cols=" + std::to_string(s.cols) + " group=" + std::to_string(s.group) +
         " n=" + std::to_string(n);
}

// Shapes that hit the tails: one row; cols of 1, 3, below a vector, one past
// a vector, odd; partial last groups; groups that are powers of two below and
// above the vector width and groups that are not; many rows (not a multiple
// of the row block).
const Shape kShapes[] = {
    {1, 1, 1},    {1, 3, 2},       {5, 7, 4},    {3, 15, 16},   {4, 16, 16},
    {6, 17, 8},   {9, 33, 32},     {37, 64, 32}, {13, 257, 64}, {130, 100, 7},
    {11, 48, 48}, {70, 1000, 128}, {33, 513, 3}, {21, 129, 1},  {300, 96, 32},
};
const int kBatchSizes[] = {1, 2, 3, 7, 8, 9, 33};

// MatMul over all rows against the reference, for every batch size in
// `batches` (odd ones with a bias).
void ExpectMatchesReference(ExecPool& pool, DType t, const Shape& s,
                            const std::vector<int>& batches, std::mt19937& rng) {
  const Weights w = MakeWeights(t, s.rows, s.cols, s.group, rng);
  const std::vector<float> bias = RandomVector(rng, size_t(s.rows));
  for (int n : batches) {
    const std::vector<float> x = RandomVector(rng, size_t(n * s.cols));
    const float* b = n % 2 == 1 ? bias.data() : nullptr;
    std::vector<float> ref;
    std::vector<double> scale;
    Reference(x, n, w.ref, b, &ref, &scale);
    std::vector<float> out(ref.size(), std::numeric_limits<float>::quiet_NaN());
    MatMul(pool, x.data(), n, w.ref, 0, s.rows, b, out.data(), s.rows);
    for (size_t k = 0; k < out.size(); ++k) {
      ASSERT_NEAR(out[k], ref[k], RelTolerance(t) * scale[k] + 1e-30)
          << Describe(t, s, n) << " element " << k << " target " << TargetName();
    }
  }
}

TEST(CpuExecMatMulTest, MatchesReferenceForEveryDTypeShapeAndBatch) {
  std::mt19937 rng(1);
  ExecPool pool(3);
  for (DType t : kAllDTypes) {
    for (const Shape& s : kShapes) {
      ExpectMatchesReference(pool, t, s,
                             std::vector<int>(std::begin(kBatchSizes), std::end(kBatchSizes)), rng);
    }
  }
}

// The library holds a kernel per SIMD target (AVX-512, AVX2, the portable
// fallback); the CPU picks one. Each one this CPU can run is checked here.
TEST(CpuExecMatMulTest, EveryTargetThisCpuRunsMatchesReference) {
  std::mt19937 rng(8);
  ExecPool pool(2);
  paged::testing::ForEachTargetThisCpuRuns([&] {
    for (DType t : kAllDTypes) {
      for (const Shape& s : {Shape{5, 7, 4}, Shape{9, 33, 32}, Shape{13, 257, 64},
                             Shape{33, 513, 3}, Shape{11, 48, 48}}) {
        ExpectMatchesReference(pool, t, s, {1, 3, 9}, rng);
      }
    }
  });
}

TEST(CpuExecMatMulTest, BiasLdoAndRowOffset) {
  std::mt19937 rng(2);
  ExecPool pool(2);
  for (DType t : kAllDTypes) {
    const Shape s{45, 131, 32};
    const Weights w = MakeWeights(t, s.rows, s.cols, s.group, rng);
    const std::vector<float> bias = RandomVector(rng, size_t(s.rows));
    for (int n : {1, 4, 9}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * s.cols));
      std::vector<float> ref;
      std::vector<double> scale;
      Reference(x, n, w.ref, bias.data(), &ref, &scale);
      const int64_t r0 = 7, r1 = 38, ldo = (r1 - r0) + 5;
      const float kSentinel = -12345.f;
      std::vector<float> out(size_t(n * ldo), kSentinel);
      MatMul(pool, x.data(), n, w.ref, r0, r1, bias.data(), out.data(), ldo);
      for (int i = 0; i < n; ++i) {
        for (int64_t j = 0; j < ldo; ++j) {
          const float got = out[size_t(i * ldo + j)];
          if (j >= r1 - r0) {
            EXPECT_EQ(got, kSentinel) << "written past r1 - r0 at " << i << "," << j;
            continue;
          }
          const size_t k = size_t(i * s.rows + r0 + j);
          EXPECT_NEAR(got, ref[k], RelTolerance(t) * scale[k]) << Describe(t, s, n);
        }
      }
    }
  }
}

const Shape kDeterminismShapes[] = {{37, 257, 64}, {130, 100, 7}, {19, 33, 16}};

TEST(CpuExecDeterminismTest, SplitRowRangesMatchWholeBitForBit) {
  std::mt19937 rng(3);
  ExecPool pool(2);
  for (DType t : kAllDTypes) {
    for (const Shape& s : kDeterminismShapes) {
      const Weights w = MakeWeights(t, s.rows, s.cols, s.group, rng);
      const std::vector<float> bias = RandomVector(rng, size_t(s.rows));
      for (int n : {1, 5, 9}) {
        const std::vector<float> x = RandomVector(rng, size_t(n * s.cols));
        const std::vector<float> whole = Whole(pool, x, n, w.ref, bias.data());
        // Cut points (some inside a row block), as a CPU / GPU share would.
        for (const std::vector<int64_t>& cuts :
             std::vector<std::vector<int64_t>>{{1}, {3}, {4}, {17}, {s.rows - 1}, {2, 9, 10}}) {
          std::vector<float> joined(whole.size(), 0.f);
          int64_t lo = 0;
          std::vector<int64_t> bounds = cuts;
          bounds.push_back(s.rows);
          for (int64_t hi : bounds) {
            std::vector<float> part(size_t(n * (hi - lo)));
            MatMul(pool, x.data(), n, w.ref, lo, hi, bias.data(), part.data(), hi - lo);
            for (int i = 0; i < n; ++i) {
              for (int64_t r = lo; r < hi; ++r) {
                joined[size_t(i * s.rows + r)] = part[size_t(i * (hi - lo) + (r - lo))];
              }
            }
            lo = hi;
          }
          ExpectSameBits(whole, joined, Describe(t, s, n) + " split at " + std::to_string(cuts[0]));
        }
      }
    }
  }
}

TEST(CpuExecDeterminismTest, TokenAloneMatchesTokenInBatch) {
  std::mt19937 rng(4);
  ExecPool pool(2);
  for (DType t : kAllDTypes) {
    for (const Shape& s : kDeterminismShapes) {
      const Weights w = MakeWeights(t, s.rows, s.cols, s.group, rng);
      for (int n : {9, 33}) {
        const std::vector<float> x = RandomVector(rng, size_t(n * s.cols));
        const std::vector<float> batch = Whole(pool, x, n, w.ref, nullptr);
        for (int i = 0; i < n; ++i) {
          // Alone (n = 1), and as the second row of a pair.
          const std::vector<float> xi(x.begin() + i * s.cols, x.begin() + (i + 1) * s.cols);
          const std::vector<float> alone = Whole(pool, xi, 1, w.ref, nullptr);
          std::vector<float> pair_x(x.begin() + ((i + 1) % n) * s.cols,
                                    x.begin() + ((i + 1) % n + 1) * s.cols);
          pair_x.insert(pair_x.end(), xi.begin(), xi.end());
          const std::vector<float> pair = Whole(pool, pair_x, 2, w.ref, nullptr);
          const std::vector<float> in_batch(batch.begin() + i * s.rows,
                                            batch.begin() + (i + 1) * s.rows);
          const std::string what = Describe(t, s, n) + " token " + std::to_string(i);
          ExpectSameBits(alone, in_batch, what + " alone");
          ExpectSameBits(std::vector<float>(pair.begin() + s.rows, pair.end()), in_batch,
                         what + " in a pair");
        }
      }
    }
  }
}

TEST(CpuExecDeterminismTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(5);
  ExecPool one(1), two(2), five(5);
  for (DType t : kAllDTypes) {
    const Weights w = MakeWeights(t, 203, 300, 32, rng);
    const std::vector<float> bias = RandomVector(rng, 203);
    for (int n : {1, 8, 13}) {
      const std::vector<float> x = RandomVector(rng, size_t(n * 300));
      const std::vector<float> base = Whole(one, x, n, w.ref, bias.data());
      ExpectSameBits(base, Whole(two, x, n, w.ref, bias.data()), "2 threads");
      ExpectSameBits(base, Whole(five, x, n, w.ref, bias.data()), "5 threads");
      std::vector<float> rows(base.size());
      MatMulRows(x.data(), n, w.ref, 0, w.ref.rows, bias.data(), rows.data(), w.ref.rows);
      ExpectSameBits(base, rows, "MatMulRows");
    }
  }
}

TEST(CpuExecDeterminismTest, ManyProductsInOneDispatchMatchOneByOne) {
  // A layer's q, k and v rows (different row counts and formats, one input)
  // in one MatMulMany: each product's bits are those of its own MatMul.
  std::mt19937 rng(6);
  ExecPool pool(3);
  const int64_t cols = 96;
  const Weights a = MakeWeights(DType::kF16, 37, cols, 0, rng);
  const Weights b = MakeWeights(DType::kI4, 9, cols, 32, rng);
  const Weights c = MakeWeights(DType::kI8, 130, cols, 32, rng);
  const std::vector<float> bias = RandomVector(rng, 130);
  for (int n : {1, 3, 8}) {
    const std::vector<float> x = RandomVector(rng, size_t(n * cols));
    // Row ranges as a hybrid share gives them: a suffix of each matrix.
    const MatMulJob jobs_spec[3] = {{&a.ref, 5, 37, nullptr, nullptr, 32, x.data(), n},
                                    {&b.ref, 0, 9, nullptr, nullptr, 9, x.data(), n},
                                    {&c.ref, 64, 130, bias.data(), nullptr, 70, x.data(), n}};
    std::vector<float> many[3], one[3];
    MatMulJob jobs[3];
    for (int k = 0; k < 3; ++k) {
      jobs[k] = jobs_spec[k];
      many[k].assign(size_t(n * jobs[k].ldo), -1.f);
      one[k].assign(size_t(n * jobs[k].ldo), -1.f);
      jobs[k].out = many[k].data();
      MatMul(pool, x.data(), n, *jobs[k].w, jobs[k].r0, jobs[k].r1, jobs[k].bias, one[k].data(),
             jobs[k].ldo);
    }
    MatMulMany(pool, jobs, 3);
    for (int k = 0; k < 3; ++k) {
      ExpectSameBits(one[k], many[k], "product " + std::to_string(k) + " n " + std::to_string(n));
    }
  }
}

TEST(CpuExecDeterminismTest, ManyProductsOfTheirOwnInputsMatchOneByOne) {
  // The experts of a sparse layer the host computes: more than 8 products,
  // each of its own rows (0 to 5 of them), in one dispatch.
  std::mt19937 rng(7);
  ExecPool pool(3);
  const int64_t cols = 256;
  std::vector<Weights> w;
  std::vector<std::vector<float>> x, many, one;
  std::vector<MatMulJob> jobs;
  const DType types[] = {DType::kI4, DType::kF16, DType::kI8, DType::kBF16};
  for (int k = 0; k < 13; ++k) {
    const DType t = types[k % 4];
    w.push_back(MakeWeights(t, 33 + k, cols, IsQuantized(t) ? 32 : 0, rng));
  }
  for (int k = 0; k < 13; ++k) {
    const int n = k % 6;
    x.push_back(RandomVector(rng, size_t(std::max(n, 1)) * cols));
    many.emplace_back(size_t(std::max(n, 1)) * size_t(w[size_t(k)].ref.rows), -1.f);
    one.push_back(many.back());
    MatMul(pool, x.back().data(), n, w[size_t(k)].ref, 0, w[size_t(k)].ref.rows, nullptr,
           one.back().data(), w[size_t(k)].ref.rows);
  }
  for (int k = 0; k < 13; ++k)
    jobs.push_back(MatMulJob{&w[size_t(k)].ref, 0, w[size_t(k)].ref.rows, nullptr,
                             many[size_t(k)].data(), w[size_t(k)].ref.rows, x[size_t(k)].data(),
                             k % 6});
  MatMulMany(pool, jobs.data(), int(jobs.size()));
  for (int k = 0; k < 13; ++k)
    ExpectSameBits(one[size_t(k)], many[size_t(k)], "product " + std::to_string(k));
}

TEST(CpuExecMatMulTest, EmptyCallsWriteNothing) {
  std::mt19937 rng(6);
  ExecPool pool(2);
  const Weights w = MakeWeights(DType::kI4, 8, 40, 32, rng);
  const std::vector<float> x = RandomVector(rng, 40);
  std::vector<float> out(8, 7.f);
  MatMul(pool, x.data(), 0, w.ref, 0, 8, nullptr, out.data(), 8);
  MatMul(pool, x.data(), 1, w.ref, 3, 3, nullptr, out.data(), 8);
  for (float v : out) EXPECT_EQ(v, 7.f);
}

TEST(CpuExecMatMulDeathTest, CallerBugsAbortWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::mt19937 rng(9);
  const Weights w = MakeWeights(DType::kI8, 8, 40, 32, rng);
  const std::vector<float> x = RandomVector(rng, 40);
  std::vector<float> out(16);
  EXPECT_DEATH(MatMulRows(x.data(), 1, w.ref, 4, 9, nullptr, out.data(), 8), "rows \\[4, 9\\)");
  EXPECT_DEATH(MatMulRows(x.data(), 1, w.ref, 0, 8, nullptr, out.data(), 7), "ldo 7");
  WeightRef no_group = w.ref;
  no_group.group = 0;
  EXPECT_DEATH(MatMulRows(x.data(), 1, no_group, 0, 8, nullptr, out.data(), 8), "group 0");
}

TEST(CpuExecMatMulTest, SupportsEveryStoreDTypeAndNamesItsTarget) {
  for (DType t : kAllDTypes) EXPECT_TRUE(Supports(t)) << DTypeName(t);
  EXPECT_FALSE(TargetName().empty());
  std::vector<float> v(1001);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 7);
  double want = 0;
  for (float f : v) want += f;
  EXPECT_EQ(SumFloats(v.data(), int64_t(v.size())), float(want));
}

TEST(ExecPoolTest, ParallelForCoversTheRangeOnceInGrainAlignedChunks) {
  for (int threads : {1, 2, 4}) {
    ExecPool pool(threads);
    for (int64_t grain : {1, 4, 7, 1000}) {
      const int64_t begin = 3, end = 1003;
      std::vector<std::atomic<int>> hits(static_cast<size_t>(end));
      std::atomic<bool> misaligned{false};
      pool.ParallelFor(begin, end, grain, [&](int64_t lo, int64_t hi) {
        if ((lo - begin) % grain != 0 || (hi != end && (hi - begin) % grain != 0)) {
          misaligned = true;
        }
        for (int64_t i = lo; i < hi; ++i) hits[size_t(i)].fetch_add(1);
      });
      EXPECT_FALSE(misaligned) << "threads " << threads << " grain " << grain;
      for (int64_t i = 0; i < end; ++i) {
        ASSERT_EQ(hits[size_t(i)].load(), i >= begin ? 1 : 0) << i;
      }
    }
  }
}

// (A pool of one thread runs the range inline as one chunk, capped or not.)
TEST(ExecPoolTest, MaxChunkCapsChunksAtWholeGrains) {
  for (int threads : {2, 3}) {
    ExecPool pool(threads);
    for (auto [grain, max_chunk] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {4, 16}, {4, 18}, {4, 3}, {7, 100}, {1000, 10}}) {
      const int64_t begin = 3, end = 1003;
      const int64_t cap = std::max(grain, max_chunk / grain * grain);
      std::vector<std::atomic<int>> hits(static_cast<size_t>(end));
      std::atomic<bool> bad{false};
      pool.ParallelFor(
          begin, end, grain,
          [&](int64_t lo, int64_t hi) {
            if ((lo - begin) % grain != 0 || hi - lo > cap) bad = true;
            for (int64_t i = lo; i < hi; ++i) hits[size_t(i)].fetch_add(1);
          },
          max_chunk);
      EXPECT_FALSE(bad) << "threads " << threads << " grain " << grain << " max " << max_chunk;
      for (int64_t i = 0; i < end; ++i) ASSERT_EQ(hits[size_t(i)].load(), i >= begin ? 1 : 0) << i;
    }
  }
}

TEST(ExecPoolTest, SleepingWorkersWakeAndNestedCallsRunInline) {
  ExecPoolOptions opts;
  opts.threads = 3;
  opts.spin_us = 0;  // every wait sleeps: the wake-up path
  ExecPool pool(opts);
  for (int round = 0; round < 500; ++round) {
    std::atomic<int64_t> sum{0};
    pool.ParallelFor(0, 64, 1, [&](int64_t lo, int64_t hi) {
      int64_t inner = 0;
      pool.ParallelFor(lo, hi, 1, [&](int64_t a, int64_t b) {
        for (int64_t i = a; i < b; ++i) inner += i;
      });
      sum += inner;
    });
    ASSERT_EQ(sum.load(), 64 * 63 / 2) << "round " << round;
    if (round % 100 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// Wake: sleeping workers get up and spin for the job to come, then sleep
// again when none comes; jobs between wakes run as before.
TEST(ExecPoolTest, WakeGetsSleepingWorkersSpinning) {
  ExecPoolOptions opts;
  opts.threads = 3;
  opts.spin_us = 20000;
  ExecPool pool(opts);
  const auto until = [](auto cond) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!cond() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    return cond();
  };
  std::atomic<int64_t> sum{0};
  pool.ParallelFor(0, 64, 1, [&](int64_t lo, int64_t hi) { sum += hi - lo; });
  ASSERT_TRUE(until([&] { return pool.sleeping_workers() == 2; }));
  pool.Wake();
  ASSERT_TRUE(until([&] { return pool.sleeping_workers() == 0; }));
  ASSERT_TRUE(until([&] { return pool.sleeping_workers() == 2; }));  // no job came
  for (int round = 0; round < 200; ++round) {
    pool.Wake();
    if (round % 3 == 0) pool.Wake();
    pool.ParallelFor(0, 64, 1, [&](int64_t lo, int64_t hi) { sum += hi - lo; });
  }
  EXPECT_EQ(sum.load(), 201 * 64);
  ExecPool alone(1);  // no workers: nothing to wake
  alone.Wake();
  EXPECT_EQ(alone.sleeping_workers(), 0);
}

TEST(ExecPoolTest, CallsFromSeveralThreadsAreSerialized) {
  ExecPool pool(2);
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int k = 0; k < 200; ++k) {
      pool.ParallelFor(0, 100, 1, [&](int64_t lo, int64_t hi) { total += hi - lo; });
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 200 * 100);
}

TEST(ExecPoolTest, PinnedPoolComputesTheSameBits) {
  auto cpus = ParseCpuList("all");
  ASSERT_TRUE(cpus.ok()) << cpus.status();
  ASSERT_FALSE(cpus->empty());
  ExecPoolOptions opts;
  opts.threads = 2;
  opts.cpus = *cpus;
  ExecPool pinned(opts);
  EXPECT_TRUE(pinned.pinned());
  ExecPool plain(2);
  EXPECT_FALSE(plain.pinned());
  std::mt19937 rng(7);
  const Weights w = MakeWeights(DType::kF16, 64, 200, 0, rng);
  const std::vector<float> x = RandomVector(rng, 3 * 200);
  ExpectSameBits(Whole(pinned, x, 3, w.ref, nullptr), Whole(plain, x, 3, w.ref, nullptr),
                 "pinned vs not");
}

// The element-wise halves of an expert the host computes (expert-level
// paging): the CPU backend's SwiGlu and gpt-oss's clamped SwiGluOai bit for
// bit, in place too, with values on both sides of the clamp.
TEST(HostExecutorTest, SwiGluAndSwiGluOaiMatchTheCpuBackendBitForBit) {
  std::mt19937 rng(11);
  const int n = 5, dim = 67;
  const size_t count = size_t(n * dim);
  std::vector<float> gate = RandomVector(rng, count), up = RandomVector(rng, count);
  for (size_t j = 0; j < count; ++j) {  // some far past any limit, some exactly on it
    if (j % 7 == 0) gate[j] *= 20.f;
    if (j % 5 == 0) up[j] *= 20.f;
    if (j % 11 == 0) gate[j] = 0.5f, up[j] = -0.5f;
  }
  ExecPoolOptions opts;
  opts.threads = 2;
  const std::unique_ptr<HostExecutor> host = MakeHostExecutor(opts);
  ThreadPool pool(3);
  std::vector<float> want(count), got(count), in_place = gate;
  cpu::SwiGlu(pool, gate.data(), up.data(), n, dim, want.data());
  host->SwiGlu(gate.data(), up.data(), int64_t(count), got.data());
  ExpectSameBits(want, got, "SwiGlu");
  for (float limit : {0.5f, 7.f}) {
    const std::string what = "SwiGluOai limit " + std::to_string(limit);
    cpu::SwiGluOai(pool, gate.data(), up.data(), n, dim, 1.702f, limit, want.data());
    host->SwiGluOai(gate.data(), up.data(), int64_t(count), 1.702f, limit, got.data());
    ExpectSameBits(want, got, what);
    in_place = gate;
    host->SwiGluOai(in_place.data(), up.data(), int64_t(count), 1.702f, limit, in_place.data());
    ExpectSameBits(want, in_place, what + " in place");
  }
}

TEST(ExecPoolTest, ParseCpuList) {
  EXPECT_TRUE(ParseCpuList("none")->empty());
  EXPECT_TRUE(ParseCpuList("")->empty());
  EXPECT_EQ(*ParseCpuList("0-3,8"), (std::vector<int>{0, 1, 2, 3, 8}));
  EXPECT_EQ(*ParseCpuList("5"), (std::vector<int>{5}));
  for (const char* bad : {"3-1", "x", "1,,2", "-1", "1-", "0-100000", "2,"}) {
    EXPECT_FALSE(ParseCpuList(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace paged::cpu_exec
