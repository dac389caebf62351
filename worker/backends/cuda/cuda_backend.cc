// CudaBackend: one device, one compute stream, a cuBLAS handle on it, and
// growable scratch for what the ops need beside their outputs (16-bit copies
// of activations, dequantized weights, split-K partials, probabilities).
//
// Errors: ops return nothing, so the first failure of any call (a launch, a
// cuBLAS call, an invalid argument) is kept and returned by the next
// Synchronize(). Ops never wait for the device; Download and Synchronize do.

#include "worker/backends/cuda/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numbers>
#include <string>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/quant.h"
#include "common/segment_layout.h"
#include "common/status.h"
#include "worker/backends/cuda/attention.h"
#include "worker/backends/cuda/block_weights.h"
#include "worker/backends/cuda/cuda_check.h"
#include "worker/backends/cuda/device_scratch.h"
#include "worker/backends/cuda/elementwise.h"
#include "worker/backends/cuda/gemv_wide.h"
#include "worker/backends/cuda/host_staging.h"
#include "worker/backends/cuda/kernel_types.h"
#include "worker/backends/cuda/kv_cache.h"
#include "worker/backends/cuda/norm_rope.h"
#include "worker/backends/cuda/op_profile.h"
#include "worker/backends/cuda/sampling.h"
#include "worker/backends/cuda/transfer.h"
#include "worker/backends/cuda/weights.h"
#include "worker/engine/rope.h"

namespace paged {
namespace {

// The kernels read the engine's structs through layout-equal mirrors.
static_assert(sizeof(AttnSeq) == sizeof(cuda::AttnSeqView));
static_assert(offsetof(AttnSeq, q_offset) == offsetof(cuda::AttnSeqView, q_offset));
static_assert(offsetof(AttnSeq, n_new) == offsetof(cuda::AttnSeqView, n_new));
static_assert(offsetof(AttnSeq, start_pos) == offsetof(cuda::AttnSeqView, start_pos));
static_assert(offsetof(AttnSeq, table_offset) == offsetof(cuda::AttnSeqView, table_offset));
static_assert(sizeof(SamplingParams) == sizeof(cuda::SamplingParamsView));
static_assert(offsetof(SamplingParams, temperature) ==
              offsetof(cuda::SamplingParamsView, temperature));
static_assert(offsetof(SamplingParams, top_k) == offsetof(cuda::SamplingParamsView, top_k));
static_assert(offsetof(SamplingParams, top_p) == offsetof(cuda::SamplingParamsView, top_p));
static_assert(offsetof(SamplingParams, seed) == offsetof(cuda::SamplingParamsView, seed));
static_assert(uint32_t(DType::kF32) == uint32_t(cuda::ElemType::kF32));
static_assert(uint32_t(DType::kF16) == uint32_t(cuda::ElemType::kF16));
static_assert(uint32_t(DType::kBF16) == uint32_t(cuda::ElemType::kBF16));
static_assert(uint32_t(DType::kI8) == uint32_t(cuda::ElemType::kI8));
static_assert(uint32_t(DType::kI4) == uint32_t(cuda::ElemType::kI4));
static_assert(uint32_t(DType::kQ4_0) == uint32_t(cuda::ElemType::kQ4_0));
static_assert(uint32_t(DType::kQ4_1) == uint32_t(cuda::ElemType::kQ4_1));
static_assert(uint32_t(DType::kQ5_0) == uint32_t(cuda::ElemType::kQ5_0));
static_assert(uint32_t(DType::kQ5_1) == uint32_t(cuda::ElemType::kQ5_1));
static_assert(uint32_t(DType::kQ8_0) == uint32_t(cuda::ElemType::kQ8_0));
static_assert(uint32_t(DType::kQ2_K) == uint32_t(cuda::ElemType::kQ2_K));
static_assert(uint32_t(DType::kQ3_K) == uint32_t(cuda::ElemType::kQ3_K));
static_assert(uint32_t(DType::kQ4_K) == uint32_t(cuda::ElemType::kQ4_K));
static_assert(uint32_t(DType::kQ5_K) == uint32_t(cuda::ElemType::kQ5_K));
static_assert(uint32_t(DType::kQ6_K) == uint32_t(cuda::ElemType::kQ6_K));
static_assert(uint32_t(DType::kIQ4_NL) == uint32_t(cuda::ElemType::kIQ4_NL));
static_assert(uint32_t(DType::kIQ4_XS) == uint32_t(cuda::ElemType::kIQ4_XS));
static_assert(uint32_t(DType::kMXFP4) == uint32_t(cuda::ElemType::kMXFP4));
static_assert(uint32_t(kLastDType) == uint32_t(cuda::kLastElemType));

// Quantized and block-format weights are dequantized this many elements at a
// time (64 MiB of f16), so the scratch never holds a whole lm_head.
constexpr int64_t kDequantChunkElems = 32ll << 20;
constexpr uint64_t kCublasWorkspaceBytes = 32ull << 20;
constexpr int kMaxRopeHalf = 512;

cuda::ElemType Elem(DType t) { return cuda::ElemType(uint32_t(t)); }

cuda::MatrixView View(const WeightRef& w) {
  return cuda::MatrixView{w.data, w.scales, Elem(w.dtype), w.group, w.rows, w.cols};
}

cuda::KvView View(const KvLayerView& kv) {
  return cuda::KvView{kv.base,   Elem(kv.dtype), kv.block_tokens,
                      kv.kv_dim, kv.block_bytes, kv.n_blocks};
}

// Whether two RoPEs have the same inverse frequencies (attn_factor is an
// argument of the kernel, not part of the table).
bool SameRope(const RopeParams& a, const RopeParams& b) {
  if (!(a.head_dim == b.head_dim && a.theta == b.theta && a.scaling == b.scaling &&
        a.factor == b.factor && a.low_freq_factor == b.low_freq_factor &&
        a.high_freq_factor == b.high_freq_factor && a.original_max_pos == b.original_max_pos &&
        a.beta_fast == b.beta_fast && a.beta_slow == b.beta_slow &&
        a.yarn_truncate == b.yarn_truncate))
    return false;
  if (a.scaling != RopeScaling::kLongRope) return true;
  const int half = std::min(a.head_dim / 2, kMaxRopeFactors);
  return std::equal(a.ext_factors, a.ext_factors + half, b.ext_factors);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device), counters_(/*zero_on_growth=*/true) {}

