#include "worker/pager/planner.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/size_flag.h"
#include "worker/engine/types.h"

namespace paged {
namespace {

// The CUDA backend's memory besides the buffers it is asked for:
// - the cuBLAS workspace it gives its handle (kCublasWorkspaceBytes in
//   worker/backends/cuda/cuda_backend.cc: 32 MiB, what cuBLAS asks for on
//   Hopper);
// - rounding: cudaMalloc hands out large buffers in whole 2 MiB pages (small
//   ones share pages), so each large buffer of the plan may waste up to a
//   page (a layer's copies are counted in whole pages);
// - its quantized products dequantize at most this many weights at a time.
constexpr uint64_t kCublasWorkspaceBytes = 32ull << 20;
constexpr uint64_t kCudaPageBytes = 2ull << 20;
constexpr uint64_t kCudaDequantChunkElems = 32ull << 20;
// Device buffers of the engine's scratch (Engine::EnsureScratch) and the CUDA
// backend's growable scratch, each rounded on its own.
constexpr uint64_t kScratchBuffers = 32;

// What cudaMalloc's pages add to a buffer of `bytes`: nothing for a small
// one (it shares a page), the rest of its last page for a large one.
uint64_t PageRounding(uint64_t bytes) {
  return bytes < kCudaPageBytes / 2 ? 0 : AlignUp(bytes, kCudaPageBytes) - bytes;
}

// Activations of the engine for the largest step (f32) plus the backend's
// scratch. On CUDA: 16-bit copies of matrix inputs, a dequantized chunk of
// the largest int8/int4/block-format matrix, attention partials, the cuBLAS
// workspace and the page rounding of the plan's buffers (`kv_area_bytes`:
// the largest KV area the plan may give a slot). The CPU backend computes
// from the weights as stored, a row at a time: no scratch to speak of.
uint64_t WorkspaceBytes(const SegmentHeader& h, const PlanLimits& l, uint64_t table_entries,
                        uint64_t kv_area_bytes, uint64_t* library_bytes) {
  *library_bytes = 0;
  const ModelConfig& c = h.model;
  const uint64_t N = uint64_t(l.max_step_tokens), S = uint64_t(l.max_step_seqs);
  // The residual stream for every row; the other activations for one chunk
  // of rows (the engine runs each layer chunk by chunk); logits and sampling
  // probabilities per sequence; ids, positions, slots and block tables.
  const uint64_t C = std::min<uint64_t>(N, kEngineChunkTokens);
  const uint64_t act =
      N * uint64_t(c.hidden) * 4 +
      C * (2ull * c.hidden + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * uint64_t(c.MaxFfn())) *
          4 +
      // Sparse layers: router logits, one expert's rows, routed rows and weights.
      (c.n_experts > 0 ? C *
                             (2 * uint64_t(c.n_experts) + 1 + uint64_t(c.hidden) +
                              2 * uint64_t(c.n_experts_used + 1)) *
                             4
                       : 0) +
      S * (2ull * c.hidden + 2ull * c.vocab) * 4 + (N + S) * 64 + table_entries * 4;
  if (l.backend_scratch_bytes > 0) return act + l.backend_scratch_bytes;
  if (l.backend == PlanBackend::kCpu) return act;
  // The largest matrix, and whether any needs decoding (int8 / int4 / block
  // formats) into a 16-bit copy first.
  uint64_t largest = 0;
  bool quantized = false;
  auto scan = [&](const TensorEntry& e) {
    largest = std::max<uint64_t>(largest, uint64_t(e.rows) * uint64_t(e.cols));
    quantized = quantized || IsQuantized(e.Type()) || IsBlockFormat(e.Type());
  };
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerTable& t = h.Layer(i);
    for (uint32_t k = 0; k < t.n_tensors; ++k) scan(t.tensors[k]);
    if (t.experts.n_experts > 0) {
      for (const TensorEntry& e : t.experts.tensors) scan(e);
    }
  }
  for (uint32_t k = 0; k < h.n_global_tensors; ++k) scan(h.global_tensors[k]);
  const uint64_t cast = C * uint64_t(std::max({c.hidden, c.MaxFfn(), c.q_dim()})) * 2;
  const uint64_t dequant = quantized ? std::min(largest, kCudaDequantChunkElems) * 2 : 0;
  const uint64_t partials = S * uint64_t(c.n_heads) * 64 * (uint64_t(c.head_dim) + 2) * 4;
  const uint64_t scratch = act + cast + dequant + partials;
  // Rounding (the layers' own is in their cost): the slots' KV areas, the
  // globals and the KV cache up to a page each; the scratch buffers half a
  // page each on average.
  const uint64_t slots = uint64_t(std::max(l.slots, 2));
  const uint64_t rounding = slots * std::min(kCudaPageBytes, kv_area_bytes) + 2 * kCudaPageBytes +
                            std::min(kScratchBuffers * kCudaPageBytes / 2, scratch);
  *library_bytes = kCublasWorkspaceBytes + rounding;
  return scratch + *library_bytes;
}

}  // namespace

