// Helpers (in paged::testing) shared by the CPU executor's tests (cpu_exec_test.cc for the
// stored formats, cpu_exec_blocks_test.cc for the ggml block formats).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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

inline void ExpectSameBits(const std::vector<float>& a, const std::vector<float>& b,
                           const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

}  // namespace paged::testing
