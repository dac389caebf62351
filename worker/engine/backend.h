// The compute backend: memory and the operations of the forward pass.
// Implemented by the CPU reference (worker/backends/cpu) and by CUDA
// (worker/backends/cuda). Shapes are row-major; "n" is the number of token
// rows in the step.
//
// Ownership: backend memory and events are owned by RAII objects made here
// (BackendBuffer from Allocate, BackendEvent from MakeEvent), as ggml-cpp.h
// gives every ggml handle a unique_ptr deleter; their owner frees them, and
// every owner must go before its backend does. Raw pointers into a buffer are
// borrowed views. Memory imported from another process (ImportMemory) is
// closed by the importer (CloseImported).
//
// Errors: ops return nothing. They are enqueued in order on the backend's
// compute queue (on the CPU they run at once); an op that fails (a launch
// error, an invalid argument caught by the backend) records its error, the
// following ops may be skipped, and the FIRST error surfaces at the next
// Synchronize() or HostWait(), which then return it and clear it. Callers
// validate their inputs before enqueuing (the engine does: Engine::Validate),
// so an error here is a backend or device fault, not bad client input.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/statusor.h"
#include "worker/engine/types.h"

namespace paged {

class Backend;

// Backend memory with exactly one owner; freed through the backend that made
// it when the owner goes. Empty when default-constructed or moved from.
class BackendBuffer {
 public:
  BackendBuffer() = default;
  ~BackendBuffer() { reset(); }
  BackendBuffer(BackendBuffer&& o) noexcept
      : backend_(std::exchange(o.backend_, nullptr)), p_(std::exchange(o.p_, nullptr)) {}
  BackendBuffer& operator=(BackendBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = std::exchange(o.backend_, nullptr);
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;

  void* get() const { return p_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(p_);
  }
  explicit operator bool() const { return p_ != nullptr; }
  void reset();

 private:
  friend class Backend;
  BackendBuffer(Backend* backend, void* p) : backend_(backend), p_(p) {}
  Backend* backend_ = nullptr;
  void* p_ = nullptr;
};

// An event of one backend: Record marks a point in a queue, Wait makes a
// queue wait for it, HostWait blocks the caller for it. Destroyed with its
// owner; empty when default-constructed or moved from.
class BackendEvent {
 public:
  BackendEvent() = default;
  ~BackendEvent() { reset(); }
  BackendEvent(BackendEvent&& o) noexcept
      : backend_(std::exchange(o.backend_, nullptr)), id_(std::exchange(o.id_, -1)) {}
  BackendEvent& operator=(BackendEvent&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = std::exchange(o.backend_, nullptr);
      id_ = std::exchange(o.id_, -1);
    }
    return *this;
  }
  BackendEvent(const BackendEvent&) = delete;
  BackendEvent& operator=(const BackendEvent&) = delete;

  int id() const { return id_; }  // the backend's handle (valid while this lives)
  explicit operator bool() const { return backend_ != nullptr; }
  void reset();

 private:
  friend class Backend;
  BackendEvent(Backend* backend, int id) : backend_(backend), id_(id) {}
  Backend* backend_ = nullptr;
  int id_ = -1;
};

// One expert's rows of a grouped expert product (Backend::ExpertFfn): its
// matrices and (gpt-oss) biases in backend memory, and which rows it takes.
struct ExpertTask {
  WeightRef gate, up, down;  // [ffn, hidden] x2, [hidden, ffn]
  const float* gate_b = nullptr;
  const float* up_b = nullptr;
  const float* down_b = nullptr;
  int row0 = 0, n = 0;
};

// The activation of a gated MLP: SwiGLU, or gpt-oss's clamped SwiGLU where
// limit > 0 (Backend::SwiGluOai).
struct GluAct {
  float alpha = 0.f, limit = 0.f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;  // "cpu", "cuda:0"
  // True when backend memory is ordinary host memory (the CPU backend), so
  // host data such as the segment's weights can be used in place.
  virtual bool shares_host_memory() const { return false; }