uint64_t LayerCopyBytes(const SegmentHeader& h, int layer) {
  const LayerTable& t = h.Layer(layer);
  return t.experts.n_experts > 0 ? t.experts.dense_bytes : t.used_bytes;
}

DeviceGlobals DeviceGlobalsOf(const SegmentHeader& h, bool embedding_on_host) {
  DeviceGlobals g{h.globals_offset, h.globals_bytes, false};
  const TensorEntry* emb = h.FindGlobal("tok_embd");
  if (!embedding_on_host || h.model.tied_embeddings || emb == nullptr) return g;
  // The table's end; every other global must lie after it.
  const uint64_t end = std::max(
      emb->offset + AlignUp(emb->bytes, kTensorAlign),
      emb->scale_bytes > 0 ? emb->scale_offset + AlignUp(emb->scale_bytes, kTensorAlign) : 0);
  for (uint32_t i = 0; i < h.n_global_tensors; ++i) {
    const TensorEntry& t = h.global_tensors[i];
    if (&t != emb && t.offset < end) return g;
  }
  if (end <= g.offset || end > g.offset + g.bytes) return g;
  g.bytes -= end - g.offset;
  g.offset = end;
  g.embedding_excluded = true;
  return g;
}

absl::StatusOr<MemoryPlan> PlanMemory(const SegmentHeader& h, const PlanLimits& l) {
  const int n_layers = h.model.n_layers;
  if (!l.layers_shared.empty() && l.layers_shared.size() != size_t(n_layers))
    return absl::InvalidArgumentError("shared layers do not match the model's layers");
  if (!l.layers_on_peers.empty() && l.layers_on_peers.size() != size_t(n_layers))
    return absl::InvalidArgumentError("peer layers do not match the model's layers");
  if (!(l.rotation >= 0 && l.rotation < 1))
    return absl::InvalidArgumentError("rotation must be in [0, 1)");
  int n_shared = 0;
  for (bool b : l.layers_shared) n_shared += b;
  // Shared layers are resident at no cost; the plan below decides the others.
  const int L = n_layers - n_shared;
  if (l.slots < 2 || l.slots > 64)
    return absl::InvalidArgumentError(absl::StrCat("--slots=", l.slots, ": expected 2..64"));
  if (l.max_step_tokens < 1 || l.max_step_seqs < 1 || l.max_step_kv_tokens < 0 ||
      (l.max_step_kv_tokens > 0 && l.max_step_kv_tokens < l.max_step_tokens) || l.max_context < 0)
    return absl::InvalidArgumentError(
        "step limits must be positive, and KV tokens (0: auto) >= step tokens");
  int want_resident = -1;  // -1: auto
  if (l.resident == "none") {
    want_resident = 0;
  } else if (l.resident == "all") {
    want_resident = L;
  } else if (l.resident != "auto") {
    if (!absl::SimpleAtoi(l.resident, &want_resident) || want_resident < 0 ||
        want_resident > n_layers)
      return absl::InvalidArgumentError(
          absl::StrCat("--resident=", l.resident, ": expected auto, none, all or 0..", n_layers));
    want_resident = std::min(want_resident, L);  // shared layers are resident already
  }

  MemoryPlan p;
  p.budget_bytes = l.budget_bytes;
  p.globals_shared = l.globals_shared;
  const DeviceGlobals dg = DeviceGlobalsOf(h, l.embedding_on_host);
  p.embedding_on_host = dg.embedding_excluded;
  p.globals_bytes = l.globals_shared && !dg.embedding_excluded ? 0 : dg.bytes;
  // The KV area of a slot. A step reads at most max_step_kv_tokens rows; each
  // sequence may add a partly filled block. Auto: at least one full context
  // (or one step's new tokens, if more), at most what one step can reference
  // (every sequence at full context), and never more than the pool holds.
  const uint64_t bt = h.block_tokens;
  const uint64_t seqs = uint64_t(l.max_step_seqs);
  const uint64_t context =
      uint64_t(l.max_context > 0 ? l.max_context : std::max(h.model.max_context, 1));
  const uint64_t context_blocks = (context + bt - 1) / bt;
  const uint64_t pool = std::clamp<uint64_t>(h.kv_n_blocks, 1, INT32_MAX);  // announced as int32
  p.kv_area_auto = l.max_step_kv_tokens == 0;
  if (p.kv_area_auto) {
    const uint64_t rows = std::max(context, uint64_t(l.max_step_tokens));
    p.kv_area_min_blocks = std::min((rows + bt - 1) / bt + seqs, pool);
    p.kv_area_max_blocks = std::clamp(seqs * context_blocks, p.kv_area_min_blocks, pool);
    p.slot_kv_blocks = p.kv_area_min_blocks;  // grown below, once the layers are placed
  } else {
    p.slot_kv_blocks = (uint64_t(l.max_step_kv_tokens) + bt - 1) / bt + seqs;
  }
  const uint64_t area_max = std::max(p.slot_kv_blocks, p.kv_area_max_blocks);
  p.max_step_tokens = l.max_step_tokens;
  p.max_step_seqs = l.max_step_seqs;
  p.workspace_bytes =
      WorkspaceBytes(h, l, area_max, area_max * h.kv_block_bytes, &p.workspace_library_bytes);
  // With experts paged, a layer's device copy is its dense part (a sparse
  // layer's block up to its experts) and the experts have a cache of their
  // own, at least one layer's worth so that any chunk's experts fit at once.
  uint64_t largest_copy = h.layer_used_bytes, expert_bytes = 0, min_expert_slots = 0;
  for (int i = 0; i < n_layers && l.expert_paging; ++i) {
    const ExpertTable& x = h.Layer(i).experts;
    if (x.n_experts == 0) continue;
    p.experts_paged = true;
    p.total_experts += x.n_experts;
    expert_bytes = std::max(expert_bytes, x.expert_bytes);
    min_expert_slots = std::max<uint64_t>(min_expert_slots, x.n_experts);
  }
  if (p.experts_paged && l.expert_prefetch) {
    p.expert_prefetch = true;
    for (int i = 0; i < n_layers; ++i) {
      const TensorEntry* r = h.LayerTensor(i, "router");
      if (h.Layer(i).experts.n_experts > 0 && r != nullptr)
        p.router_bytes += AlignUp(r->bytes, kTensorAlign);
    }
  }
  if (p.experts_paged) {
    largest_copy = 0;
    for (int i = 0; i < n_layers; ++i) largest_copy = std::max(largest_copy, LayerCopyBytes(h, i));
    p.expert_slot_bytes = AlignUp(expert_bytes, kTensorAlign);
  }
  p.slot_layer_bytes = AlignUp(largest_copy, kTensorAlign);  // the largest layer (dense part)
  uint64_t slot_kv_bytes = p.slot_kv_blocks * h.kv_block_bytes;
  // The expert cache is one buffer: a page of rounding on CUDA.
  const uint64_t min_expert_cache = p.experts_paged
                                        ? min_expert_slots * p.expert_slot_bytes +
                                              (l.backend == PlanBackend::kCuda ? kCudaPageBytes : 0)
                                        : 0;
  const uint64_t fixed = p.globals_bytes + p.workspace_bytes + min_expert_cache + p.router_bytes;
  // A layer's device copy (resident or a slot): its bytes, in whole pages on
  // CUDA.
  const uint64_t layer =
      l.backend == PlanBackend::kCuda
          ? std::max(p.slot_layer_bytes, largest_copy + PageRounding(largest_copy))
          : p.slot_layer_bytes;

  auto total_for = [&](int resident, int slots) {
    return fixed + uint64_t(resident) * layer +
           (resident < L ? uint64_t(slots) * (layer + slot_kv_bytes) : 0) +
           (resident == L ? slot_kv_bytes * 2 : 0);
  };
  if (want_resident == L) {
    p.slots = 0;
  } else {
    p.slots = l.slots;
    if (total_for(0, l.slots) > l.budget_bytes)
      return absl::ResourceExhaustedError(absl::StrCat(
          "--gpu-budget=", FormatBytes(l.budget_bytes), " is too small: globals ",
          FormatBytes(p.globals_bytes), " + workspace ", FormatBytes(p.workspace_bytes),
          p.experts_paged ? absl::StrCat(" + one layer's experts ", FormatBytes(min_expert_cache))
                          : "",
          " + ", l.slots, " slots of ", FormatBytes(layer + slot_kv_bytes), " need ",
          FormatBytes(total_for(0, l.slots))));
  }
  int resident = 0;
  if (want_resident >= 0) {
    resident = want_resident;
    if (total_for(resident, p.slots) > l.budget_bytes)
      return absl::ResourceExhaustedError(absl::StrCat(
          "--resident=", l.resident, " needs ", FormatBytes(total_for(resident, p.slots)),
          ", over --gpu-budget=", FormatBytes(l.budget_bytes)));
  } else {
    // Everything resident needs no slots, so it can fit where one layer
    // fewer and two slots do not.
    if (L > 0 && total_for(L, 0) <= l.budget_bytes) resident = L;
    while (resident < L &&
           total_for(resident + 1, resident + 1 == L ? 0 : p.slots) <= l.budget_bytes)
      ++resident;
    if (resident == L) p.slots = 0;
  }
  p.n_resident = resident + n_shared;
  p.n_shared = n_shared;
  // Own resident layers: among the layers not shared, those no peer holds
  // first; spread evenly over the depth, so that paged layers are interleaved
  // with resident ones and their copies overlap more compute, starting at
  // `rotation` of the way.
  auto flag = [](const std::vector<bool>& v, int i) { return !v.empty() && v[size_t(i)]; };
  std::vector<int> first, second;  // not shared: not on a peer / on a peer
  for (int i = 0; i < n_layers; ++i) {
    if (!flag(l.layers_shared, i)) (flag(l.layers_on_peers, i) ? second : first).push_back(i);
  }
  p.resident.assign(size_t(n_layers), false);
  for (int i = 0; i < n_layers; ++i) p.resident[size_t(i)] = flag(l.layers_shared, i);
  auto spread = [&](const std::vector<int>& from, int k) {
    const int64_t n = int64_t(from.size());
    const int64_t start = int64_t(l.rotation * double(n));
    for (int64_t i = 0; i < k; ++i)
      p.resident[size_t(from[size_t((i * n / k + start) % n)])] = true;
  };
  const int in_first = std::min(resident, int(first.size()));
  if (in_first > 0) spread(first, in_first);
  if (resident > in_first) spread(second, resident - in_first);
  p.resident_bytes = uint64_t(resident) * layer;
  // With everything resident, the "slots" still carry the KV areas (two).
  const uint64_t n_areas = p.slots > 0 ? uint64_t(p.slots) : 2;
  uint64_t used = fixed + p.resident_bytes + uint64_t(p.slots) * layer + n_areas * slot_kv_bytes;
  uint64_t left = l.budget_bytes > used ? l.budget_bytes - used : 0;
  if (p.experts_paged) {
    // The dense parts are placed; the expert cache takes what is left, up to
    // every expert, before the KV areas grow and the KV cache.
    const uint64_t more = std::min(left / p.expert_slot_bytes, p.total_experts - min_expert_slots);
    p.expert_slots = min_expert_slots + more;
    p.expert_cache_bytes = min_expert_cache + more * p.expert_slot_bytes;
    used += more * p.expert_slot_bytes;
    left -= more * p.expert_slot_bytes;
  }
  if (p.kv_area_auto) {
    // The layers are placed: what is left holds no further one (or the
    // count was given). It grows the KV areas, up to the most a step can
    // reference; the rest is KV cache.
    const uint64_t grow =
        std::min(left / (n_areas * h.kv_block_bytes), p.kv_area_max_blocks - p.slot_kv_blocks);
    p.slot_kv_blocks += grow;
    slot_kv_bytes = p.slot_kv_blocks * h.kv_block_bytes;
    used += n_areas * grow * h.kv_block_bytes;
    left -= n_areas * grow * h.kv_block_bytes;
    const uint64_t rows = std::max(context, uint64_t(l.max_step_tokens));
    const std::string least =
        p.kv_area_min_blocks < (rows + bt - 1) / bt + seqs
            ? absl::StrCat("the whole KV pool (", h.kv_n_blocks, " blocks), under one context")
        : rows > context
            ? absl::StrCat("one step's ", rows, " new tokens + a partial block per sequence")
            : absl::StrCat("one context (", context, " tokens) + a partial block per sequence");
    const std::string most = p.kv_area_max_blocks < seqs * context_blocks
                                 ? absl::StrCat("the whole KV pool, ", h.kv_n_blocks, " blocks")
                                 : absl::StrCat(seqs, " sequences x ", context, " tokens");
    if (p.kv_area_max_blocks == p.kv_area_min_blocks) {
      p.kv_area_reason = absl::StrCat("auto: ", least, ", all a step can read");
    } else if (p.slot_kv_blocks == p.kv_area_max_blocks) {
      p.kv_area_reason = absl::StrCat("auto: all a step can read, ", most);
    } else if (grow > 0) {
      p.kv_area_reason = absl::StrCat("auto: ", least, ", grown into the ",
                                      FormatBytes(n_areas * grow * h.kv_block_bytes),
                                      " left after the layers, short of ", most);
    } else {
      p.kv_area_reason =
          absl::StrCat("auto: ", least, "; nothing left after the layers to grow it");
    }
  } else {
    p.kv_area_reason =
        absl::StrCat(l.max_step_kv_tokens, " tokens, fixed, + a partial block per sequence");
  }
  p.slot_bytes = p.slots > 0 ? layer + slot_kv_bytes : 0;
  p.kv_cache_blocks =
      std::min<uint64_t>(left / (h.kv_block_bytes * uint64_t(n_layers)), h.kv_n_blocks);
  p.kv_cache_bytes = p.kv_cache_blocks * h.kv_block_bytes * uint64_t(n_layers);
  p.total_bytes = used + p.kv_cache_bytes;
  // Layers differ in size (mixed types): the paged ones' own bytes.
  p.paged_weight_bytes_per_step = 0;
  for (int i = 0; i < n_layers; ++i) {
    if (!p.resident[size_t(i)])
      p.paged_weight_bytes_per_step += p.experts_paged ? LayerCopyBytes(h, i) : h.LayerUsedBytes(i);
  }
  if (p.experts_paged) {
    // A decode step of one token routes k experts a sparse layer; under
    // uniform routing the cache holds each with probability slots / total.
    const double miss = 1 - double(p.expert_slots) / double(std::max<uint64_t>(p.total_experts, 1));
    for (int i = 0; i < n_layers; ++i) {
      const ExpertTable& x = h.Layer(i).experts;
      if (x.n_experts > 0)
        p.paged_weight_bytes_per_step +=
            uint64_t(double(std::min<int>(h.model.n_experts_used, int(x.n_experts))) *
                     double(x.expert_bytes) * miss);
    }
  }
  return p;
}

