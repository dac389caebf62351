// Picks a backend from a device string: "cpu" (the CPU backend with the CPU
// executor's matrix products), "cpu-q8" (the same with 8-bit activations for
// q4_k / q5_k / q6_k weights: cpu_exec::ExecPoolOptions::q8_activations), "cpu-ref"
// (the scalar reference throughout), "cuda" (= cuda:0), "cuda:N".
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "worker/engine/backend.h"

namespace paged {

// q8_activations: the CPU executor's products of "cpu" take 8-bit
// activations ("cpu-q8" always does; the other devices ignore it).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(std::string_view device, int cpu_threads = 0,
                                                     bool q8_activations = false);

// The backend of "cpu": the CPU backend with the CPU executor's matrix
// products (device_label: see MakeCpuBackend).
std::unique_ptr<Backend> MakeExecCpuBackend(int threads, const std::string& device_label = "",
                                            bool q8_activations = false);

}  // namespace paged
