// The CPU reference backend: fp32 arithmetic in plain loops (checkable
// against llama2.c's run.c), rows split over a small thread pool.
#pragma once

#include <memory>

#include "worker/engine/backend.h"

namespace paged {

// threads: threads sharing each op, the caller included; <= 0: hardware
// concurrency, at most 32.
std::unique_ptr<Backend> MakeCpuBackend(int threads = 0);

}  // namespace paged