std::string MemoryPlan::Describe() const {
  std::string s;
  absl::StrAppend(&s, "memory plan (budget ", FormatBytes(budget_bytes), ", planned ",
                  FormatBytes(total_bytes), "):\n");
  absl::StrAppend(&s,
                  absl::StrFormat("  globals          %12s  (%s%s)\n", FormatBytes(globals_bytes),
                                  embedding_on_host ? "final norm, lm_head; embeddings on the host"
                                                    : "embeddings, final norm, lm_head",
                                  globals_shared ? ": another worker's, used in place" : ""));
  absl::StrAppend(
      &s, absl::StrFormat(
              "  workspace        %12s  (activations and scratch of the largest step: %d tokens, "
              "%d sequences%s)\n",
              FormatBytes(workspace_bytes), max_step_tokens, max_step_seqs,
              workspace_library_bytes > 0
                  ? absl::StrCat("; ", FormatBytes(workspace_library_bytes),
                                 " of it cuBLAS workspace and allocation rounding")
                  : ""));
  absl::StrAppend(&s, absl::StrFormat("  slots            %12s  (%d x %s layer + %llu KV blocks)\n",
                                      FormatBytes(uint64_t(slots) * slot_bytes), slots,
                                      FormatBytes(slot_layer_bytes),
                                      static_cast<unsigned long long>(slot_kv_blocks)));
  absl::StrAppend(&s, absl::StrFormat("  KV area          %12s  (per layer, a step's most: %s)\n",
                                      absl::StrCat(slot_kv_blocks, " blocks"), kv_area_reason));
  absl::StrAppend(
      &s, absl::StrFormat(
              "  resident layers  %12s  (%d of %zu%s)\n", FormatBytes(resident_bytes), n_resident,
              resident.size(),
              n_shared > 0 ? absl::StrCat(", ", n_shared, " of them another worker's") : ""));
  if (experts_paged) {
    absl::StrAppend(
        &s, absl::StrFormat(
                "  expert cache     %12s  (%llu of %llu experts, %s each; slots and "
                "resident layers hold dense parts)\n",
                FormatBytes(expert_cache_bytes), static_cast<unsigned long long>(expert_slots),
                static_cast<unsigned long long>(total_experts), FormatBytes(expert_slot_bytes)));
    if (expert_prefetch)
      absl::StrAppend(&s, absl::StrFormat("  routers          %12s  (every sparse layer's, for "
                                          "expert prefetch)\n",
                                          FormatBytes(router_bytes)));
  }
  absl::StrAppend(&s, absl::StrFormat("  KV cache         %12s  (%llu blocks per layer)\n",
                                      FormatBytes(kv_cache_bytes),
                                      static_cast<unsigned long long>(kv_cache_blocks)));
  absl::StrAppend(&s, absl::StrFormat("  paged per step   %12s  of weights (%d layers%s)\n",
                                      FormatBytes(paged_weight_bytes_per_step), n_paged(),
                                      experts_paged ? "' dense parts + the experts a decode token "
                                                      "misses, uniform routing"
                                                    : ""));
  return s;
}

}  // namespace paged
