#include <cuda_runtime.h>

#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/transfer.h"

namespace paged::cuda {
namespace {

constexpr int kThreads = 256;

// blockIdx.y: which block; x-blocks and threads stride over its 16-byte words.
__global__ void GatherBlocksKernel(uint8_t* __restrict__ dst, const uint8_t* __restrict__ src,
                                   uint64_t stride, const int32_t* __restrict__ host_ids,
                                   const int32_t* __restrict__ dev_ids, uint64_t words) {
  const int i = blockIdx.y;
  const uint4* in = reinterpret_cast<const uint4*>(src + uint64_t(host_ids[i]) * stride);
  uint4* out = reinterpret_cast<uint4*>(dst + uint64_t(dev_ids[i]) * words * 16);
  for (uint64_t w = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; w < words;
       w += uint64_t(gridDim.x) * blockDim.x) {
    out[w] = in[w];
  }
}

// blockIdx.y: which row; z: K (0) or V (1).
__global__ void ScatterRowsKernel(const uint8_t* __restrict__ dev, uint8_t* __restrict__ host,
                                  uint64_t block_bytes, int block_tokens, uint64_t row_bytes,
                                  const int32_t* __restrict__ dev_slots,
                                  const int32_t* __restrict__ host_slots) {
  const int i = blockIdx.y;
  const uint64_t v_off = blockIdx.z == 1 ? uint64_t(block_tokens) * row_bytes : 0;
  const int32_t ds = dev_slots[i], hs = host_slots[i];
  const uint4* in = reinterpret_cast<const uint4*>(dev + uint64_t(ds / block_tokens) * block_bytes +
                                                   v_off + uint64_t(ds % block_tokens) * row_bytes);
  uint4* out = reinterpret_cast<uint4*>(host + uint64_t(hs / block_tokens) * block_bytes + v_off +
                                        uint64_t(hs % block_tokens) * row_bytes);
  const uint64_t words = row_bytes / 16;
  for (uint64_t w = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; w < words;
       w += uint64_t(gridDim.x) * blockDim.x) {
    out[w] = in[w];
  }
}

// blockIdx.y strides over rows; x-blocks and threads over a row's words.
template <typename Word>
__global__ void CopyFromHost2DKernel(uint8_t* __restrict__ dst, uint64_t dst_pitch,
                                     const uint8_t* __restrict__ src, uint64_t src_pitch,
                                     uint64_t words, uint64_t rows) {
  for (uint64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const Word* in = reinterpret_cast<const Word*>(src + r * src_pitch);
    Word* out = reinterpret_cast<Word*>(dst + r * dst_pitch);
    for (uint64_t w = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; w < words;
         w += uint64_t(gridDim.x) * blockDim.x) {
      out[w] = in[w];
    }
  }
}

template <typename Word>
CudaError CopyFromHost2D(void* dst, uint64_t dst_pitch, const void* host_src, uint64_t src_pitch,
                         uint64_t width, uint64_t rows, cudaStream_t stream) {
  const uint64_t words = width / sizeof(Word);
  const unsigned x = unsigned(std::min<uint64_t>((words + kThreads - 1) / kThreads, 16));
  const unsigned y = unsigned(std::min<uint64_t>(rows, 1024));
  CopyFromHost2DKernel<Word><<<dim3(x, y), kThreads, 0, stream>>>(
      static_cast<uint8_t*>(dst), dst_pitch, static_cast<const uint8_t*>(host_src), src_pitch,
      words, rows);
  PAGED_CUDA_LAUNCHED();
  return 0;
}

}  // namespace

CudaError LaunchCopyFromHost2D(void* dst, uint64_t dst_pitch, const void* host_src,
                               uint64_t src_pitch, uint64_t width, uint64_t rows,
                               cudaStream_t stream) {
  if (width == 0 || rows == 0) return 0;
  const auto aligned = [&](uint64_t a) {
    return uint64_t(reinterpret_cast<uintptr_t>(dst)) % a == 0 &&
           uint64_t(reinterpret_cast<uintptr_t>(host_src)) % a == 0 && dst_pitch % a == 0 &&
           src_pitch % a == 0 && width % a == 0;
  };
  if (aligned(16))
    return CopyFromHost2D<uint4>(dst, dst_pitch, host_src, src_pitch, width, rows, stream);
  if (aligned(4))
    return CopyFromHost2D<uint32_t>(dst, dst_pitch, host_src, src_pitch, width, rows, stream);
  return CopyFromHost2D<uint8_t>(dst, dst_pitch, host_src, src_pitch, width, rows, stream);
}

CudaError LaunchGatherBlocks(void* dst_base, const void* host_base, uint64_t host_stride,
                             const int32_t* host_ids, const int32_t* dev_ids, int n,
                             uint64_t block_bytes, cudaStream_t stream) {
  if (n <= 0) return 0;
  const uint64_t words = block_bytes / 16;
  // Enough x-blocks to keep many reads of one block in flight; y covers the
  // blocks (at most 65535 per launch).
  const unsigned x = unsigned(std::min<uint64_t>((words + kThreads - 1) / kThreads, 8));
  for (int off = 0; off < n; off += 65535) {
    const int count = std::min(n - off, 65535);
    GatherBlocksKernel<<<dim3(x, unsigned(count)), kThreads, 0, stream>>>(
        static_cast<uint8_t*>(dst_base), static_cast<const uint8_t*>(host_base), host_stride,
        host_ids + off, dev_ids + off, words);
    PAGED_CUDA_LAUNCHED();
  }
  return 0;
}

CudaError LaunchScatterKvRows(const KvView& dev, const KvView& host, const int32_t* dev_slots,
                              const int32_t* host_slots, int n, cudaStream_t stream) {
  if (n <= 0) return 0;
  const uint64_t row_bytes = uint64_t(dev.kv_dim) * uint64_t(ElemBytes(dev.type));
  const unsigned x = unsigned(std::min<uint64_t>((row_bytes / 16 + kThreads - 1) / kThreads, 4));
  for (int off = 0; off < n; off += 65535) {
    const int count = std::min(n - off, 65535);
    ScatterRowsKernel<<<dim3(x, unsigned(count), 2), kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(dev.base), static_cast<uint8_t*>(host.base), dev.block_bytes,
        dev.block_tokens, row_bytes, dev_slots + off, host_slots + off);
    PAGED_CUDA_LAUNCHED();
  }
  return 0;
}

}  // namespace paged::cuda
