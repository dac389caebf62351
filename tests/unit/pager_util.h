// Running stories260K through the pager or the resident provider, shared by
// the CPU pager tests and the GPU tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "tests/unit/test_util.h"
#include "worker/backends/cpu_exec/host_executor.h"
#include "worker/engine/backend_factory.h"
#include "worker/engine/generator.h"
#include "worker/engine/model_image.h"
#include "worker/engine/resident_provider.h"
#include "worker/offline/owned_image.h"
#include "worker/pager/pager.h"

namespace paged::testing {

inline constexpr uint64_t kMiB = 1ull << 20;

inline std::unique_ptr<OwnedImage> StoriesImage(const std::string& format = "f32") {
  LayoutOptions layout;
  layout.weight_format = format;
  layout.kv_gib = 0.01;
  auto img = OwnedImage::Build(Stories260KPath(), layout);
  EXPECT_TRUE(img.ok()) << img.status();
  return img.ok() ? std::move(*img) : nullptr;
}

inline PlanLimits SmallLimits(uint64_t budget) {
  PlanLimits l;
  l.budget_bytes = budget;
  l.max_step_tokens = 256;
  l.max_step_seqs = 8;
  l.max_step_kv_tokens = 2048;
  return l;
}

struct PagedRun {
  std::vector<int32_t> tokens;
  PagerStats stats;
  std::vector<uint8_t> kv;  // the host KV pool afterwards
  SharingReport sharing;
  uint64_t device_bytes = 0;  // the pager's own allocations
  double link_gbps = 0;       // measured at start
};

// Greedy from BOS (200 tokens) on a fresh image, through a Pager with `plan`
// (or the ResidentProvider when plan is null), on `device`.
inline PagedRun GenerateStoriesOn(Backend* backend, const MemoryPlan* plan,
                                  const std::string& format, const PagerOptions& options = {},
                                  const std::vector<int32_t>& prompt = {1});

inline PagedRun GenerateStories(const MemoryPlan* plan, const std::string& device,
                                const std::string& format, const PagerOptions& options = {},
                                const std::vector<int32_t>& prompt = {1}) {
  auto made = MakeBackend(device, 2);
  EXPECT_TRUE(made.ok()) << made.status();
  if (!made.ok()) return {};
  return GenerateStoriesOn(made->get(), plan, format, options, prompt);
}

// The same on a backend of the caller's.
inline PagedRun GenerateStoriesOn(Backend* backend, const MemoryPlan* plan,
                                  const std::string& format, const PagerOptions& options,
                                  const std::vector<int32_t>& prompt) {
  auto img = StoriesImage(format);
  std::unique_ptr<WeightProvider> provider;
  Pager* pager = nullptr;
  if (plan != nullptr) {
    auto p = Pager::Create(backend, img->image(), *plan, options);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {};
    pager = p->get();
    provider = std::move(*p);
  } else {
    provider = std::move(*ResidentProvider::Create(backend, img->image()));
  }
  Engine engine(backend, provider.get(), img->image().config(),
                int(img->image().header->block_tokens));
  // A hybrid plan's host rows: the CPU executor (the kernels of the "cpu"
  // backend too, so a split product equals the unsplit one bit for bit).
  std::unique_ptr<HostExecutor> host;
  if (options.host_share || options.hybrid_policy) {
    cpu_exec::ExecPoolOptions o;
    o.threads = 2;
    host = cpu_exec::MakeHostExecutor(o);
    engine.set_host_executor(host.get());
  }
  GenerateRequest req;
  req.prompt = prompt;
  req.max_new_tokens = 200;
  req.stop_at_eos = false;
  req.prefill_chunk = prompt.size() > 1 ? 256 : 1;  // a longer prompt: one step of many rows
  auto r = Generate(engine, req, img->image().header->kv_n_blocks);
  EXPECT_TRUE(r.ok()) << r.status();
  PagedRun out;
  if (r.ok()) out.tokens = r->tokens;
  if (pager != nullptr) {
    out.stats = pager->stats();
    out.sharing = pager->sharing();
    out.device_bytes = pager->device_bytes();
    out.link_gbps = pager->link_gbps();
  }
  const SegmentHeader& h = *img->image().header;
  // Blocks the sequence used, every layer.
  const uint64_t used_blocks = (prompt.size() + 200 + h.block_tokens - 1) / h.block_tokens;
  for (int l = 0; l < h.model.n_layers; ++l) {
    const uint8_t* base = img->image().kv + (h.KvBlockOffset(l, 0) - h.kv_offset);
    out.kv.insert(out.kv.end(), base, base + used_blocks * h.kv_block_bytes);
  }
  provider.reset();
  return out;
}

}  // namespace paged::testing
