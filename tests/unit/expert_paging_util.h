// Running a tiny mixture-of-experts model step by step through the pager
// with experts paged one by one (or all resident), recording what each step
// moved, what the engine asked for and the host KV pool afterwards. Shared
// by the CPU tests (expert_paging_test.cc) and the GPU test
// (moe_gpu_test.cc).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tests/unit/moe_util.h"
#include "tests/unit/reference_model.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/engine/engine.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"
#include "worker/pager/planner.h"

namespace paged::expert_testing {

inline LayoutOptions F32Layout() {
  LayoutOptions layout;
  layout.weight_format = "f32";
  layout.kv_gib = 0.002;
  layout.block_tokens = 4;  // contexts cross blocks
  return layout;
}

inline const std::vector<int32_t>& Prompt() {
  static const std::vector<int32_t> p = {1, 5, 9, 33, 70, 2, 17, 90};
  return p;
}
inline constexpr int kNewTokens = 16;

// Forwards to a Pager and records the experts the engine asks for.
class RecordingProvider final : public WeightProvider {
 public:
  explicit RecordingProvider(WeightProvider* inner, int n_layers)
      : inner_(inner), n_layers_(n_layers) {}
  const GlobalWeights& globals() const override { return inner_->globals(); }
  uint64_t pool_blocks() const override { return inner_->pool_blocks(); }
  absl::Status BeginStep(const StepBatch& b, std::vector<int32_t>* ids) override {
    asked.emplace_back(size_t(n_layers_));
    return inner_->BeginStep(b, ids);
  }
  absl::Status FinishStep() override { return inner_->FinishStep(); }
  absl::StatusOr<LayerWeights> AcquireLayer(int l) override { return inner_->AcquireLayer(l); }
  void ReleaseLayer(int l) override { inner_->ReleaseLayer(l); }
  absl::StatusOr<KvLayerView> AcquireKv(int l) override { return inner_->AcquireKv(l); }
  void ReleaseKv(int l, const int32_t* slots, int n) override { inner_->ReleaseKv(l, slots, n); }
  absl::Status AcquireExperts(int l, const int32_t* rows, int n, ExpertRef* out) override {
    for (int e = 0; e < n; ++e) {
      if (rows[e] > 0) asked.back()[size_t(l)].insert(e);
    }
    return inner_->AcquireExperts(l, rows, n, out);
  }
  void ReleaseExperts(int l) override { inner_->ReleaseExperts(l); }
  WeightRef PrefetchRouter(int l) override { return inner_->PrefetchRouter(l); }
  const float* PrefetchRouterBias(int l) override { return inner_->PrefetchRouterBias(l); }
  void PrefetchExperts(int l, const int32_t* rows, int n) override {
    predicted.emplace_back();
    predicted.back().layer = l;
    for (int e = 0; e < n; ++e) {
      if (rows[e] > 0) predicted.back().experts.insert(e);
    }
    inner_->PrefetchExperts(l, rows, n);
  }

  std::vector<std::vector<std::set<int>>> asked;  // [step][layer] experts with rows
  struct Prediction {
    int layer = -1;
    std::set<int> experts;  // predicted to have rows
  };
  std::vector<Prediction> predicted;  // each PrefetchExperts call, in order

