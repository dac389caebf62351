#include "worker/engine/backend.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace paged {

void BackendBuffer::reset() {
  if (p_ != nullptr) backend_->Free(p_);
  backend_ = nullptr;
  p_ = nullptr;
}

void BackendEvent::reset() {
  if (backend_ != nullptr) backend_->DestroyEvent(id_);
  backend_ = nullptr;
  id_ = -1;
}

absl::StatusOr<BackendBuffer> Backend::Allocate(uint64_t bytes) {
  absl::StatusOr<void*> p = Alloc(bytes);
  if (!p.ok()) return p.status();
  return BackendBuffer(this, *p);
}

// The synchronous defaults: a download of the whole row set would need the
// device view on the host, so these go through Upload / Download per piece.
void Backend::GatherBlocksIn(Queue q, void* dst_base, const void* host_base, uint64_t host_stride,
                             const int32_t* host_ids, const int32_t* dev_ids, int n,
                             uint64_t block_bytes) {
  for (int i = 0; i < n; ++i) {
    Upload(static_cast<uint8_t*>(dst_base) + uint64_t(dev_ids[i]) * block_bytes,
           static_cast<const uint8_t*>(host_base) + uint64_t(host_ids[i]) * host_stride,
           block_bytes);
  }
}

void Backend::ScatterKvRowsOut(Queue q, const KvLayerView& dev, const KvLayerView& host,
                               const int32_t* dev_slots, const int32_t* host_slots, int n) {
  const uint64_t elt = dev.dtype == DType::kF32 ? 4 : 2;
  const uint64_t row = uint64_t(dev.kv_dim) * elt;
  const uint64_t v_off = uint64_t(dev.block_tokens) * row;
  auto at = [&](const KvLayerView& v, int32_t slot) {
    return static_cast<uint8_t*>(v.base) + uint64_t(slot / v.block_tokens) * v.block_bytes +
           uint64_t(slot % v.block_tokens) * row;
  };
  for (int i = 0; i < n; ++i) {
    Download(at(host, host_slots[i]), at(dev, dev_slots[i]), row);
    Download(at(host, host_slots[i]) + v_off, at(dev, dev_slots[i]) + v_off, row);
  }
}

void Backend::DownloadMany(const DownloadPart* parts, int n) {
  for (int i = 0; i < n; ++i) Download(parts[i].host_dst, parts[i].src, parts[i].bytes);
}

void Backend::Upload2D(void* dst, uint64_t dst_pitch, const void* host_src, uint64_t src_pitch,
                       uint64_t width, uint64_t rows) {
  if (dst_pitch == width && src_pitch == width) return Upload(dst, host_src, width * rows);
  for (uint64_t i = 0; i < rows; ++i) {
    Upload(static_cast<uint8_t*>(dst) + i * dst_pitch,
           static_cast<const uint8_t*>(host_src) + i * src_pitch, width);
  }
}

absl::StatusOr<std::string> Backend::ExportMemory(void*) {
  return absl::UnimplementedError(
      absl::StrCat(name(), ": memory cannot be shared with other processes"));
}

absl::StatusOr<void*> Backend::ImportMemory(const std::string&) {
  return absl::UnimplementedError(
      absl::StrCat(name(), ": memory cannot be shared with other processes"));
}

void Backend::MatMulMany(const float* x, int n, const MatMulJob* jobs, int count) {
  for (int j = 0; j < count; ++j) {
    const MatMulJob& job = jobs[j];
    MatMul(x, n, *job.w, job.bias, job.out);
    if (job.add_to != nullptr) Add(job.add_to, job.out, int64_t(n) * job.w->rows);
  }
}

void Backend::NormMatMulMany(const float* x, const NormIn& norm, int n, const MatMulJob* jobs,
                             int count) {
  RmsNorm(x, norm.w, n, norm.dim, norm.eps, norm.h);
  MatMulMany(norm.h, n, jobs, count);
}

void Backend::CopyDevice(Queue q, void* dst, const void* src, uint64_t bytes) {
  // Backend memory that is host memory copies like an upload; a device
  // backend overrides this.
  if (shares_host_memory()) CopyIn(q, dst, src, bytes);
}

void Backend::ExpertFfn(const float* x, const ExpertTask* tasks, int n_tasks, const GluAct& act,
                        float* gate, float* up, float* y) {
  if (n_tasks <= 0) return;
  ExpertGateUp(x, tasks, n_tasks, gate, up);
  GluRuns(tasks, n_tasks, act, gate, up);
  ExpertDown(tasks, n_tasks, gate, y);
}

void Backend::ExpertGateUp(const float* x, const ExpertTask* tasks, int n_tasks, float* gate,
                           float* up) {
  for (int i = 0; i < n_tasks; ++i) {
    const ExpertTask& t = tasks[i];
    const int64_t hidden = t.gate.cols, ffn = t.gate.rows;
    MatMul(x + t.row0 * hidden, t.n, t.gate, t.gate_b, gate + t.row0 * ffn);
    MatMul(x + t.row0 * hidden, t.n, t.up, t.up_b, up + t.row0 * ffn);
  }
}

void Backend::ExpertDown(const ExpertTask* tasks, int n_tasks, const float* gate, float* y) {
  for (int i = 0; i < n_tasks; ++i) {
    const ExpertTask& t = tasks[i];
    const int64_t hidden = t.gate.cols, ffn = t.gate.rows;
    MatMul(gate + t.row0 * ffn, t.n, t.down, t.down_b, y + t.row0 * hidden);
  }
}

void Backend::GluRuns(const ExpertTask* tasks, int n_tasks, const GluAct& act, float* gate,
                      const float* up) {
  const int64_t ffn = tasks[0].gate.rows;
  // The tasks' rows as runs of adjacent rows: one element-wise op per run.
  for (int i = 0; i < n_tasks;) {
    const int64_t r0 = tasks[i].row0;
    int64_t r1 = r0 + tasks[i].n;
    for (++i; i < n_tasks && tasks[i].row0 == r1; ++i) r1 += tasks[i].n;
    float* g = gate + r0 * ffn;
    const float* u = up + r0 * ffn;
    if (act.limit > 0.f) {
      SwiGluOai(g, u, int(r1 - r0), int(ffn), act.alpha, act.limit, g);
    } else {
      SwiGlu(g, u, int(r1 - r0), int(ffn), g);
    }
  }
}

}  // namespace paged
