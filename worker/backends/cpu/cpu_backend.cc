// CpuBackend: host memory and a thread pool (the executor's, when it has one);
// every op runs at once on the calling thread (and the pool), so Synchronize
// has nothing to wait for.

#include "worker/backends/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "worker/backends/cpu/cpu_kernels.h"
#include "worker/backends/cpu/cpu_queues.h"
#include "worker/backends/cpu/thread_pool.h"

namespace paged {
namespace {

constexpr uint64_t kAlignment = 64;
// Automatic thread counts stop here: the models the CPU backend runs are
// small, and more threads than this mostly add wake-up latency.
constexpr int kMaxAutoThreads = 32;

class CpuBackend final : public Backend {
 public:
  CpuBackend(int threads, std::string device_label, std::unique_ptr<HostExecutor> matmul)
      : pool_(PoolFor(threads, matmul.get())),
        label_(std::move(device_label)),
        matmul_(std::move(matmul)) {}
  ~CpuBackend() override = default;  // queues_ drains its threads first

  std::string name() const override { return "cpu"; }
  bool shares_host_memory() const override { return true; }

  absl::StatusOr<void*> Alloc(uint64_t bytes) override {
    const uint64_t rounded =
        std::max<uint64_t>(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    void* p = std::aligned_alloc(kAlignment, rounded);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cpu backend: cannot allocate ", bytes, " bytes"));
    }
    return p;
  }
  void Free(void* p) override { std::free(p); }

  // Sharing within this process only ("device" memory is private heap
  // memory): lets two pagers of one process share layers, as workers on one
  // GPU do through CUDA IPC. The exporter's memory must outlive importers.
  std::string device_uuid() const override {
    return label_.empty() ? ProcessPrefix() : absl::StrCat(ProcessPrefix(), "-", label_);
  }
  absl::StatusOr<std::string> ExportMemory(void* p) override {
    return absl::StrCat(ProcessPrefix(), ":", reinterpret_cast<uintptr_t>(p));
  }
  absl::StatusOr<void*> ImportMemory(const std::string& handle) override {
    const std::string prefix = ProcessPrefix() + ":";
    uintptr_t v = 0;
    if (handle.rfind(prefix, 0) != 0 || !absl::SimpleAtoi(handle.substr(prefix.size()), &v) ||
        v == 0)
      return absl::FailedPreconditionError(absl::StrCat("cpu backend: cannot import \"", handle,
                                                        "\" (sharing works within one process)"));
    return reinterpret_cast<void*>(v);
  }
  void Upload(void* dst, const void* host_src, uint64_t bytes) override {
    if (bytes > 0) std::memcpy(dst, host_src, bytes);
  }
  void Download(void* host_dst, const void* src, uint64_t bytes) override {
    if (bytes > 0) std::memcpy(host_dst, src, bytes);
  }
  absl::Status Synchronize() override { return absl::OkStatus(); }

  // Transfer: "device" memory is host memory, so the copies are memcpy, run
  // on the copy queues' threads to overlap with compute as DMA would.
  void CopyIn(Queue q, void* dst, const void* host_src, uint64_t bytes) override {
    queues_.Enqueue(int(q), [=] { std::memcpy(dst, host_src, bytes); });
  }
  void GatherBlocksIn(Queue q, void* dst_base, const void* host_base, uint64_t host_stride,
                      const int32_t* host_ids, const int32_t* dev_ids, int n,
                      uint64_t block_bytes) override {
    std::vector<int32_t> h(host_ids, host_ids + n), d(dev_ids, dev_ids + n);
    queues_.Enqueue(int(q), [=, h = std::move(h), d = std::move(d)] {
      for (size_t i = 0; i < h.size(); ++i) {
        std::memcpy(static_cast<uint8_t*>(dst_base) + uint64_t(d[i]) * block_bytes,
                    static_cast<const uint8_t*>(host_base) + uint64_t(h[i]) * host_stride,
                    block_bytes);
      }
    });
  }
  void ScatterKvRowsOut(Queue q, const KvLayerView& dev, const KvLayerView& host,
                        const int32_t* dev_slots, const int32_t* host_slots, int n) override {
    std::vector<int32_t> d(dev_slots, dev_slots + n), h(host_slots, host_slots + n);
    queues_.Enqueue(int(q), [=, d = std::move(d), h = std::move(h)] {
      const uint64_t row = uint64_t(dev.kv_dim) * (dev.dtype == DType::kF32 ? 4 : 2);
      const uint64_t v_off = uint64_t(dev.block_tokens) * row;
      auto at = [&](const KvLayerView& v, int32_t slot) {
        return static_cast<uint8_t*>(v.base) + uint64_t(slot / v.block_tokens) * v.block_bytes +
               uint64_t(slot % v.block_tokens) * row;
      };
      for (size_t i = 0; i < d.size(); ++i) {
        std::memcpy(at(host, h[i]), at(dev, d[i]), row);
        std::memcpy(at(host, h[i]) + v_off, at(dev, d[i]) + v_off, row);
      }
    });
  }
  int NewEvent() override { return queues_.NewEvent(); }
  void RecordEvent(Queue q, int event) override { queues_.Record(int(q), event); }
  void WaitEvent(Queue q, int event) override { queues_.Wait(int(q), event); }
  absl::Status HostWaitEvent(int event) override {
    queues_.HostWait(event);
    return absl::OkStatus();
  }