 private:
  WeightProvider* inner_;
  int n_layers_;
};

struct RunOptions {
  bool paged = true;
  // Expert cache slots beyond one layer's experts; -1: as many as the plan
  // gives at a large budget (every expert).
  int extra_expert_slots = 0;
  std::string resident = "none";
  ExpertEviction eviction = ExpertEviction::kLfu;
  int expert_host_rows = 0;      // > 0: missing experts with at most this many rows on the host
  double expert_host_share = 1;  // auto host experts (expert_host_rows -1): their share
  bool expert_misses_mapped = false;  // the other misses read in place (PagerOptions)
  bool tune_expert_share = false;     // PagerOptions::tune_expert_share
  double host_share = 0;              // a hybrid step's share of each dense matrix
  bool q8_activations = false;        // the host executor's (cpu_exec::ExecPoolOptions)
  std::vector<int32_t> prompt;        // empty: Prompt()
  bool expert_paging = true;
  bool preload = true;
  bool prefetch = false;              // the next sparse layer's experts, predicted
  std::string weight_format = "f32";  // LayoutOptions::weight_format ("native": MXFP4 experts)
  uint64_t uniform_routing = 0;       // Engine::set_uniform_routing's seed (0: the router's)
};

struct StepRun {
  std::vector<int32_t> tokens;
  std::vector<float> logits;          // of each chosen token
  std::vector<PagerStats> stats;      // after each step
  std::vector<double> expert_shares;  // Pager::expert_step_share of each step
  std::vector<std::vector<std::set<int>>> asked;
  std::vector<RecordingProvider::Prediction> predicted;
  std::vector<uint8_t> kv;  // the host KV pool's blocks of the sequence, every layer
  MemoryPlan plan;
  uint64_t evictions = 0;
};

// Greedy: the prompt in one prefill step, then decode steps, one sequence.
inline StepRun RunSteps(Backend* backend, const ModelSource& src, const RunOptions& o) {
  StepRun out;
  LayoutOptions layout = F32Layout();
  layout.weight_format = o.weight_format;
  auto img = OwnedImage::Build(src, layout);
  EXPECT_TRUE(img.ok()) << img.status();
  if (!img.ok()) return out;
  const ModelImage& image = (*img)->image();
  const SegmentHeader& h = *image.header;
  std::unique_ptr<WeightProvider> inner;
  Pager* pager = nullptr;
  if (o.paged) {
    PlanLimits l;
    l.budget_bytes = 1ull << 30;
    l.max_step_tokens = 64;
    l.max_step_seqs = 4;
    l.max_step_kv_tokens = 256;
    l.resident = o.resident;
    l.slots = 2;
    l.expert_paging = o.expert_paging;
    l.expert_prefetch = o.prefetch;
    l.backend = backend->shares_host_memory() ? PlanBackend::kCpu : PlanBackend::kCuda;
    auto big = PlanMemory(h, l);
    EXPECT_TRUE(big.ok()) << big.status();
    if (!big.ok()) return out;
    if (o.expert_paging && o.extra_expert_slots >= 0) {
      // The budget that leaves the cache one layer's experts plus the extra.
      const uint64_t want = uint64_t(h.model.n_experts + o.extra_expert_slots);
      EXPECT_LT(want, big->expert_slots);
      l.budget_bytes = big->total_bytes - big->kv_cache_bytes -
                       (big->expert_slots - want) * big->expert_slot_bytes;
      big = PlanMemory(h, l);
      EXPECT_TRUE(big.ok()) << big.status();
      if (!big.ok()) return out;
      EXPECT_EQ(big->expert_slots, want);
    }
    out.plan = *big;
    PagerOptions po;
    po.expert_eviction = o.eviction;
    po.expert_host_rows = o.expert_host_rows;
    po.expert_host_share = o.expert_host_share;
    po.expert_misses_mapped = o.expert_misses_mapped;
    po.tune_expert_share = o.tune_expert_share;
    // Auto: a host that beats any link at every row count.
    if (o.expert_host_rows < 0) po.host_gbps = {{1, 1e6}, {64, 1e6}};
    po.preload_experts = o.preload;
    if (o.host_share > 0) po.host_share = [s = o.host_share](int) { return s; };
    auto p = Pager::Create(backend, image, *big, po);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return out;
    pager = p->get();
    inner = std::move(*p);
  } else {
    auto r = ResidentProvider::Create(backend, image);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    inner = std::move(*r);
  }
  RecordingProvider provider(inner.get(), h.model.n_layers);
  Engine engine(backend, &provider, image.config(), int(h.block_tokens));
  engine.set_uniform_routing(o.uniform_routing);
  std::unique_ptr<HostExecutor> host;
  if (o.expert_host_rows != 0 || o.host_share > 0) {
    cpu_exec::ExecPoolOptions eo;
    eo.threads = 2;
    eo.q8_activations = o.q8_activations;
    host = cpu_exec::MakeHostExecutor(eo);
    engine.set_host_executor(host.get());
  }
  SeqStep s;
  s.seq_id = 7;
  s.tokens = o.prompt.empty() ? Prompt() : o.prompt;
  s.return_logits = true;
  const int positions = int(s.tokens.size()) + kNewTokens;
  const int blocks = (positions + int(h.block_tokens) - 1) / int(h.block_tokens);
  for (int b = 0; b < blocks; ++b) s.block_table.push_back(b);
  for (int i = 0; i < kNewTokens; ++i) {
    auto r = engine.Step(StepBatch{{s}});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return out;
    const int32_t t = r->next_tokens[0];
    out.tokens.push_back(t);
    out.logits.push_back(r->logits[0][size_t(t)]);
    if (pager != nullptr) {
      out.stats.push_back(pager->stats());
      out.expert_shares.push_back(pager->expert_step_share());
    }
    s.start_pos += int32_t(s.tokens.size());
    s.tokens = {t};
  }
  out.asked = provider.asked;
  out.predicted = provider.predicted;
  if (pager != nullptr && pager->expert_cache() != nullptr)
    out.evictions = pager->expert_cache()->evictions();
  // The rows the steps wrote (every position but the last token's, never
  // fed): a device KV cache writes whole blocks back, whose other rows hold
  // whatever the device memory held. The resident provider on a device
  // keeps its KV there and writes nothing back: its rows come from the
  // device, in the pool's layout.
  const int written = positions - 1;
  const uint64_t half = h.kv_block_bytes / 2, row = half / h.block_tokens;
  const bool on_device = pager == nullptr && !backend->shares_host_memory();
  std::vector<uint8_t> block(on_device ? h.kv_block_bytes : 0);
  for (int l = 0; l < h.model.n_layers; ++l) {
    absl::StatusOr<KvLayerView> view;
    if (on_device) {
      view = inner->AcquireKv(l);
      EXPECT_TRUE(view.ok()) << view.status();
      if (!view.ok()) return out;
    }
    for (int b = 0; b < blocks; ++b) {
      const uint64_t rows =
          uint64_t(std::min<int>(int(h.block_tokens), written - b * int(h.block_tokens)));
      const uint8_t* base = image.kv + (h.KvBlockOffset(l, b) - h.kv_offset);
      if (on_device) {
        backend->Download(block.data(), static_cast<uint8_t*>(view->base) + b * view->block_bytes,
                          block.size());
        EXPECT_TRUE(backend->Synchronize().ok());
        base = block.data();
      }
      out.kv.insert(out.kv.end(), base, base + rows * row);                // K
      out.kv.insert(out.kv.end(), base + half, base + half + rows * row);  // V
    }
  }
  inner.reset();
  return out;
}

inline StepRun RunSteps(Backend* backend, const reference::Model& m, const RunOptions& o) {
  return RunSteps(backend, m.src, o);
}

// Four layers, 8 experts (top-2), every layer sparse but the second, a
// shared expert: enough experts that a one-layer cache misses and evicts.
inline ModelConfig FourLayerMoe() {
  ModelConfig c = moe_testing::Base(Arch::kQwen2Moe, 8, 4);
  c.SetMoeLayer(1, false);
  c.shared_expert_ffn = 48;
  c.norm_topk_prob = 1;
  return c;
}

}  // namespace paged::expert_testing
