// Tests: a backend that records graphs the way a GPU stream capture does,
// around another backend (the CPU reference). Between BeginGraph and
// EndGraph each op is kept as a closure of the arguments it was given, not
// run; EndGraph runs them and keeps them under the key; LaunchGraph runs
// them again with those same arguments. So a step replayed from a recording
// gives the right tokens only if everything that changes between steps
// reaches the ops as data in backend memory, as the CUDA backend's graphs
// require. A wait for the device (Download, Synchronize) while recording
// or a staged upload while recording breaks the recording, as on CUDA.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/engine/backend.h"

namespace paged::testing {

class RecordingBackend final : public Backend {
 public:
  explicit RecordingBackend(std::unique_ptr<Backend> inner) : inner_(std::move(inner)) {}

  int64_t recorded_ops() const { return recorded_ops_; }
  int64_t replays() const { return replays_; }
  // The next EndGraph fails (as a capture that met an unsupported call).
  void FailNextRecording() { fail_next_ = true; }
  // What LaunchGraph sees when the backend's own scratch moved.
  void InvalidateGraphs() { graphs_.clear(); }
  size_t graphs() const { return graphs_.size(); }

  std::string name() const override { return inner_->name(); }
  bool shares_host_memory() const override { return inner_->shares_host_memory(); }

  bool graphs_supported() const override { return true; }
  void BeginGraph() override {
    recording_ = true;
    broken_ = false;
    tape_.clear();
  }
  absl::Status EndGraph(uint64_t key) override {
    recording_ = false;
    if (broken_ || fail_next_) {
      fail_next_ = false;
      tape_.clear();
      return absl::FailedPreconditionError("recording broken");
    }
    for (auto& op : tape_) op();
    recorded_ops_ += int64_t(tape_.size());
    graphs_[key] = std::move(tape_);
    tape_.clear();
    return absl::OkStatus();
  }
  bool LaunchGraph(uint64_t key) override {
    auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    for (auto& op : it->second) op();
    ++replays_;
    return true;
  }
  void DropGraphs() override { graphs_.clear(); }

  void Upload(void* dst, const void* host_src, uint64_t bytes) override {
    if (recording_) broken_ = true;  // the CUDA backend refuses a staged copy then
    inner_->Upload(dst, host_src, bytes);
  }
  void Download(void* host_dst, const void* src, uint64_t bytes) override {
    if (recording_) broken_ = true;
    inner_->Download(host_dst, src, bytes);
  }
  absl::Status Synchronize() override {
    if (recording_) broken_ = true;
    return inner_->Synchronize();
  }

  void Embedding(const WeightRef& table, const int32_t* ids, int n, float* out) override {
    Do([=, this] { inner_->Embedding(table, ids, n, out); });
  }
  void RmsNorm(const float* x, const float* w, int n, int dim, float eps, float* out) override {
    Do([=, this] { inner_->RmsNorm(x, w, n, dim, eps, out); });
  }
  void MatMul(const float* x, int n, const WeightRef& w, const float* bias, float* out,
              int64_t ldo) override {
    Do([=, this] { inner_->MatMul(x, n, w, bias, out, ldo); });
  }
  void Rope(float* q, float* k, const int32_t* pos, int n, int n_heads, int n_kv_heads,
            const RopeParams& p) override {
    Do([=, this] { inner_->Rope(q, k, pos, n, n_heads, n_kv_heads, p); });
  }
  void KvWrite(const float* k, const float* v, const int32_t* slots, int n,
               const KvLayerView& kv) override {
    Do([=, this] { inner_->KvWrite(k, v, slots, n, kv); });
  }
  void Attention(const float* q, const AttnSeq* seqs, int n_seqs, const int32_t* block_tables,
                 int n_heads, int n_kv_heads, int head_dim, int max_ctx, const KvLayerView& kv,
                 const AttnParams& p, float* out) override {
    Do([=, this] {
      inner_->Attention(q, seqs, n_seqs, block_tables, n_heads, n_kv_heads, head_dim, max_ctx, kv,
                        p, out);
    });
  }
  void SwiGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    Do([=, this] { inner_->SwiGlu(gate, up, n, dim, out); });
  }
  void GeGlu(const float* gate, const float* up, int n, int dim, float* out) override {
    Do([=, this] { inner_->GeGlu(gate, up, n, dim, out); });
  }
  void SwiGluOai(const float* gate, const float* up, int n, int dim, float alpha, float limit,
                 float* out) override {
    Do([=, this] { inner_->SwiGluOai(gate, up, n, dim, alpha, limit, out); });
  }
  void Scale(float* x, int64_t count, float s) override {
    Do([=, this] { inner_->Scale(x, count, s); });
  }
  void SoftCap(float* x, int64_t count, float cap) override {
    Do([=, this] { inner_->SoftCap(x, count, cap); });
  }
  void Add(float* x, const float* y, int64_t count) override {
    Do([=, this] { inner_->Add(x, y, count); });
  }
  void GatherRows(const float* x, const int32_t* rows, int n, int dim, float* out) override {
    Do([=, this] { inner_->GatherRows(x, rows, n, dim, out); });
  }
  void ScatterAddRows(const float* y, const int32_t* rows, const float* w, int n, int dim,
                      float* out) override {
    Do([=, this] { inner_->ScatterAddRows(y, rows, w, n, dim, out); });
  }
  void CombineRows(const float* y, const float* w, const int32_t* tokens, const int32_t* begin,
                   const int32_t* pos, int n_tokens, int dim, float* out) override {
    Do([=, this] { inner_->CombineRows(y, w, tokens, begin, pos, n_tokens, dim, out); });
  }
  void Sample(const float* logits, int n, int vocab, const SamplingParams* params,
              const int32_t* positions, int32_t* out_tokens) override {
    Do([=, this] { inner_->Sample(logits, n, vocab, params, positions, out_tokens); });
  }

 protected:
  absl::StatusOr<void*> Alloc(uint64_t bytes) override {
    absl::StatusOr<BackendBuffer> b = inner_->Allocate(bytes);
    if (!b.ok()) return b.status();
    void* p = b->get();
    owned_.emplace(p, std::move(*b));
    return p;
  }
  void Free(void* p) override { owned_.erase(p); }

 private:
  void Do(std::function<void()> op) {
    if (recording_) {
      tape_.push_back(std::move(op));
    } else {
      op();
    }
  }

  std::unique_ptr<Backend> inner_;
  std::map<void*, BackendBuffer> owned_;
  bool recording_ = false, broken_ = false, fail_next_ = false;
  std::vector<std::function<void()>> tape_;
  std::map<uint64_t, std::vector<std::function<void()>>> graphs_;
  int64_t recorded_ops_ = 0, replays_ = 0;
};

}  // namespace paged::testing