  // ---- memory -------------------------------------------------------------
  // `bytes` of backend memory (device memory for CUDA), owned by the result;
  // RESOURCE_EXHAUSTED when there is not enough.
  absl::StatusOr<BackendBuffer> Allocate(uint64_t bytes);
  // Host -> backend and backend -> host copies on the compute stream.
  virtual void Upload(void* dst, const void* host_src, uint64_t bytes) = 0;
  virtual void Download(void* host_dst, const void* src, uint64_t bytes) = 0;
  // dst + i * dst_pitch <- host_src + i * src_pitch, `width` bytes each, for
  // i < rows, on the compute queue (host_src may be reused on return).
  virtual void Upload2D(void* dst, uint64_t dst_pitch, const void* host_src, uint64_t src_pitch,
                        uint64_t width, uint64_t rows);
  // Several backend -> host copies (Download's) with one wait for them all:
  // a sparse layer's router logits and its normed rows come down together.
  struct DownloadPart {
    void* host_dst;
    const void* src;
    uint64_t bytes;
  };
  virtual void DownloadMany(const DownloadPart* parts, int n);
  // Waits for everything enqueued so far (used at the end of a step).
  virtual absl::Status Synchronize() = 0;

  // ---- step graphs (docs/engine.md, "Step graphs") --------------------------
  // A backend that can record the ops it is given and replay them with one
  // launch. BeginGraph(): the ops from now on are recorded, not run, until
  // EndGraph(key), which runs the recording and keeps it under `key`
  // (an error: nothing ran and nothing is kept; a recording that failed
  // leaves no error behind for Synchronize). LaunchGraph(key) runs a kept
  // recording again: false where there is none under `key` or the backend's
  // own scratch moved since it was made (record anew). A replay runs the
  // same ops on the same addresses with the same arguments: what changes
  // from one replay to the next must be data in backend memory that the ops
  // read. DropGraphs() forgets every recording (the caller's buffers moved).
  virtual bool graphs_supported() const { return false; }
  virtual void BeginGraph() {}
  virtual absl::Status EndGraph(uint64_t key) {
    return absl::UnimplementedError("this backend records no graphs");
  }
  virtual bool LaunchGraph(uint64_t key) { return false; }
  virtual void DropGraphs() {}
  // Device memory in use by this process (CUDA: total - free as the driver
  // reports it); 0 where there is no device.
  virtual uint64_t DeviceMemoryUsed() { return 0; }

  // ---- asynchronous transfer (the pager) -----------------------------------
  // Three queues, each running its work in order; events order them. On
  // CUDA they are streams; the CPU backend runs the copy queues on threads.
  // The defaults below are correct but synchronous (everything on compute).
  enum class Queue { kCompute = 0, kCopyIn = 1, kWriteBack = 2 };

  // Makes host memory (a mapping of the segment) a DMA source / target.
  // read_only: the mapping is PROT_READ (the weight region).
  virtual absl::Status RegisterHost(void* p, uint64_t bytes, bool read_only) {
    return absl::OkStatus();
  }
  virtual void UnregisterHost(void* p) {}
  // Where kernels of this backend can read registered host memory `p` in
  // place (over the link, no copy first): the device's address of it, or
  // null where they cannot (not registered, or no such access). The CPU
  // backend's memory is the host's: p itself.
  virtual const void* MappedHostView(const void* p) const {
    return shares_host_memory() ? p : nullptr;
  }
  // dst (backend memory) <- host_src, enqueued on q.
  virtual void CopyIn(Queue q, void* dst, const void* host_src, uint64_t bytes) {
    Upload(dst, host_src, bytes);
  }
  // host_dst <- src (backend memory), enqueued on q (the link's other way).
  virtual void CopyOut(Queue q, void* host_dst, const void* src, uint64_t bytes) {
    Download(host_dst, src, bytes);
  }
  // For i < n: block_bytes from host_base + host_ids[i] * host_stride to
  // dst_base + dev_ids[i] * block_bytes (ids are host arrays, read before
  // return).
  virtual void GatherBlocksIn(Queue q, void* dst_base, const void* host_base, uint64_t host_stride,
                              const int32_t* host_ids, const int32_t* dev_ids, int n,
                              uint64_t block_bytes);
  // For i < n: the K and V rows at slot dev_slots[i] of `dev` go to slot
  // host_slots[i] of `host` (a view of registered host memory, same
  // geometry); slots are host arrays, read before return.
  virtual void ScatterKvRowsOut(Queue q, const KvLayerView& dev, const KvLayerView& host,
                                const int32_t* dev_slots, const int32_t* host_slots, int n);
  // Events: Record marks a point in q; Wait makes q wait for the last Record
  // of the event; HostWait blocks the caller for it (and returns the first
  // error of the work before it, like Synchronize).
  BackendEvent MakeEvent() { return BackendEvent(this, NewEvent()); }
  void Record(Queue q, const BackendEvent& e) { RecordEvent(q, e.id()); }
  void Wait(Queue q, const BackendEvent& e) { WaitEvent(q, e.id()); }
  absl::Status HostWait(const BackendEvent& e) { return HostWaitEvent(e.id()); }

