// Helpers (in paged::testing) shared by the CPU executor's tests (cpu_exec_test.cc for the
// stored formats, cpu_exec_blocks_test.cc for the ggml block formats).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common/block_quant.h"
#include "common/dtype.h"
#include "common/quant.h"
#include "hwy/targets.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/thread_pool.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::testing {

inline std::vector<float> RandomVector(std::mt19937& rng, size_t n) {
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// out_ref [n, rows] from the scalar reference, and the error scale
// sum_c |x_ic * W_rc| (+ |bias_r|) of each element.
inline void Reference(const std::vector<float>& x, int n, const WeightRef& w, const float* bias,
                      std::vector<float>* out, std::vector<double>* scale) {
  ThreadPool pool(1);
  out->assign(size_t(n * w.rows), 0.f);
  cpu::MatMul(pool, x.data(), n, w, bias, out->data());
  scale->assign(size_t(n * w.rows), 0.0);
  std::vector<float> scratch(size_t(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* wr = cpu::WeightRow(w, r, scratch.data());
    for (int i = 0; i < n; ++i) {
      double s = bias ? std::fabs(bias[r]) : 0.0;
      for (int64_t c = 0; c < w.cols; ++c) s += std::fabs(double(x[i * w.cols + c]) * wr[c]);
      (*scale)[size_t(i * w.rows + r)] = s;
    }
  }
}

// out(i, r) of a [0, rows) product, as raw bits for byte comparisons.
inline std::vector<float> Whole(cpu_exec::ExecPool& pool, const std::vector<float>& x, int n,
                                const WeightRef& w, const float* bias) {
  std::vector<float> out(size_t(n * w.rows));
  cpu_exec::MatMul(pool, x.data(), n, w, 0, w.rows, bias, out.data(), w.rows);
  return out;
}

// A matrix of a stored format (f32, f16, bf16; int8 / int4 with f16 scales
// per `group` columns, common/quant.h) of normal random values, its storage
// and its WeightRef (which points into it).
struct StoredWeights {
  std::vector<uint8_t> data;
  std::vector<uint16_t> scales;
  WeightRef ref;
};

inline StoredWeights MakeWeights(DType t, int64_t rows, int64_t cols, int group,
                                 std::mt19937& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  StoredWeights w;
  w.ref.dtype = t;
  w.ref.rows = rows;
  w.ref.cols = cols;
  w.ref.group = IsQuantized(t) ? group : 0;
  std::vector<float> row(static_cast<size_t>(cols));
  const int64_t groups = IsQuantized(t) ? GroupsPerRow(cols, group) : 0;
  w.data.resize(PayloadBytes(t, uint64_t(rows), uint64_t(cols)));
  if (IsQuantized(t)) w.scales.resize(size_t(rows * groups));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = dist(rng);
    switch (t) {
      case DType::kF32:
        std::memcpy(w.data.data() + r * cols * 4, row.data(), size_t(cols) * 4);
        break;
      case DType::kF16:
      case DType::kBF16:
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = t == DType::kF16 ? FloatToHalf(row[c]) : FloatToBf16(row[c]);
          std::memcpy(w.data.data() + (r * cols + c) * 2, &h, 2);
        }
        break;
      case DType::kI8:
        QuantizeRowInt8(row.data(), cols, group,
                        reinterpret_cast<int8_t*>(w.data.data()) + r * cols,
                        w.scales.data() + r * groups);
        break;
      case DType::kI4:
        QuantizeRowInt4(row.data(), cols, group, w.data.data() + r * ((cols + 1) / 2),
                        w.scales.data() + r * groups);
        break;
      default:  // block formats: not read by the executor yet
        break;
    }
  }
  w.ref.data = w.data.data();
  w.ref.scales = w.scales.empty() ? nullptr : w.scales.data();
  return w;
}

// A matrix of ggml blocks and its WeightRef (which points into data).
struct BlockWeights {
  std::vector<uint8_t> data;
  WeightRef ref;
};