  ~CudaBackend() override {
    cudaSetDevice(device_);
    if (stream_ != nullptr) cudaStreamSynchronize(stream_);
    if (profile_.on()) {
      profile_.Collect();
      std::fputs(profile_.Report().c_str(), stderr);
    }
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    for (auto& c : copy_streams_) {
      if (c.stream != nullptr) cudaStreamSynchronize(c.stream);
    }
    for (cudaEvent_t e : events_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    for (auto& [p, r] : registered_) cudaHostUnregister(p);
    if (meta_ != nullptr) cudaFreeHost(meta_);
    if (down_ != nullptr) cudaFreeHost(down_);
    for (void* p : imported_) cudaIpcCloseMemHandle(p);
    for (void* p : live_) cudaFree(p);
    for (RopeTable& t : rope_tables_) {
      if (t.dev != nullptr) cudaFree(t.dev);
    }
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    if (cublas_workspace_ != nullptr) cudaFree(cublas_workspace_);
    // Scratch and the stager free themselves (members) before the stream goes.
  }

  absl::Status Init() {
    int count = 0;
    CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device_ < 0 || device_ >= count) {
      return absl::NotFoundError(
          absl::StrCat("cuda:", device_, ": no such device (", count, " visible)"));
    }
    CUDA_CHECK(cudaSetDevice(device_));
    CUDA_CHECK(cudaDeviceGetAttribute(&num_sms_, cudaDevAttrMultiProcessorCount, device_));
    {
      cudaDeviceProp prop;
      CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
      const auto* u = reinterpret_cast<const unsigned char*>(prop.uuid.bytes);
      uuid_ = "GPU-";
      for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) uuid_ += '-';
        absl::StrAppend(&uuid_, absl::Hex(u[i], absl::kZeroPad2));
      }
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    stream_owner_.stream = stream_;
    for (auto& c : copy_streams_)
      CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
    // Block ids and row slots for the transfer kernels: a ring of mapped
    // pinned memory the kernels read directly.
    CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&meta_), kMetaInts * sizeof(int32_t),
                             cudaHostAllocMapped));
    CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&meta_dev_), meta_, 0));
    CUBLAS_CHECK(cublasCreate(&cublas_));
    CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    CUDA_CHECK(cudaMalloc(&cublas_workspace_, kCublasWorkspaceBytes));
    CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, kCublasWorkspaceBytes));
    // Default math: with CUBLAS_COMPUTE_32F, f32 matrices get plain f32
    // arithmetic (no TF32) and 16-bit ones tensor cores with f32 accumulation.
    CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
    for (RopeTable& t : rope_tables_) CUDA_CHECK(cudaMalloc(&t.dev, kMaxRopeHalf * sizeof(float)));
    RETURN_IF_ERROR(stager_.Init());
    const char* sync = std::getenv("PAGED_CUDA_SYNC");
    sync_each_op_ = sync != nullptr && std::strcmp(sync, "1") == 0;
    const char* graphs = std::getenv("PAGED_CUDA_GRAPHS");
    graphs_on_ = graphs == nullptr || std::strcmp(graphs, "0") != 0;
    const char* grouped = std::getenv("PAGED_CUDA_GROUPED_EXPERTS");
    grouped_experts_ = grouped == nullptr || std::strcmp(grouped, "0") != 0;
    const char* join = std::getenv("PAGED_CUDA_GEMV_JOIN");
    join_products_ = join == nullptr || std::strcmp(join, "0") != 0;
    const char* fold = std::getenv("PAGED_CUDA_GEMV_NORM");
    fold_norm_ = fold == nullptr || std::strcmp(fold, "0") != 0;
    return absl::OkStatus();
  }

  std::string name() const override { return absl::StrCat("cuda:", device_); }

  // ---- memory ---------------------------------------------------------------

  absl::StatusOr<void*> Alloc(uint64_t bytes) override {
    Device();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, std::max<uint64_t>(bytes, 256));
    if (e != cudaSuccess) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it
      const std::string msg = absl::StrCat(name(), ": cannot allocate ", bytes,
                                           " bytes of device memory: ", cudaGetErrorString(e));
      if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
      return absl::InternalError(msg);
    }
    live_.insert(p);
    return p;
  }

  void Free(void* p) override {
    if (p == nullptr) return;
    Device();
    // Work already enqueued on any queue may still use p.
    Check(cudaStreamSynchronize(stream_), "Free: cudaStreamSynchronize");
    for (auto& c : copy_streams_)
      Check(cudaStreamSynchronize(c.stream), "Free: cudaStreamSynchronize");
    Check(cudaFree(p), "Free: cudaFree");
    live_.erase(p);
  }

  void Upload(void* dst, const void* host_src, uint64_t bytes) override {
    Device();
    Check(stager_.Copy(dst, host_src, bytes, stream_));
    AfterCopy("Upload");
  }

  void Upload2D(void* dst, uint64_t dst_pitch, const void* host_src, uint64_t src_pitch,
                uint64_t width, uint64_t rows) override {
    Device();
    Check(stager_.Copy2D(dst, dst_pitch, host_src, src_pitch, width, rows, stream_));
    AfterCopy("Upload2D");
  }

  void Download(void* host_dst, const void* src, uint64_t bytes) override {
    if (bytes == 0) return;
    Device();
    Check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_),
          "Download: cudaMemcpyAsync");
    Check(cudaStreamSynchronize(stream_), "Download: cudaStreamSynchronize");
    profile_.Collect();
  }

  void DownloadMany(const DownloadPart* parts, int n) override {
    // Into pinned memory (grown to the largest set asked for), one wait,
    // then out to the callers' buffers.
    uint64_t total = 0;
    for (int i = 0; i < n; ++i) total += AlignUp(parts[i].bytes, 256);
    if (total == 0) return;
    Device();
    if (total > down_bytes_) {
      Check(cudaStreamSynchronize(stream_), "DownloadMany: cudaStreamSynchronize");
      if (down_ != nullptr) cudaFreeHost(down_);
      down_ = nullptr;
      down_bytes_ = 0;
      const cudaError_t e = cudaMallocHost(reinterpret_cast<void**>(&down_), total);
      if (e != cudaSuccess) {  // one at a time, through pageable copies
        cudaGetLastError();
        down_ = nullptr;
        Backend::DownloadMany(parts, n);
        return;
      }
      down_bytes_ = total;
    }
    uint64_t at = 0;
    for (int i = 0; i < n; ++i) {
      if (parts[i].bytes > 0)
        Check(cudaMemcpyAsync(down_ + at, parts[i].src, parts[i].bytes, cudaMemcpyDeviceToHost,
                              stream_),
              "DownloadMany: cudaMemcpyAsync");
      at += AlignUp(parts[i].bytes, 256);
    }
    Check(cudaStreamSynchronize(stream_), "DownloadMany: cudaStreamSynchronize");
    profile_.Collect();
    at = 0;
    for (int i = 0; i < n; ++i) {
      std::memcpy(parts[i].host_dst, down_ + at, parts[i].bytes);
      at += AlignUp(parts[i].bytes, 256);
    }
  }

  absl::Status Synchronize() override {
    Device();
    Check(cudaStreamSynchronize(stream_), "Synchronize: cudaStreamSynchronize");
    profile_.Collect();
    absl::Status s = std::move(error_);
    error_ = absl::OkStatus();
    return s;
  }

  // ---- step graphs --------------------------------------------------------------
  // Stream capture of the compute stream. A recording stays valid while no
  // scratch of the backend has grown (DeviceScratch::Growths) and no RoPE
  // table was rewritten (epoch_) since: those are the addresses and data it
  // names besides the caller's. PAGED_CUDA_GRAPHS=0 turns graphs off.

  bool graphs_supported() const override { return graphs_on_ && !sync_each_op_ && !profile_.on(); }

  void BeginGraph() override {
    Device();
    clean_before_graph_ = error_.ok();
    stager_.set_refuse(true);
    Check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "BeginGraph");
  }

  absl::Status EndGraph(uint64_t key) override {
    Device();
    stager_.set_refuse(false);
    cudaGraph_t graph = nullptr;
    cudaError_t e = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (e == cudaSuccess && error_.ok()) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (e != cudaSuccess || !error_.ok()) {
      // Nothing ran: the failure is the recording's, not the step's.
      cudaGetLastError();
      absl::Status why = !error_.ok() ? error_ : Cuda(int(e), "EndGraph");
      if (clean_before_graph_) error_ = absl::OkStatus();
      if (exec != nullptr) cudaGraphExecDestroy(exec);
      return absl::Status(why.code(), absl::StrCat("recording a step graph: ", why.message()));
    }
    if (graphs_.size() >= kMaxGraphs) DropGraphs();
    Graph& g = graphs_[key];
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
    g = Graph{exec, cuda::DeviceScratch::Growths(), epoch_};
    Check(cudaGraphLaunch(exec, stream_), "cudaGraphLaunch");
    return absl::OkStatus();
  }

  bool LaunchGraph(uint64_t key) override {
    Device();
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    if (it->second.growths != cuda::DeviceScratch::Growths() || it->second.epoch != epoch_) {
      cudaGraphExecDestroy(it->second.exec);
      graphs_.erase(it);
      return false;
    }
    Check(cudaGraphLaunch(it->second.exec, stream_), "cudaGraphLaunch");
    return true;
  }

  void DropGraphs() override {
    Device();
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    graphs_.clear();
  }

  uint64_t DeviceMemoryUsed() override {
    Device();
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return uint64_t(total_b - free_b);
  }

  // ---- transfer ---------------------------------------------------------------

  absl::Status RegisterHost(void* p, uint64_t bytes, bool read_only) override {
    Device();
    // A PROT_READ mapping must be registered read-only (seen on the H200
    // host: default flags give "invalid argument").
    const unsigned flags = cudaHostRegisterMapped | (read_only ? cudaHostRegisterReadOnly : 0u);
    const cudaError_t e = cudaHostRegister(p, bytes, flags);
    if (e == cudaErrorHostMemoryAlreadyRegistered) {
      cudaGetLastError();
      return absl::OkStatus();  // someone else's registration: not ours to undo
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::UnavailableError(absl::StrCat(
          name(), ": cannot register ", FormatBytesShort(bytes), " of host memory for DMA: ",
          cudaGetErrorString(e), " (RLIMIT_MEMLOCK? LimitMEMLOCK=infinity under systemd)"));
    }
    void* dev = nullptr;
    CUDA_CHECK(cudaHostGetDevicePointer(&dev, p, 0));
    registered_[p] = Registration{bytes, dev};
    return absl::OkStatus();
  }

  void UnregisterHost(void* p) override {
    auto it = registered_.find(p);
    if (it == registered_.end()) return;
    Device();
    SyncAll("UnregisterHost");
    Check(cudaHostUnregister(p), "cudaHostUnregister");
    registered_.erase(it);
  }

  const void* MappedHostView(const void* p) const override { return DevicePtrOfHost(p); }

  void CopyIn(Queue q, void* dst, const void* host_src, uint64_t bytes) override {
    if (bytes == 0) return;
    Device();
    Check(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, StreamOf(q)), "CopyIn");
    AfterOpOn(StreamOf(q), "CopyIn");
  }

  // ---- sharing (CUDA IPC) -----------------------------------------------------

  std::string device_uuid() const override { return uuid_; }

  absl::StatusOr<std::string> ExportMemory(void* p) override {
    Device();
    cudaIpcMemHandle_t h;
    const cudaError_t e = cudaIpcGetMemHandle(&h, p);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::InternalError(
          absl::StrCat(name(), ": cudaIpcGetMemHandle: ", cudaGetErrorString(e)));
    }
    return std::string(reinterpret_cast<const char*>(&h), sizeof h);
  }

  absl::StatusOr<void*> ImportMemory(const std::string& handle) override {
    if (handle.size() != sizeof(cudaIpcMemHandle_t))
      return absl::InvalidArgumentError(absl::StrCat(name(), ": an IPC handle is ",
                                                     sizeof(cudaIpcMemHandle_t), " bytes, not ",
                                                     handle.size()));
    Device();
    cudaIpcMemHandle_t h;
    std::memcpy(&h, handle.data(), sizeof h);
    void* p = nullptr;
    // Lazy peer access: a handle exported on another GPU of the host maps too.
    const cudaError_t e = cudaIpcOpenMemHandle(&p, h, cudaIpcMemLazyEnablePeerAccess);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return absl::UnavailableError(
          absl::StrCat(name(), ": cudaIpcOpenMemHandle: ", cudaGetErrorString(e)));
    }
    imported_.insert(p);
    return p;
  }

  void CloseImported(void* p) override {
    if (imported_.erase(p) == 0) return;
    Device();
    Check(cudaStreamSynchronize(stream_), "CloseImported: cudaStreamSynchronize");
    for (auto& c : copy_streams_)
      Check(cudaStreamSynchronize(c.stream), "CloseImported: cudaStreamSynchronize");
    Check(cudaIpcCloseMemHandle(p), "CloseImported: cudaIpcCloseMemHandle");
  }

  void CopyDevice(Queue q, void* dst, const void* src, uint64_t bytes) override {
    if (bytes == 0) return;
    Device();
    // Unified addressing: a peer GPU's (imported) memory copies over the
    // GPU-to-GPU link, this GPU's within its memory.
    Check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, StreamOf(q)), "CopyDevice");
    AfterOpOn(StreamOf(q), "CopyDevice");
  }

  void CopyOut(Queue q, void* host_dst, const void* src, uint64_t bytes) override {
    if (bytes == 0) return;
    Device();
    Check(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, StreamOf(q)), "CopyOut");
    AfterOpOn(StreamOf(q), "CopyOut");
  }

  void GatherBlocksIn(Queue q, void* dst_base, const void* host_base, uint64_t host_stride,
                      const int32_t* host_ids, const int32_t* dev_ids, int n,
                      uint64_t block_bytes) override {
    if (n <= 0) return;
    const void* src = DevicePtrOfHost(host_base);
    if (block_bytes % 16 != 0 || src == nullptr) {
      Backend::GatherBlocksIn(q, dst_base, host_base, host_stride, host_ids, dev_ids, n,
                              block_bytes);
      return;
    }
    Device();
    // Long runs of consecutive blocks (a sequence's blocks, usually) go by
    // DMA, one copy per run, leaving the SMs to compute; scattered blocks go
    // through the gather kernel, one launch for all.
    if (host_stride == block_bytes) {
      std::vector<std::pair<int, int>> runs;  // (first index, length)
      for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && host_ids[j] == host_ids[j - 1] + 1 && dev_ids[j] == dev_ids[j - 1] + 1) ++j;
        runs.push_back({i, j - i});
        i = j;
      }
      if (runs.size() <= std::max<size_t>(16, size_t(n) / 4)) {
        for (auto [i, len] : runs) {
          Check(cudaMemcpyAsync(
                    static_cast<uint8_t*>(dst_base) + uint64_t(dev_ids[i]) * block_bytes,
                    static_cast<const uint8_t*>(host_base) + uint64_t(host_ids[i]) * host_stride,
                    uint64_t(len) * block_bytes, cudaMemcpyHostToDevice, StreamOf(q)),
                "GatherBlocksIn: cudaMemcpyAsync");
        }
        AfterOpOn(StreamOf(q), "GatherBlocksIn");
        return;
      }
    }
    int32_t* ids = Meta(2 * n);
    std::memcpy(ids, host_ids, size_t(n) * 4);
    std::memcpy(ids + n, dev_ids, size_t(n) * 4);
    const int32_t* d = meta_dev_ + (ids - meta_);
    Check(
        cuda::LaunchGatherBlocks(dst_base, src, host_stride, d, d + n, n, block_bytes, StreamOf(q)),
        "GatherBlocksIn");
    AfterOpOn(StreamOf(q), "GatherBlocksIn");
  }

  void ScatterKvRowsOut(Queue q, const KvLayerView& dev, const KvLayerView& host,
                        const int32_t* dev_slots, const int32_t* host_slots, int n) override {
    if (n <= 0) return;
    const uint64_t row = uint64_t(dev.kv_dim) * (dev.dtype == DType::kF32 ? 4 : 2);
    void* host_dev = const_cast<void*>(DevicePtrOfHost(host.base));
    if (row % 16 != 0 || host_dev == nullptr) {
      Backend::ScatterKvRowsOut(q, dev, host, dev_slots, host_slots, n);
      return;
    }
    Device();
    if (ScatterRunsByDma(q, dev, host, dev_slots, host_slots, n, row)) return;
    int32_t* ids = Meta(2 * n);
    std::memcpy(ids, dev_slots, size_t(n) * 4);
    std::memcpy(ids + n, host_slots, size_t(n) * 4);
    const int32_t* d = meta_dev_ + (ids - meta_);
    KvLayerView h = host;
    h.base = host_dev;
    Check(cuda::LaunchScatterKvRows(View(dev), View(h), d, d + n, n, StreamOf(q)),
          "ScatterKvRowsOut");
    AfterOpOn(StreamOf(q), "ScatterKvRowsOut");
  }

  int NewEvent() override {
    Device();
    cudaEvent_t e = nullptr;
    Check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    if (!free_events_.empty()) {
      const int id = free_events_.back();
      free_events_.pop_back();
      events_[size_t(id)] = e;
      return id;
    }
    events_.push_back(e);
    return int(events_.size()) - 1;
  }
  void DestroyEvent(int event) override {
    Device();
    cudaEventDestroy(events_[size_t(event)]);
    events_[size_t(event)] = nullptr;
    free_events_.push_back(event);
  }
  void RecordEvent(Queue q, int event) override {
    Device();
    Check(cudaEventRecord(events_[size_t(event)], StreamOf(q)), "cudaEventRecord");
  }
  void WaitEvent(Queue q, int event) override {
    Device();
    Check(cudaStreamWaitEvent(StreamOf(q), events_[size_t(event)], 0), "cudaStreamWaitEvent");
  }
  absl::Status HostWaitEvent(int event) override {
    Device();
    Check(cudaEventSynchronize(events_[size_t(event)]), "cudaEventSynchronize");
    absl::Status s = std::move(error_);
    error_ = absl::OkStatus();
    return s;
  }

  // ---- ops ------------------------------------------------------------------

  void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) override {
    Device();
    if (IsBlockFormat(table.dtype) && !RowFits(table.dtype, table.cols)) {
      return Invalid(absl::StrCat("Embedding: ", table.cols, " columns are not whole ",
                                  std::string(DTypeName(table.dtype)), " blocks"));
    }
    if (IsQuantized(table.dtype) && (table.scales == nullptr || table.group <= 0)) {
      return Invalid("Embedding: quantized table without scales or group");
    }
    Check(cuda::LaunchEmbedding(View(table), ids, n, out, stream_), "Embedding");
    AfterOp("Embedding");
  }

  void RmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out) override {
    Device();
    Check(cuda::LaunchRmsNorm(x, w, n, dim, eps, out, stream_), "RmsNorm");
    AfterOp("RmsNorm");
  }

  void MatMul(const float* x, int n, const WeightRef& w, const float* bias, float* out,
              int64_t ldo) override {
    Device();
    if (ldo != 0 && ldo < w.rows) return Invalid("MatMul: ldo smaller than the weight's rows");
    Check(DoMatMul(x, n, w, bias, out, ldo > 0 ? ldo : w.rows));
    AfterOp("MatMul", [&] { return ShapeKey("MatMul", n, &w, 1); });
  }

  // At one token row, products of 16-bit or int8 / int4 weights of one
  // type and shape class in one launch of the decode GEMV (gemv_wide.h);
  // otherwise one by one (also with PAGED_CUDA_GEMV_JOIN=0, for measuring).
  void MatMulMany(const float* x, int n, const MatMulJob* jobs, int count) override {
    // One GEMV launch for products joined, or for one whose residual add it
    // takes (cuda::GemvFusedAdd: on unless PAGED_CUDA_GEMV_ADD=0); an add it
    // does not take goes the default way, MatMul then Add.
    if ((join_products_ && count >= 2) || AnyAdds(jobs, count)) {
      if (WideGemv(x, n, jobs, count, nullptr)) return;
    }
    Backend::MatMulMany(x, n, jobs, count);
  }

  // The norm folded into the decode GEMV where it takes the products
  // (PAGED_CUDA_GEMV_NORM=0: RmsNorm's own launch, for measuring).
  void NormMatMulMany(const float* x, const NormIn& norm, int n, const MatMulJob* jobs,
                      int count) override {
    if (fold_norm_ && (join_products_ || count == 1) && norm.dim == jobs[0].w->cols &&
        WideGemv(x, n, jobs, count, &norm))
      return;
    Backend::NormMatMulMany(x, norm, n, jobs, count);
  }

  void Rope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
            const RopeParams& p) override {
    Device();
    if (p.head_dim <= 0 || p.head_dim % 2 != 0 || p.head_dim / 2 > kMaxRopeHalf) {
      return Invalid(absl::StrCat("Rope: unsupported head_dim ", p.head_dim));
    }
    // A model has one or two RoPEs (gemma3's local layers have their own):
    // each keeps its table; a new one replaces the least recently used.
    RopeTable* table = nullptr;
    for (RopeTable& t : rope_tables_) {
      if (t.valid && SameRope(p, t.params)) table = &t;
    }
    if (table == nullptr) {
      table = &rope_tables_[0];
      for (RopeTable& t : rope_tables_) {
        if (t.last_use < table->last_use) table = &t;
      }
      std::vector<float> inv(size_t(p.head_dim / 2));
      RopeInvFreq(p, inv.data());
      // Stream-ordered: Rope launches already enqueued read the old table.
      Check(stager_.Copy(table->dev, inv.data(), inv.size() * sizeof(float), stream_));
      ++epoch_;  // recorded graphs read the old table
      table->params = p;
      table->valid = true;
    }
    table->last_use = ++rope_clock_;
    Check(cuda::LaunchRope(q, k, pos, n, n_heads, n_kv_heads, p.head_dim, table->dev, p.attn_factor,
                           stream_),
          "Rope");
    AfterOp("Rope");
  }

  void KvWrite(const float* k, const float* v, const int32_t* slots, int n,
               const KvLayerView& kv) override {
    Device();
    if (kv.dtype != DType::kF32 && kv.dtype != DType::kF16 && kv.dtype != DType::kBF16) {
      return Invalid("KvWrite: KV cache dtype must be f32, f16 or bf16");
    }
    Check(cuda::LaunchKvWrite(k, v, slots, n, View(kv), stream_), "KvWrite");
    AfterOp("KvWrite");
  }

  void Attention(const float* q, const AttnSeq* seqs, int n_seqs, const int32_t* block_tables,
                 int n_heads, int n_kv_heads, int head_dim, int max_ctx, const KvLayerView& kv,
                 const AttnParams& p, float* out) override {
    Device();
    if (n_seqs <= 0) return;
    if (p.window < 0 || !(p.softcap >= 0.f) || !(p.scale >= 0.f)) {
      return Invalid(absl::StrCat("Attention: bad window ", p.window, ", soft-cap ", p.softcap,
                                  " or scale ", p.scale));
    }
    if (n_kv_heads <= 0 || n_heads % n_kv_heads != 0 || head_dim <= 0 || head_dim % 2 != 0 ||
        head_dim > cuda::kAttnMaxHeadDim || n_seqs > cuda::kAttnMaxSeqs ||
        (kv.dtype != DType::kF32 && kv.dtype != DType::kF16 && kv.dtype != DType::kBF16)) {
      return Invalid(absl::StrCat("Attention: unsupported shape (heads ", n_heads, "/", n_kv_heads,
                                  ", head_dim ", head_dim, ", ", n_seqs, " sequences, kv ",
                                  std::string(DTypeName(kv.dtype)), ")"));
    }
    cuda::AttentionArgs a;
    a.q = q;
    a.out = out;
    a.seqs = reinterpret_cast<const cuda::AttnSeqView*>(seqs);
    a.n_seqs = n_seqs;
    a.tables = block_tables;
    a.kv = View(kv);
    a.n_heads = n_heads;
    a.n_kv_heads = n_kv_heads;
    a.head_dim = head_dim;
    a.max_ctx = max_ctx;
    a.num_sms = num_sms_;
    a.scale = p.scale;
    a.softcap = p.softcap;
    a.window = p.window;
    a.sinks = p.sinks;
    a.decode_rows = p.decode_rows;
    float* partials = nullptr;
    const uint64_t partial_bytes = cuda::AttentionPartialBytes(a);
    if (partial_bytes > 0) {
      auto p = partials_.Get(partial_bytes, stream_);
      if (!p.ok()) return Check(p.status());
      partials = static_cast<float*>(*p);
    }
    auto c = counters_.Get(uint64_t(cuda::AttentionCounterCount(a)) * sizeof(int32_t), stream_);
    if (!c.ok()) return Check(c.status());
    Check(cuda::LaunchAttention(a, partials, static_cast<int32_t*>(*c), stream_), "Attention");
    AfterOp("Attention", [&] {
      return absl::StrCat(p.decode_rows ? "Attention decode rows" : "Attention", ", ", n_seqs,
                          " seqs");
    });
  }

  void SwiGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    Device();
    Check(cuda::LaunchSwiGlu(gate, up, n, dim, out, stream_), "SwiGlu");
    AfterOp("SwiGlu");
  }

  void GeGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    Device();
    Check(cuda::LaunchGeGlu(gate, up, n, dim, out, stream_), "GeGlu");
    AfterOp("GeGlu");
  }

  void SwiGluOai(const float* gate, const float* up, int n, int dim, float alpha, float limit,
                 float* out) override {
    Device();
    Check(cuda::LaunchSwiGluOai(gate, up, n, dim, alpha, limit, out, stream_), "SwiGluOai");
    AfterOp("SwiGluOai");
  }

  void Scale(float* x, int64_t count, float s) override {
    Device();
    Check(cuda::LaunchScale(x, count, s, stream_), "Scale");
    AfterOp("Scale");
  }

  void SoftCap(float* x, int64_t count, float cap) override {
    Device();
    if (!(cap > 0.f)) return Invalid(absl::StrCat("SoftCap: cap ", cap, " must be positive"));
    Check(cuda::LaunchSoftCap(x, count, cap, stream_), "SoftCap");
    AfterOp("SoftCap");
  }

  void Add(float* x, const float* y, int64_t count) override {
    Device();
    Check(cuda::LaunchAdd(x, y, count, stream_), "Add");
    AfterOp("Add");
  }

  void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) override {
    Device();
    Check(cuda::LaunchGatherRows(x, rows, n, dim, out, stream_), "GatherRows");
    AfterOp("GatherRows");
  }

  void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                      float* out) override {
    Device();
    Check(cuda::LaunchScatterAddRows(y, rows, w, n, dim, out, stream_), "ScatterAddRows");
    AfterOp("ScatterAddRows");
  }

  void CombineRows(const float* y, const float* w, const int32_t* tokens, const int32_t* begin,
                   const int32_t* pos, int n_tokens, int dim, float* out) override {
    Device();
    Check(cuda::LaunchCombineRows(y, w, tokens, begin, pos, n_tokens, dim, out, stream_),
          "CombineRows");
    AfterOp("CombineRows");
  }

  // The tasks whose matrices the grouped GEMV reads, with at most
  // kGroupedMaxRows rows, go in one launch per product and chunk size (their
  // rows cut into chunks of at most 8); the rest one by one (Backend's).
  void ExpertFfn(const float* x, const ExpertTask* tasks, int n_tasks, const GluAct& act,
                 float* gate, float* up, float* y) override {
    if (n_tasks <= 0) return;
    if (!grouped_experts_ || !cuda::FusedGemvEnabled())
      return Backend::ExpertFfn(x, tasks, n_tasks, act, gate, up, y);
    Device();
    const int64_t hidden = tasks[0].gate.cols, ffn = tasks[0].gate.rows;
    auto groupable = [&](const WeightRef& w) {
      const int align = cuda::GroupedGemvAlign(Elem(w.dtype), w.cols);
      return align > 0 && reinterpret_cast<uintptr_t>(w.data) % uint64_t(align) == 0;
    };
    // x and the scratch rows start 16-byte aligned only with these widths.
    const bool widths =
        hidden % 4 == 0 && ffn % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
        reinterpret_cast<uintptr_t>(gate) % 16 == 0 && reinterpret_cast<uintptr_t>(up) % 16 == 0;
    single_.clear();
    gemv_.clear();
    launches_.clear();
    // Launch lists: [0] gate and up, [1] down; one per (type, chunk rows).
    std::map<std::tuple<int, uint32_t, int>, std::vector<cuda::GemvTask>> lists;
    for (int i = 0; i < n_tasks; ++i) {
      const ExpertTask& t = tasks[i];
      if (t.n <= 0) continue;
      if (!widths || t.n > kGroupedMaxRows || !groupable(t.gate) || !groupable(t.up) ||
          !groupable(t.down) || t.gate.rows != ffn || t.up.rows != ffn || t.down.cols != ffn ||
          t.gate.cols != hidden || t.up.cols != hidden || t.down.rows != hidden) {
        single_.push_back(t);
        continue;
      }
      for (int c0 = 0; c0 < t.n; c0 += cuda::kFusedGemvMaxRows) {
        const int nc = std::min(t.n - c0, cuda::kFusedGemvMaxRows);
        const int64_t r = t.row0 + c0;
        lists[{0, uint32_t(t.gate.dtype), nc}].push_back(
            {t.gate.data, t.gate_b, x + r * hidden, gate + r * ffn});
        lists[{0, uint32_t(t.up.dtype), nc}].push_back(
            {t.up.data, t.up_b, x + r * hidden, up + r * ffn});
        lists[{1, uint32_t(t.down.dtype), nc}].push_back(
            {t.down.data, t.down_b, gate + r * ffn, y + r * hidden});
      }
    }
    for (auto& [key, list] : lists) {
      launches_.push_back({std::get<0>(key), cuda::ElemType(std::get<1>(key)), std::get<2>(key),
                           int(gemv_.size()), int(list.size())});
      gemv_.insert(gemv_.end(), list.begin(), list.end());
    }
    const cuda::GemvTask* table = nullptr;
    if (!gemv_.empty()) {
      const uint64_t bytes = gemv_.size() * sizeof(cuda::GemvTask);
      auto p = gemv_tasks_.Get(bytes, stream_);
      if (!p.ok()) return Check(p.status());
      Check(stager_.Copy(*p, gemv_.data(), bytes, stream_));
      table = static_cast<const cuda::GemvTask*>(*p);
    }
    auto launch = [&](int phase) {
      for (const GroupedLaunch& l : launches_) {
        if (l.phase != phase) continue;
        const int64_t rows = phase == 0 ? ffn : hidden, cols = phase == 0 ? hidden : ffn;
        Check(cuda::LaunchGroupedGemv(l.type, rows, cols, table + l.first, l.count, l.n, rows,
                                      stream_),
              "ExpertFfn: grouped GEMV");
      }
    };
    launch(0);
    ExpertGateUp(x, single_.data(), int(single_.size()), gate, up);
    GluRuns(tasks, n_tasks, act, gate, up);
    launch(1);
    ExpertDown(single_.data(), int(single_.size()), gate, y);
    AfterOp("ExpertFfn");
  }

  void Sample(const float* logits, int n, int vocab, const SamplingParams* params,
              const int32_t* positions, int32_t* out_tokens) override {
    Device();
    if (n <= 0) return;
    float* scratch = nullptr;
    const uint64_t bytes = cuda::SampleScratchBytes(n, vocab);
    if (bytes > 0) {
      auto p = probs_.Get(bytes, stream_);
      if (!p.ok()) return Check(p.status());
      scratch = static_cast<float*>(*p);
    }
    Check(cuda::LaunchSample(logits, n, vocab,
                             reinterpret_cast<const cuda::SamplingParamsView*>(params), positions,
                             scratch, out_tokens, stream_),
          "Sample");
    AfterOp("Sample");
  }

 private:
  absl::Status DoMatMul(const float* x, int n, const WeightRef& w, const float* bias, float* out,
                        int64_t ldo) {
    if (n <= 0 || w.rows <= 0) return absl::OkStatus();
    if (w.cols <= 0 || w.rows > INT32_MAX || w.cols > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("MatMul: unsupported weight shape [", w.rows, ", ", w.cols, "]"));
    }
    const int64_t in_elems = int64_t(n) * w.cols;
    switch (w.dtype) {
      case DType::kF32:
        RETURN_IF_ERROR(Gemm(CUDA_R_32F, w.data, w.rows, w.cols, x, n, out, ldo));
        break;
      case DType::kF16:
      case DType::kBF16: {
        // A token row: the weights read 16 bytes at a time, x as f32, bias
        // added (weights.h); elsewhere cuBLAS on x cast to the weights' type.
        if (absl::Status s; FusedGemv(x, n, w, bias, out, ldo, &s)) return s;
        auto x16 = act16_.Get(uint64_t(in_elems) * 2, stream_);
        if (!x16.ok()) return x16.status();
        RETURN_IF_ERROR(
            Cuda(cuda::LaunchCastF32(x, in_elems, Elem(w.dtype), *x16, stream_), "MatMul: cast"));
        const cudaDataType t = w.dtype == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
        RETURN_IF_ERROR(Gemm(t, w.data, w.rows, w.cols, *x16, n, out, ldo));
        break;
      }
      case DType::kI8:
      case DType::kI4:
        if (w.scales == nullptr || w.group <= 0) {
          return absl::InvalidArgumentError("MatMul: quantized weight without scales or group");
        }
        return QuantizedMatMul(x, n, w, bias, out, ldo);
      default:
        if (!IsBlockFormat(w.dtype)) {
          return absl::InvalidArgumentError(absl::StrCat("MatMul: the CUDA backend cannot read ",
                                                         std::string(DTypeName(w.dtype)),
                                                         " weights"));
        }
        if (!RowFits(w.dtype, w.cols)) {
          return absl::InvalidArgumentError(
              absl::StrCat("MatMul: ", w.cols, " columns are not whole ",
                           std::string(DTypeName(w.dtype)), " blocks"));
        }
        return QuantizedMatMul(x, n, w, bias, out, ldo);
    }
    if (bias != nullptr) {
      RETURN_IF_ERROR(
          Cuda(cuda::LaunchAddBias(out, bias, n, w.rows, ldo, stream_), "MatMul: bias"));
    }
    return absl::OkStatus();
  }

  // The fused decode GEMV (bias included) where it applies (weights.h):
  // true once it ran or failed to launch (*status says which); false: the
  // caller takes cuBLAS.
  bool FusedGemv(const float* x, int n, const WeightRef& w, const float* bias, float* out,
                 int64_t ldo, absl::Status* status) {
    if (n > cuda::kFusedGemvMaxRows) return false;
    const cuda::CudaError e = cuda::LaunchGemv(View(w), x, n, bias, out, ldo, stream_);
    if (e == int(cudaErrorNotSupported)) return false;
    *status = Cuda(e, "MatMul: fused GEMV");
    return true;
  }

  // int8 / int4 and the block formats (bias included). Decode rows (n <= 8):
  // the dequantization fused into the product where LaunchGemv runs
  // (PAGED_CUDA_FUSED_GEMV=0 turns it off, weights.h). Otherwise rows of W are
  // dequantized to f16 a chunk at a time and multiplied by x cast to f16 on
  // cuBLAS, each chunk into its columns of out.
  absl::Status QuantizedMatMul(const float* x, int n, const WeightRef& w, const float* bias,
                               float* out, int64_t ldo) {
    if (absl::Status s; FusedGemv(x, n, w, bias, out, ldo, &s)) return s;
    const int64_t in_elems = int64_t(n) * w.cols;
    auto x16 = act16_.Get(uint64_t(in_elems) * 2, stream_);
    if (!x16.ok()) return x16.status();
    RETURN_IF_ERROR(Cuda(cuda::LaunchCastF32(x, in_elems, cuda::ElemType::kF16, *x16, stream_),
                         "MatMul: cast"));
    const int64_t chunk_rows = std::clamp<int64_t>(kDequantChunkElems / w.cols, 1, w.rows);
    auto w16 = weight16_.Get(uint64_t(chunk_rows * w.cols) * 2, stream_);
    if (!w16.ok()) return w16.status();
    const uint64_t row_bytes = PayloadBytes(w.dtype, 1, uint64_t(w.cols));
    const int64_t groups = IsQuantized(w.dtype) ? GroupsPerRow(w.cols, w.group) : 0;
    for (int64_t r0 = 0; r0 < w.rows; r0 += chunk_rows) {
      const int64_t rc = std::min(chunk_rows, w.rows - r0);
      cuda::MatrixView part = View(w);
      part.data = static_cast<const uint8_t*>(w.data) + uint64_t(r0) * row_bytes;
      if (part.scales != nullptr)
        part.scales = static_cast<const uint16_t*>(w.scales) + r0 * groups;
      part.rows = rc;
      RETURN_IF_ERROR(Cuda(cuda::LaunchDequantizeF16(part, *w16, stream_), "MatMul: dequantize"));
      // Rows [r0, r0 + rc) of W give columns [r0, r0 + rc) of out.
      RETURN_IF_ERROR(Gemm(CUDA_R_16F, *w16, rc, w.cols, *x16, n, out + r0, ldo));
    }
    if (bias != nullptr) {
      RETURN_IF_ERROR(
          Cuda(cuda::LaunchAddBias(out, bias, n, w.rows, ldo, stream_), "MatMul: bias"));
    }
    return absl::OkStatus();
  }

  // out[n, ldc] (columns [0, m) of it) = x[n, k] @ W[m, k]^T, f32 accumulation.
  // Row-major matrices are column-major transposes: out^T (m x n, ld ldc) =
  // W^T^T x^T, where W as stored is the column-major k x m matrix W^T (ld k)
  // and x the column-major k x n matrix x^T (ld k). So C = op(A) B with A = W
  // transposed (CUBLAS_OP_T) and B = x as is.
  absl::Status Gemm(cudaDataType ab_type, const void* w, int64_t m, int64_t k, const void* x, int n,
                    float* out, int64_t ldc) {
    const float alpha = 1.f, beta = 0.f;
    CUBLAS_CHECK(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, int(m), n, int(k), &alpha, w,
                              ab_type, int(k), x, ab_type, int(k), &beta, out, CUDA_R_32F, int(ldc),
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return absl::OkStatus();
  }

  absl::Status Cuda(cuda::CudaError e, const char* what) {
    if (e == 0) return absl::OkStatus();
    return cuda::CudaErrorStatus(cudaError_t(e), what, __FILE__, __LINE__);
  }

  void Device() {
    // Cheap when already current; the engine may call from another thread.
    cudaSetDevice(device_);
    profile_.Begin(stream_);
  }

  void Check(absl::Status s) {
    if (!s.ok() && error_.ok()) error_ = std::move(s);
  }
  void Check(cuda::CudaError e, const char* what) { Check(Cuda(e, what)); }
  void Check(cudaError_t e, const char* what) { Check(Cuda(int(e), what)); }
  void Invalid(std::string msg) {
    Check(absl::InvalidArgumentError(absl::StrCat(name(), ": ", msg)));
  }
  // The products in one launch of the decode GEMV (gemv_wide.h), with the
  // norm folded in when given; false (nothing enqueued) where it does not
  // take them.
  static bool AnyAdds(const MatMulJob* jobs, int count) {
    return std::any_of(jobs, jobs + count, [](const MatMulJob& j) { return j.add_to != nullptr; });
  }
  bool WideGemv(const float* x, int n, const MatMulJob* jobs, int count, const NormIn* norm) {
    const bool adds = AnyAdds(jobs, count);
    if (n != 1 || count < 1 || count > cuda::kGemvWideMaxJobs || (adds && !cuda::GemvFusedAdd()) ||
        !cuda::FusedGemvEnabled())
      return false;
    Device();
    cuda::GemvWideJob wide[cuda::kGemvWideMaxJobs];
    for (int j = 0; j < count; ++j)
      wide[j] = {View(*jobs[j].w), jobs[j].bias, jobs[j].out, jobs[j].add_to};
    const cuda::CudaError e =
        cuda::LaunchGemvWideMany(wide, count, x, stream_, norm != nullptr ? norm->w : nullptr,
                                 norm != nullptr ? norm->eps : 0.f);
    if (e == int(cudaErrorNotSupported)) return false;
    Check(Cuda(e, "MatMulMany: fused GEMV"));
    AfterOp("MatMulMany", [&] {
      int64_t rows = 0;
      for (int j = 0; j < count; ++j) rows += jobs[j].w->rows;
      WeightRef all = *jobs[0].w;
      all.rows = rows;
      return ShapeKey(
          norm != nullptr ? (adds ? "norm+GEMV+add" : "norm+GEMV") : (adds ? "GEMV+add" : "GEMV"),
          n, &all, count);
    });
    return true;
  }

  static std::string ShapeKey(const char* op, int n, const WeightRef* w, int joined) {
    std::string k = absl::StrCat(op, " ", std::string(DTypeName(w->dtype)), " ", w->rows, "x",
                                 w->cols, " n=", n);
    if (joined > 1) absl::StrAppend(&k, " (", joined, " joined)");
    return k;
  }

  // PAGED_CUDA_SYNC=1: wait for the op and report a fault where it happens.
  void AfterOp(const char* op) {
    AfterOp(op, [op] { return std::string(op); });
  }
  // A staged copy: not timed by the profile, whose hold keeps the stager's
  // host side waiting on the stream (the pair would time that wait).
  void AfterCopy(const char* op) { AfterOpOn(stream_, op); }
  // PAGED_CUDA_PROFILE=1 times the op under key() (op_profile.h).
  template <typename Key>
  void AfterOp(const char* op, Key key) {
    if (profile_.on()) profile_.End(stream_, key());
    AfterOpOn(stream_, op);
  }

  cudaStream_t StreamOf(Queue q) const {
    switch (q) {
      case Queue::kCopyIn:
        return copy_streams_[0].stream;
      case Queue::kWriteBack:
        return copy_streams_[1].stream;
      default:
        return stream_;
    }
  }

  void SyncAll(const char* what) {
    Check(cudaStreamSynchronize(stream_), what);
    for (auto& c : copy_streams_) Check(cudaStreamSynchronize(c.stream), what);
  }

  void AfterOpOn(cudaStream_t st, const char* op) {
    if (!sync_each_op_) return;
    const cudaError_t e = cudaStreamSynchronize(st);
    if (e != cudaSuccess) Check(e, absl::StrCat(op, " (PAGED_CUDA_SYNC)").c_str());
  }

  // New KV rows in long runs of consecutive slots (a prefill chunk) go back
  // by DMA: whole blocks in one copy per run, partial blocks as a K and a V
  // copy. Returns false (nothing issued) when the rows are too scattered for
  // that to beat the scatter kernel (decode: one row per sequence).
  bool ScatterRunsByDma(Queue q, const KvLayerView& dev, const KvLayerView& host,
                        const int32_t* dev_slots, const int32_t* host_slots, int n, uint64_t row) {
    const int bt = dev.block_tokens;
    struct Copy {
      uint64_t dst, src, bytes;
    };
    std::vector<Copy> copies;
    auto at = [&](const KvLayerView& v, int32_t slot) {
      return uint64_t(slot / bt) * v.block_bytes + uint64_t(slot % bt) * row;
    };
    const uint64_t v_off = uint64_t(bt) * row;
    for (int i = 0; i < n;) {
      if (dev_slots[i] % bt != host_slots[i] % bt) return false;
      int j = i + 1;
      while (j < n && dev_slots[j] == dev_slots[j - 1] + 1 &&
             host_slots[j] == host_slots[j - 1] + 1)
        ++j;
      // Split [i, j) at block boundaries; merge whole blocks that follow
      // each other on both sides.
      for (int k = i; k < j;) {
        const int in_block = std::min(j - k, bt - dev_slots[k] % bt);
        if (in_block == bt && !copies.empty() && copies.back().bytes % dev.block_bytes == 0 &&
            copies.back().dst + copies.back().bytes == at(host, host_slots[k]) &&
            copies.back().src + copies.back().bytes == at(dev, dev_slots[k])) {
          copies.back().bytes += dev.block_bytes;
        } else if (in_block == bt) {
          copies.push_back({at(host, host_slots[k]), at(dev, dev_slots[k]), dev.block_bytes});
        } else {
          const uint64_t bytes = uint64_t(in_block) * row;
          copies.push_back({at(host, host_slots[k]), at(dev, dev_slots[k]), bytes});
          copies.push_back({at(host, host_slots[k]) + v_off, at(dev, dev_slots[k]) + v_off, bytes});
        }
        k += in_block;
      }
      i = j;
    }
    if (copies.size() > std::max<size_t>(16, size_t(n) / 8)) return false;
    for (const Copy& c : copies) {
      Check(cudaMemcpyAsync(static_cast<uint8_t*>(host.base) + c.dst,
                            static_cast<const uint8_t*>(dev.base) + c.src, c.bytes,
                            cudaMemcpyDeviceToHost, StreamOf(q)),
            "ScatterKvRowsOut: cudaMemcpyAsync");
    }
    AfterOpOn(StreamOf(q), "ScatterKvRowsOut");
    return true;
  }

  // The device-usable address of a pointer into registered host memory.
  const void* DevicePtrOfHost(const void* h) const {
    const auto* p = static_cast<const uint8_t*>(h);
    auto it = registered_.upper_bound(const_cast<void*>(h));
    if (it == registered_.begin()) return nullptr;
    --it;
    const auto* base = static_cast<const uint8_t*>(it->first);
    if (p < base || p >= base + it->second.bytes) return nullptr;
    return static_cast<const uint8_t*>(it->second.dev) + (p - base);
  }

  // n ints of the metadata ring; wrapping waits for the copy queues that
  // may still read the old contents.
  int32_t* Meta(int n) {
    if (meta_pos_ + uint64_t(n) > kMetaInts) {
      for (auto& c : copy_streams_) Check(cudaStreamSynchronize(c.stream), "metadata ring");
      meta_pos_ = 0;
    }
    int32_t* p = meta_ + meta_pos_;
    meta_pos_ += uint64_t(n);
    return p;
  }

  static std::string FormatBytesShort(uint64_t b) { return absl::StrCat(b >> 20, " MiB"); }

  struct Registration {
    uint64_t bytes;
    void* dev;
  };
  static constexpr uint64_t kMetaInts = 4ull << 20;  // 16 MiB of ids

  // Destroys the stream last, after every member that enqueues on it.
  struct StreamOwner {
    cudaStream_t stream = nullptr;
    ~StreamOwner() {
      if (stream != nullptr) cudaStreamDestroy(stream);
    }
  };

  const int device_;
  int num_sms_ = 1;
  bool sync_each_op_ = false;
  // Step graphs by key, with the scratch growths and RoPE epoch they saw.
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t growths = 0, epoch = 0;
  };
  static constexpr size_t kMaxGraphs = 64;
  std::unordered_map<uint64_t, Graph> graphs_;
  bool graphs_on_ = true;  // PAGED_CUDA_GRAPHS=0: off
  bool clean_before_graph_ = true;
  uint64_t epoch_ = 0;
  StreamOwner stream_owner_;     // declared before what uses the stream: destroyed after it
  StreamOwner copy_streams_[2];  // copy-in, write-back
  cudaStream_t stream_ = nullptr;
  std::vector<cudaEvent_t> events_;  // by id; null once destroyed
  std::vector<int> free_events_;     // ids of destroyed events, reused
  std::map<void*, Registration> registered_;
  int32_t* meta_ = nullptr;      // pinned, mapped
  int32_t* meta_dev_ = nullptr;  // its device address
  uint64_t meta_pos_ = 0;
  uint8_t* down_ = nullptr;  // pinned: DownloadMany's staging
  uint64_t down_bytes_ = 0;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;
  cuda::HostStager stager_;
  cuda::DeviceScratch act16_;     // x cast to f16/bf16 [n, cols]
  cuda::DeviceScratch weight16_;  // dequantized weight rows, f16
  cuda::DeviceScratch partials_;  // attention split-K partials
  cuda::DeviceScratch counters_;  // attention split-K counters (kept zero)
  // ExpertFfn: its grouped GEMV tasks (device), and the host lists.
  struct GroupedLaunch {
    int phase;  // 0: gate and up, 1: down
    cuda::ElemType type;
    int n, first, count;
  };
  static constexpr int kGroupedMaxRows = 32;
  cuda::DeviceScratch gemv_tasks_;
  std::vector<cuda::GemvTask> gemv_;
  std::vector<GroupedLaunch> launches_;
  std::vector<ExpertTask> single_;
  bool grouped_experts_ = true;  // PAGED_CUDA_GROUPED_EXPERTS=0: one task at a time
  bool join_products_ = true;    // PAGED_CUDA_GEMV_JOIN=0: MatMulMany one by one
  bool fold_norm_ = true;        // PAGED_CUDA_GEMV_NORM=0: NormMatMulMany's RmsNorm launched
  cuda::DeviceScratch probs_;    // sampling probabilities [n, vocab]
  // RoPE inverse frequencies [head_dim / 2] of the last RoPEs used.
  struct RopeTable {
    float* dev = nullptr;  // [kMaxRopeHalf]
    RopeParams params;
    bool valid = false;
    uint64_t last_use = 0;
  };
  RopeTable rope_tables_[4];
  uint64_t rope_clock_ = 0;
  std::unordered_set<void*> live_;      // Alloc'd and not yet freed
  std::unordered_set<void*> imported_;  // ImportMemory'd and not yet closed
  std::string uuid_;                    // "GPU-xxxxxxxx-xxxx-..."
  absl::Status error_;                  // first failure since the last Synchronize
  cuda::OpProfile profile_;             // PAGED_CUDA_PROFILE=1
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeCudaBackend(int device) {
  auto b = std::make_unique<CudaBackend>(device);
  const absl::Status s = b->Init();
  if (!s.ok()) {
    cudaGetLastError();
    return absl::Status(s.code(), absl::StrCat("cuda:", device, ": ", s.message()));
  }
  return std::unique_ptr<Backend>(std::move(b));
}

}  // namespace paged
