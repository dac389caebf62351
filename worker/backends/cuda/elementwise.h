// Elementwise and row-copy kernels of the forward pass.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// x[i] += y[i] for i < count.
CudaError LaunchAdd(float* x, const float* y, int64_t count, cudaStream_t stream);
// out[i, j] = silu(gate[i, j]) * up[i, j]; [n, dim].
CudaError LaunchSwiGlu(const float* gate, const float* up, int64_t n, int64_t dim, float* out,
                       cudaStream_t stream);
// out[i, j] = gelu_tanh(gate[i, j]) * up[i, j]; [n, dim]. out may be gate.
CudaError LaunchGeGlu(const float* gate, const float* up, int64_t n, int64_t dim, float* out,
                      cudaStream_t stream);
// gpt-oss's clamped SwiGLU: g = min(gate, limit), u = clamp(up, -limit, limit),
// out = (u + 1) * g * sigmoid(alpha * g); [n, dim]. out may be gate.
CudaError LaunchSwiGluOai(const float* gate, const float* up, int64_t n, int64_t dim, float alpha,
                          float limit, float* out, cudaStream_t stream);
// x[i] *= s for i < count.
CudaError LaunchScale(float* x, int64_t count, float s, cudaStream_t stream);
// x[i] = cap * tanh(x[i] / cap) for i < count; cap > 0.
CudaError LaunchSoftCap(float* x, int64_t count, float cap, cudaStream_t stream);
// out[i, :] = x[rows[i], :]; x: [?, dim], rows: [n] (device), out: [n, dim].
CudaError LaunchGatherRows(const float* x, const int32_t* rows, int n, int dim, float* out,
                           cudaStream_t stream);
// out[rows[i], :] += w[i] * y[i, :]; y: [n, dim], rows, w: [n] (device), the
// rows distinct.
CudaError LaunchScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                               float* out, cudaStream_t stream);
// out[tokens[i], :] += w[pos[k]] * y[pos[k], :] for k in [begin[i],
// begin[i+1]), in that order (Backend::CombineRows); all arrays device.
CudaError LaunchCombineRows(const float* y, const float* w, const int32_t* tokens,
                            const int32_t* begin, const int32_t* pos, int n_tokens, int dim,
                            float* out, cudaStream_t stream);
// out[i, r] += bias[r]; out: [n, rows].
CudaError LaunchAddBias(float* out, const float* bias, int64_t n, int64_t rows, int64_t ldo,
                        cudaStream_t stream);
// dst[i] = to(src[i]) for i < count; to: kF16 or kBF16 (dst holds 2-byte values).
CudaError LaunchCastF32(const float* src, int64_t count, ElemType to, void* dst,
                        cudaStream_t stream);

}  // namespace paged::cuda