// [rows, cols] of random blocks: random bytes, then every f16 scale a finite
// value (about 1 in 16 a subnormal, some negative) and every mxfp4 exponent
// one of the subnormal scales 0, 1 or a moderate 100..140.
inline BlockWeights RandomBlocks(DType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  BlockWeights w;
  w.data.resize(PayloadBytes(t, uint64_t(rows), uint64_t(cols)));
  std::uniform_int_distribution<int> byte(0, 255);
  for (uint8_t& b : w.data) b = uint8_t(byte(rng));
  std::uniform_real_distribution<float> mag(0.001f, 0.1f);
  const int64_t blocks = int64_t(w.data.size()) / BlockBytes(t);
  for (int64_t k = 0; k < blocks; ++k) {
    uint8_t* blk = w.data.data() + k * BlockBytes(t);
    for (int off : BlockHalfFields(t)) {
      const int kind = byte(rng);
      uint16_t h = kind < 16 ? uint16_t(1 + byte(rng) * 4) : FloatToHalf(mag(rng));
      if (kind % 5 == 0) h |= 0x8000;
      std::memcpy(blk + off, &h, 2);
    }
    if (t == DType::kMXFP4) {
      const int kind = byte(rng);
      blk[0] = kind < 16 ? uint8_t(kind % 2) : uint8_t(100 + kind % 41);
    }
  }
  w.ref.data = w.data.data();
  w.ref.dtype = t;
  w.ref.rows = rows;
  w.ref.cols = cols;
  return w;
}

// Rows [r0, r1) of MatMul(x) (n token rows, bias or null) into [n, ldo =
// r1 - r0 + pad] with a sentinel past r1 - r0, against the reference on
// ref_x (x itself, or what the product is defined on: 8-bit activations'
// x'), within `tol` of sum |ref_x * w|. `what` names the case.
inline void ExpectProductMatches(cpu_exec::ExecPool& pool, const WeightRef& w,
                                 const std::vector<float>& x, const std::vector<float>& ref_x,
                                 int n, const float* bias, int64_t r0, int64_t r1, int64_t pad,
                                 double tol, const std::string& what) {
  std::vector<float> ref;
  std::vector<double> scale;
  Reference(ref_x, n, w, bias, &ref, &scale);
  const int64_t ldo = r1 - r0 + pad;
  const float kSentinel = -12345.f;
  std::vector<float> out(size_t(n * ldo), kSentinel);
  cpu_exec::MatMul(pool, x.data(), n, w, r0, r1, bias, out.data(), ldo);
  for (int i = 0; i < n; ++i) {
    for (int64_t j = 0; j < ldo; ++j) {
      const float got = out[size_t(i * ldo + j)];
      if (j >= r1 - r0) {
        ASSERT_EQ(got, kSentinel) << what << " wrote past r1 - r0 at " << i << "," << j;
        continue;
      }
      const size_t k = size_t(i * w.rows + r0 + j);
      ASSERT_NEAR(got, ref[k], tol * scale[k] + 1e-30)
          << what << " rows [" << r0 << ", " << r1 << ") token " << i << " row " << r0 + j;
    }
  }
}

// Runs body() once for each SIMD target (AVX-512, AVX2, the portable
// fallback) that this CPU runs and the library holds, with that target
// forced; expects at least one, and records and prints their names
// (label(), else the target's name).
inline void ForEachTargetThisCpuRuns(const std::function<void()>& body,
                                     const std::function<std::string()>& label = nullptr) {
  std::string names;
  for (int64_t target :
       {int64_t{HWY_AVX3}, int64_t{HWY_AVX2}, int64_t{HWY_EMU128}, int64_t{HWY_SCALAR}}) {
    if ((hwy::SupportedTargets() & target) == 0) continue;
    hwy::SetSupportedTargetsForTest(target);
    if (cpu_exec::TargetName() == hwy::TargetName(target)) {  // else not built into the library
      names += (label ? label() : cpu_exec::TargetName()) + " ";
      body();
    }
    hwy::SetSupportedTargetsForTest(0);
  }
  EXPECT_FALSE(names.empty());
  ::testing::Test::RecordProperty("targets", names);
  std::printf("targets tested: %s\n", names.c_str());
}

inline void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b,
                           const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

}  // namespace paged::testing
