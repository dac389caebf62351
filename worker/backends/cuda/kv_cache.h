// Writes new K/V rows into the paged cache.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// k, v: [n, kv.kv_dim] f32 -> cache rows slots[i] (block slot / block_tokens,
// row slot % block_tokens) in the cache type. slots: [n] device; a negative
// slot is skipped.
CudaError LaunchKvWrite(const float* k, const float* v, const int32_t* slots, int n,
                        const KvView& kv, cudaStream_t stream);

}  // namespace paged::cuda
