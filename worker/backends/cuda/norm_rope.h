// RMS normalisation and rotary position embedding.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w; x, out: [n, dim]; w: [dim].
// out may be x.
CudaError LaunchRmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out,
                        cudaStream_t stream);

// Rotates q [n, n_heads * head_dim] and k [n, n_kv_heads * head_dim] in place,
// halves convention: (x[i], x[i + head_dim / 2]) by angle pos[r] * inv_freq[i],
// cos and sin multiplied by attn_factor. inv_freq: [head_dim / 2] f32 in
// device memory (scaling already applied); pos: [n] in device memory.
CudaError LaunchRope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
                     int head_dim, const float* inv_freq, float attn_factor, cudaStream_t stream);

}  // namespace paged::cuda
