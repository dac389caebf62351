#include "worker/backends/cpu_exec/host_executor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu_exec/attention.h"
#include "worker/backends/cpu_exec/matmul.h"

namespace paged::cpu_exec {
namespace {

class CpuHostExecutor final : public HostExecutor {
 public:
  explicit CpuHostExecutor(const ExecPoolOptions& options)
      : pool_(options), pin_requested_(!options.cpus.empty()) {}

  void MatMul(const float* x, int n, const WeightRef& w, int64_t r0, int64_t r1, const float* bias,
              float* out, int64_t ldo) override {
    cpu_exec::MatMul(pool_, x, n, w, r0, r1, bias, out, ldo);
  }
  void MatMulMany(const float* x, int n, const Product* products, int count) override {
    jobs_.resize(size_t(std::max(count, 0)));
    for (int k = 0; k < count; ++k) {
      const Product& p = products[k];
      const bool own = p.own_x != nullptr;
      jobs_[size_t(k)] =
          MatMulJob{p.w, p.r0, p.r1, p.bias, p.out, p.ldo, own ? p.own_x : x, own ? p.own_n : n};
    }
    cpu_exec::MatMulMany(pool_, jobs_.data(), count);
  }
  void Wake() override { pool_.Wake(); }
  bool Attention(const float* q, const AttnSeq* seqs, int n_seqs, const int32_t* block_tables,
                 int n_heads, int n_kv_heads, int head_dim, int max_ctx, const KvLayerView& kv,
                 const AttnParams& p, float* out) override {
    // PAGED_CPU_EXEC_ATTENTION=0: the backend's reference instead, for measuring.
    static const bool on = [] {
      const char* v = std::getenv("PAGED_CPU_EXEC_ATTENTION");
      return v == nullptr || std::strcmp(v, "0") != 0;
    }();
    if (!on) return false;
    cpu_exec::Attention(pool_, q, seqs, n_seqs, block_tables, n_heads, n_kv_heads, head_dim,
                        max_ctx, kv, p, out);
    return true;
  }
  void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) override {
    const int64_t cols = table.cols;
    auto rows = [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        float* o = out + i * cols;
        // The reference's row decoder, every stored dtype (decodes into o).
        const float* row = cpu::WeightRow(table, ids[i], o);
        if (row != o) std::memcpy(o, row, size_t(cols) * sizeof(float));
      }
    };
    // A few rows per thread at least: a decode step's one row runs inline.
    pool_.ParallelFor(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), rows);
  }
  void SwiGlu(const float* gate, const float* up, int64_t count, float* out) override {
    // The CPU backend's formula (worker/backends/cpu/cpu_ops.cc), so that an
    // expert computed here equals the device's on the "cpu" device.
    for (int64_t j = 0; j < count; ++j) {
      float val = gate[j];
      val *= 1.f / (1.f + std::exp(-val));  // silu
      out[j] = val * up[j];
    }
  }
  void SwiGluOai(const float* gate, const float* up, int64_t count, float alpha, float limit,
                 float* out) override {
    // cpu::SwiGluOai's formula, term for term (cpu_ops.cc).
    for (int64_t j = 0; j < count; ++j) {
      const float g = std::min(gate[j], limit);
      const float u = std::clamp(up[j], -limit, limit);
      const float glu = g * (1.f / (1.f + std::exp(-(g * alpha))));
      out[j] = (u + 1.f) * glu;
    }
  }
  void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                   const std::function<void(int64_t lo, int64_t hi)>& fn) override {
    pool_.ParallelFor(begin, end, grain, fn);
  }
  bool Supports(DType t) const override { return cpu_exec::Supports(t); }
  int threads() const override { return pool_.size(); }
  std::string Describe() const override {
    return absl::StrCat("cpu executor (", TargetName(), ", ", pool_.size(), " threads",
                        pin_requested_ ? (pool_.pinned() ? ", pinned" : ", pinning refused") : "",
                        ")");
  }

 private:
  ExecPool pool_;
  bool pin_requested_;
  std::vector<MatMulJob> jobs_;  // MatMulMany's (one caller at a time, as every method)
};

}  // namespace

std::unique_ptr<HostExecutor> MakeHostExecutor(const ExecPoolOptions& options) {
  return std::make_unique<CpuHostExecutor>(options);
}

absl::StatusOr<ExecPoolOptions> HostExecutorOptions(int threads, const std::string& pin,
                                                    const std::string& activations) {
  ExecPoolOptions o;
  ASSIGN_OR_RETURN(o.q8_activations, ParseHostActivations(activations));
  o.threads = threads;
  // PAGED_HOST_SPIN_US: how long idle threads spin before they sleep (the
  // pool's default otherwise). Measured on the GPU machine: 2000 us, which
  // keeps the threads awake across a step, made hybrid decode slower (the
  // spinning threads take the cores the thread driving the GPU and the copies
  // needs), so the default stays short.
  if (const char* v = std::getenv("PAGED_HOST_SPIN_US")) o.spin_us = std::max(0, std::atoi(v));
  absl::StatusOr<std::vector<int>> cpus = ParseCpuList(pin);
  if (!cpus.ok()) return cpus.status();
  o.cpus = *cpus;
  return o;
}

absl::StatusOr<bool> ParseHostActivations(const std::string& activations) {
  if (activations != "f32" && activations != "q8") {
    return absl::InvalidArgumentError("--host-activations=" + activations +
                                      ": f32 or q8 (8 bits for q4_k / q5_k / q6_k weights)");
  }
  return activations == "q8";
}

}  // namespace paged::cpu_exec
