#include "worker/backends/cpu_exec/host_executor.h"

#include <thread>

#include "absl/strings/str_cat.h"
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
};

}  // namespace

std::unique_ptr<HostExecutor> MakeHostExecutor(const ExecPoolOptions& options) {
  return std::make_unique<CpuHostExecutor>(options);
}

absl::StatusOr<ExecPoolOptions> HostExecutorOptions(int threads, const std::string& pin) {
  ExecPoolOptions o;
  o.threads = threads;
  absl::StatusOr<std::vector<int>> cpus = ParseCpuList(pin);
  if (!cpus.ok()) return cpus.status();
  o.cpus = *cpus;
  return o;
}

}  // namespace paged::cpu_exec
