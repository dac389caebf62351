// Token sampling on the GPU: computes worker/engine/sampling.h's definition
// (its own summation order), one block per row of logits.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// Bytes of device scratch LaunchSample needs for n rows of `vocab` (0 when
// a row's probabilities fit in shared memory).
uint64_t SampleScratchBytes(int n, int vocab);

// logits: [n, vocab]; params, positions: [n] device; out_tokens: [n] device.
CudaError LaunchSample(const float* logits, int n, int vocab, const SamplingParamsView* params,
                       const int32_t* positions, float* scratch, int32_t* out_tokens,
                       cudaStream_t stream);

}  // namespace paged::cuda