  void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) override {
    cpu::Embedding(pool_, table, ids, n, out);
  }
  void RmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out) override {
    cpu::RmsNorm(pool_, x, w, n, dim, eps, out);
  }
  void MatMul(const float* x, int n, const WeightRef& w, const float* bias, float* out,
              int64_t ldo) override {
    if (matmul_ != nullptr && matmul_->Supports(w.dtype)) {
      matmul_->MatMul(x, n, w, 0, w.rows, bias, out, ldo > 0 ? ldo : w.rows);
      return;
    }
    cpu::MatMul(pool_, x, n, w, bias, out, ldo);
  }
  void Rope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
            const RopeParams& p) override {
    cpu::Rope(pool_, q, k, pos, n, n_heads, n_kv_heads, p);
  }
  void KvWrite(const float* k, const float* v, const int32_t* slots, int n,
               const KvLayerView& kv) override {
    cpu::KvWrite(k, v, slots, n, kv);
  }
  void Attention(const float* q, const AttnSeq* seqs, int n_seqs, const int32_t* block_tables,
                 int n_heads, int n_kv_heads, int head_dim, int max_ctx, const KvLayerView& kv,
                 const AttnParams& p, float* out) override {
    // The executor's vectorized kernel where there is one (--device=cpu),
    // else the reference (cpu-ref).
    if (matmul_ != nullptr && matmul_->Attention(q, seqs, n_seqs, block_tables, n_heads, n_kv_heads,
                                                 head_dim, max_ctx, kv, p, out)) {
      return;
    }
    cpu::Attention(pool_, q, seqs, n_seqs, block_tables, n_heads, n_kv_heads, head_dim, max_ctx, kv,
                   p, out);
  }
  void SwiGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    cpu::SwiGlu(pool_, gate, up, n, dim, out);
  }
  void GeGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    cpu::GeGlu(pool_, gate, up, n, dim, out);
  }
  void SwiGluOai(const float* gate, const float* up, int n, int dim, float alpha, float limit,
                 float* out) override {
    cpu::SwiGluOai(pool_, gate, up, n, dim, alpha, limit, out);
  }
  void Scale(float* x, int64_t count, float s) override { cpu::Scale(x, count, s); }
  void SoftCap(float* x, int64_t count, float cap) override { cpu::SoftCap(x, count, cap); }
  void Add(float* x, const float* y, int64_t count) override { cpu::Add(x, y, count); }
  void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) override {
    cpu::GatherRows(x, rows, n, dim, out);
  }
  void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                      float* out) override {
    cpu::ScatterAddRows(y, rows, w, n, dim, out);
  }
  void CombineRows(const float* y, const float* w, const int32_t* tokens, const int32_t* begin,
                   const int32_t* pos, int n_tokens, int dim, float* out) override {
    cpu::CombineRows(y, w, tokens, begin, pos, n_tokens, dim, out);
  }
  void Sample(const float* logits, int n, int vocab, const SamplingParams* params,
              const int32_t* positions, int32_t* out_tokens) override {
    cpu::Sample(pool_, logits, n, vocab, params, positions, out_tokens);
  }

 private:
  static std::string ProcessPrefix() { return absl::StrCat("cpu-pid", getpid()); }
  // With an executor, the other ops run on its threads too: one set of
  // threads for the whole step, which stay awake between ops (a decode
  // step's ops come microseconds apart; a second pool's workers would sleep
  // through the products and take a wake-up each op). Without one, our own.
  static ThreadPool PoolFor(int threads, HostExecutor* matmul) {
    if (matmul == nullptr) return ThreadPool(threads);
    return ThreadPool(
        [matmul](int64_t begin, int64_t end, int64_t grain, const ThreadPool::RangeFn& fn) {
          matmul->ParallelFor(begin, end, grain, fn);
        });
  }

  ThreadPool pool_;                       // on matmul_'s threads when there is one
  std::string label_;                     // tells apart "devices" of one process (tests of peers)
  std::unique_ptr<HostExecutor> matmul_;  // the matrix products; null: the reference
  cpu::CopyQueues queues_;
};

}  // namespace

std::unique_ptr<Backend> MakeCpuBackend(int threads, const std::string& device_label,
                                        std::unique_ptr<HostExecutor> matmul) {
  if (threads <= 0) {
    threads = std::clamp(int(std::thread::hardware_concurrency()), 1, kMaxAutoThreads);
  }
  return std::make_unique<CpuBackend>(threads, device_label, std::move(matmul));
}

}  // namespace paged
