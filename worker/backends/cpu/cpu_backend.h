// The CPU backend: fp32 arithmetic in plain loops (checkable against
// llama2.c's run.c), rows split over a small thread pool: the reference.
// Given a HostExecutor, its matrix products run there instead (the CPU
// executor's vectorized kernels, worker/backends/cpu_exec), for every weight
// dtype the executor reads: the backend of `--device=cpu`.
#pragma once

#include <memory>
#include <string>

#include "worker/engine/backend.h"
#include "worker/engine/host_executor.h"

namespace paged {

// threads: threads sharing each op, the caller included; <= 0: hardware
// concurrency, at most 32. device_label: backends of one process with
// different labels count as different devices (device_uuid), peers to each
// other for sharing (tests of the peer path); memory is shared within the
// process either way.
std::unique_ptr<Backend> MakeCpuBackend(int threads = 0, const std::string& device_label = "",
                                        std::unique_ptr<HostExecutor> matmul = nullptr);

}  // namespace paged
