#include "worker/engine/backend_factory.h"

#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/backends/cpu/cpu_backend.h"
#include "worker/backends/cpu_exec/host_executor.h"
#ifdef PAGED_HAVE_CUDA
#include "worker/backends/cuda/cuda_backend.h"
#endif

namespace paged {

std::unique_ptr<Backend> MakeExecCpuBackend(int threads, const std::string& device_label) {
  // The executor's own threads spin only briefly between products: the
  // backend's other ops run on its reference pool in between.
  cpu_exec::ExecPoolOptions o;
  o.threads = threads;
  o.spin_us = 20;
  return MakeCpuBackend(threads, device_label, cpu_exec::MakeHostExecutor(o));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device, int cpu_threads) {
  const std::string d(device);
  if (d == "cpu") return MakeExecCpuBackend(cpu_threads);
  if (d == "cpu-ref") return MakeCpuBackend(cpu_threads);
  int index = 0;
  if (d == "cuda" ||
      (d.rfind("cuda:", 0) == 0 && absl::SimpleAtoi(d.substr(5), &index) && index >= 0)) {
#ifdef PAGED_HAVE_CUDA
    return MakeCudaBackend(index);
#else
    return absl::FailedPreconditionError(absl::StrCat(
        "--device=", d, ": this build has no CUDA backend (nvcc was not found at build time)"));
#endif
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--device=", d, ": expected cpu, cpu-ref, cuda or cuda:N"));
}

}  // namespace paged