  // ---- backend memory shared between processes (worker/pager/share_board) --
  // The physical device, stable across processes ("GPU-<uuid>"); "" when
  // memory cannot be shared. Two backends with the same id can use each
  // other's exported memory in place.
  virtual std::string device_uuid() const { return ""; }
  // An opaque handle to Alloc'd memory `p` that another process (or backend)
  // can import. UNIMPLEMENTED where sharing is impossible.
  virtual absl::StatusOr<std::string> ExportMemory(void* p);
  // Maps memory another process exported, on this device or a peer. On CUDA
  // the mapping stays valid after the exporter exits, until CloseImported
  // (seen on the H200 host: the driver frees it when the last importer closes).
  virtual absl::StatusOr<void*> ImportMemory(const std::string& handle);
  virtual void CloseImported(void* p) {}
  // dst <- src, both backend memory of this device or of a peer (imported),
  // enqueued on q.
  virtual void CopyDevice(Queue q, void* dst, const void* src, uint64_t bytes);

  // ---- ops ----------------------------------------------------------------
  // out[i, :] = f32(table[ids[i], :]); ids: [n] in backend memory.
  virtual void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) = 0;
  // out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * w; x, out: [n, dim];
  // out may be x. Per-head norms are rows of head_dim: n = rows * heads.
  virtual void RmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out) = 0;
  // out[n, w.rows] = x[n, w.cols] @ w^T (+ bias[w.rows] if not null),
  // accumulated in f32 whatever w's storage type. Row i of out starts at
  // out + i * ldo (ldo >= w.rows; 0 means w.rows), so a product can fill the
  // first columns of a wider output (the hybrid step's device rows).
  virtual void MatMul(const float* x, int n, const WeightRef& w, const float* bias, float* out,
                      int64_t ldo = 0) = 0;
  // Products of one x [n, cols]: for each job, out [n, w->rows] = x @ w^T
  // (+ bias), as MatMul with ldo 0 one after the other (the default). A
  // backend may run them as one (CUDA: one launch of the decode GEMV for a
  // layer's q, k, v or gate and up at one token row). A job with add_to
  // adds its product to add_to [n, w->rows] (the residual stream), as
  // Add(add_to, out) after it would; its out is then scratch that a backend
  // adding in place may leave unwritten.
  struct MatMulJob {
    const WeightRef* w;
    const float* bias;  // or null
    float* out;
    float* add_to = nullptr;
  };
  virtual void MatMulMany(const float* x, int n, const MatMulJob* jobs, int count);
  // The products of RmsNorm(x) [n, norm.dim]: RmsNorm(x, norm.w, n,
  // norm.dim, norm.eps, norm.h), then MatMulMany(norm.h, ...) (the
  // default). A backend may fold the norm into the products (CUDA's decode
  // GEMV scales x by w as it reads it and each dot by 1 / rms at the end)
  // and leave norm.h unwritten: h is then scratch.
  struct NormIn {
    const float* w;
    int dim;
    float eps;
    float* h;
  };
  virtual void NormMatMulMany(const float* x, const NormIn& norm, int n, const MatMulJob* jobs,
                              int count);
  // Rotates q [n, n_heads * head_dim] and k [n, n_kv_heads * head_dim] in
  // place at positions pos [n], halves convention: (x[i], x[i + head_dim/2]),
  // by pos * RopeInvFreq(p)[i], with cos and sin multiplied by p.attn_factor.
  virtual void Rope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
                    const RopeParams& p) = 0;
  // Writes k, v [n, kv_dim] into the cache rows slots[i] (block = slot /
  // block_tokens, row = slot % block_tokens), converting to the cache dtype.
  virtual void KvWrite(const float* k, const float* v, const int32_t* slots, int n,
                       const KvLayerView& kv) = 0;
  // Causal grouped-query attention over paged KV. For each of `n_seqs`
  // sequences (seqs[s], backend memory), its q rows attend to positions
  // [0, start_pos + i] read through its block table (block_tables, backend
  // memory); with p.window > 0 only to the last p.window of them (the cache
  // still holds the older ones). Scores: (q . k) * scale (1/sqrt(head_dim)
  // unless p.scale), soft-capped when p.softcap > 0, softmax in f32 (with
  // p.sinks, over the scores and the head's sink logit, the sink's share
  // dropped).
  // q, out: [n, n_heads * head_dim]. max_ctx: at least the longest context
  // of the step (start_pos + n_new), for sizing; a larger bound is allowed
  // (a step graph is recorded for a range of contexts).
  virtual void Attention(const float* q, const AttnSeq* seqs, int n_seqs,
                         const int32_t* block_tables, int n_heads, int n_kv_heads, int head_dim,
                         int max_ctx, const KvLayerView& kv, const AttnParams& p, float* out) = 0;
  // out[i, j] = silu(gate[i, j]) * up[i, j]; [n, dim]. out may alias gate.
  virtual void SwiGlu(const float* gate, const float* up, int n, int dim, float* out) = 0;
  // out[i, j] = gelu_tanh(gate[i, j]) * up[i, j] (GeGLU, transformers'
  // gelu_pytorch_tanh: 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))); [n, dim].
  // out may alias gate.
  virtual void GeGlu(const float* gate, const float* up, int n, int dim, float* out) = 0;
  // gpt-oss's clamped SwiGLU: g = min(gate, limit), u = clamp(up, -limit,
  // limit), out = (u + 1) * g * sigmoid(alpha * g); [n, dim]. out may alias gate.
  virtual void SwiGluOai(const float* gate, const float* up, int n, int dim, float alpha,
                         float limit, float* out) = 0;
  // x[i] *= s for i < count.
  virtual void Scale(float* x, int64_t count, float s) = 0;
  // x[i] = cap * tanh(x[i] / cap) for i < count (cap > 0).
  virtual void SoftCap(float* x, int64_t count, float cap) = 0;
  // x[i] += y[i] for i < count.
  virtual void Add(float* x, const float* y, int64_t count) = 0;
  // out[i, :] = x[rows[i], :] for i < n; rows in backend memory.
  virtual void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) = 0;
  // out[rows[i], :] += w[i] * y[i, :] for i < n (the weighted sum of a
  // mixture of experts); y: [n, dim]; rows, w: [n] in backend memory, the
  // rows of one call distinct.
  virtual void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                              float* out) = 0;
  // The routed experts of a sparse layer, computed together (one grouped
  // launch per product where the backend can): for each task, rows
  // [row0, row0 + n) of x [rows, hidden] go through its gated MLP,
  //   g = x gate^T + gate_b, u = x up^T + up_b, g = act(g, u),
  //   y = g down^T + down_b,
  // with g, u in the scratch `gate`, `up` [rows, ffn] (ffn = gate.rows) and
  // y [rows, hidden]; act is SwiGLU, or gpt-oss's clamped one where
  // act.limit > 0. Rows of no task are left as they are. The default runs
  // the tasks one by one with MatMul and the GLU ops (the CPU backend's, and
  // the CUDA backend's for the tasks its grouped kernels do not take).
  virtual void ExpertFfn(const float* x, const ExpertTask* tasks, int n_tasks, const GluAct& act,
                         float* gate, float* up, float* y);
  // The weighted sum of a mixture: for i < n_tokens, with t = tokens[i],
  //   out[t, :] += w[pos[j]] * y[pos[j], :] for j = begin[i] .. begin[i+1]-1,
  // in that order (the order ScatterAddRows calls expert by expert would
  // add them). tokens distinct; tokens, begin, pos, w in backend memory.
  virtual void CombineRows(const float* y, const float* w, const int32_t* tokens,
                           const int32_t* begin, const int32_t* pos, int n_tokens, int dim,
                           float* out) = 0;
  // One token per row of logits [n, vocab] following worker/engine/sampling.h
  // (params, positions: [n] in backend memory; positions feed the RNG).
  virtual void Sample(const float* logits, int n, int vocab, const SamplingParams* params,
                      const int32_t* positions, int32_t* out_tokens) = 0;

 protected:
  // ExpertFfn's parts, task by task with MatMul (the default, and a
  // backend's tasks its own kernels do not take): gate and up; the
  // activation over the tasks' rows (one op per run of adjacent tasks);
  // down.
  void ExpertGateUp(const float* x, const ExpertTask* tasks, int n_tasks, float* gate, float* up);
  void GluRuns(const ExpertTask* tasks, int n_tasks, const GluAct& act, float* gate,
               const float* up);
  void ExpertDown(const ExpertTask* tasks, int n_tasks, const float* gate, float* y);
  // What the owning types above call: implementations provide them.
  virtual absl::StatusOr<void*> Alloc(uint64_t bytes) = 0;
  virtual void Free(void* p) = 0;
  virtual int NewEvent() { return 0; }
  virtual void DestroyEvent(int event) {}
  virtual void RecordEvent(Queue q, int event) {}
  virtual void WaitEvent(Queue q, int event) {}
  virtual absl::Status HostWaitEvent(int event) { return Synchronize(); }

 private:
  friend class BackendBuffer;
  friend class BackendEvent;
};

}  // namespace paged
