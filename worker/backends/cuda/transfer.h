// Transfer kernels of the pager: gathering KV blocks from registered (mapped)
// host memory into device memory, and scattering new KV rows back. Kernels
// read / write host memory directly over the link, so hundreds of small
// blocks cost one launch, not hundreds of cudaMemcpyAsync calls.
#pragma once

#include <cstdint>

#include "worker/backends/cuda/kernel_types.h"

namespace paged::cuda {

// For i < n: block_bytes (a multiple of 16) from host_base + host_ids[i] *
// host_stride to dst_base + dev_ids[i] * block_bytes. host_base: a device-
// usable pointer to registered host memory; ids: device-readable arrays
// (mapped pinned memory).
CudaError LaunchGatherBlocks(void* dst_base, const void* host_base, uint64_t host_stride,
                             const int32_t* host_ids, const int32_t* dev_ids, int n,
                             uint64_t block_bytes, cudaStream_t stream);

// For i < n: the row of `row_bytes` (a multiple of 16) at K and at V of slot
// dev_slots[i] of `dev` goes to slot host_slots[i] of `host` (same geometry,
// device-usable pointer to registered host memory).
CudaError LaunchScatterKvRows(const KvView& dev, const KvView& host, const int32_t* dev_slots,
                              const int32_t* host_slots, int n, cudaStream_t stream);

// For i < rows: `width` bytes from host_src + i * src_pitch to dst + i *
// dst_pitch, read by the SMs from pinned host memory (host_src: a device-
// usable pointer) instead of a DMA: a small upload issued on the compute
// stream then does not queue behind the pager's large copies on the
// host-to-device copy engine. 16-byte words when everything is aligned to
// 16, 4-byte words when to 4, else bytes.
CudaError LaunchCopyFromHost2D(void* dst, uint64_t dst_pitch, const void* host_src,
                               uint64_t src_pitch, uint64_t width, uint64_t rows,
                               cudaStream_t stream);

}  // namespace paged::cuda
