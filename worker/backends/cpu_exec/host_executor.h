// The CPU executor as the engine's HostExecutor (worker/engine/host_executor.h):
// its kernels (matmul.h) on its own pool of threads (exec_pool.h).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/backends/cpu_exec/exec_pool.h"
#include "worker/engine/host_executor.h"

namespace paged::cpu_exec {

std::unique_ptr<HostExecutor> MakeHostExecutor(const ExecPoolOptions& options);

// Options from flags: threads (<= 0: every CPU this process may use), a
// CPU list to pin them to ("none", "all" or "0-7,16": exec_pool.h) and the
// products' activations ("f32" or "q8": ExecPoolOptions::q8_activations).
absl::StatusOr<ExecPoolOptions> HostExecutorOptions(int threads, const std::string& pin,
                                                    const std::string& activations = "f32");

// --host-activations: "f32" -> false, "q8" -> true (8-bit activations),
// anything else a clear error.
absl::StatusOr<bool> ParseHostActivations(const std::string& activations);

}  // namespace paged::cpu_exec
