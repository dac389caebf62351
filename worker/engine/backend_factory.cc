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

std::unique_ptr<Backend> MakeExecCpuBackend(int threads, const std::string& device_label,
                                            bool q8_activations) {
  // The backend's other ops run on the executor's threads too (MakeCpuBackend),
  // which stay awake between the ops of a step: the longest gap in a decode
  // step (sampling, attention at a long context) is well under 1 ms, so a
  // step takes no wake-up. (A futex wake-up cost 25-75 us on the 2-core build
  // machine, for 15 products per decode step.)
  cpu_exec::ExecPoolOptions o;
  o.threads = threads;
  o.spin_us = 1000;
  o.q8_activations = q8_activations;
  return MakeCpuBackend(threads, device_label, cpu_exec::MakeHostExecutor(o));
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device, int cpu_threads,
                                                     bool q8_activations) {
  const std::string d(device);
  if (d == "cpu") return MakeExecCpuBackend(cpu_threads, "", q8_activations);
  if (d == "cpu-q8") return MakeExecCpuBackend(cpu_threads, "", /*q8_activations=*/true);
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
      absl::StrCat("--device=", d, ": expected cpu, cpu-q8, cpu-ref, cuda or cuda:N"));
}

}  // namespace paged
