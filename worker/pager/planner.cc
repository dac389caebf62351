#include "worker/pager/planner.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/size_flag.h"
#include "worker/engine/types.h"

namespace paged {
namespace {

// Activations of the engine for the largest step (f32) plus the backend's
// scratch: 16-bit copies of matrix inputs, a dequantized copy of the largest
// matrix for int8/int4, attention partials, probabilities for sampling.
uint64_t WorkspaceBytes(const SegmentHeader& h, const PlanLimits& l) {
  const ModelConfig& c = h.model;
  const uint64_t N = uint64_t(l.max_step_tokens), S = uint64_t(l.max_step_seqs);
  // The residual stream for every row; the other activations for one chunk
  // of rows (the engine runs each layer chunk by chunk).
  const uint64_t C = std::min<uint64_t>(N, kEngineChunkTokens);
  const uint64_t act =
      N * uint64_t(c.hidden) * 4 +
      C * (2ull * c.hidden + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.ffn) * 4 +
      S * (2ull * c.hidden + 2ull * c.vocab) * 4 + (N + S) * 64;
  if (l.backend_scratch_bytes > 0) return act + l.backend_scratch_bytes;
  // The largest matrix of any layer, and whether any needs decoding (int8 /
  // int4 / block formats) into a 16-bit copy first.
  uint64_t largest = 0;
  bool quantized = false;
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerTable& t = h.Layer(l);
    for (uint32_t i = 0; i < t.n_tensors; ++i) {
      const TensorEntry& e = t.tensors[i];
      largest = std::max<uint64_t>(largest, uint64_t(e.rows) * uint64_t(e.cols));
      quantized = quantized || IsQuantized(e.Type()) || IsBlockFormat(e.Type());
    }
  }
  const uint64_t cast = C * uint64_t(std::max({c.hidden, c.ffn, c.q_dim()})) * 2;
  const uint64_t dequant = quantized ? largest * 2 : 0;
  const uint64_t partials = S * uint64_t(c.n_heads) * 64 * (uint64_t(c.head_dim) + 2) * 4;
  return act + cast + dequant + partials +
         (160ull << 20);  // + cuBLAS workspace and allocator slack
}

}  // namespace

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
  if (l.max_step_tokens < 1 || l.max_step_seqs < 1 || l.max_step_kv_tokens < l.max_step_tokens)
    return absl::InvalidArgumentError("step limits must be positive, and KV tokens >= step tokens");
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
  p.workspace_bytes = WorkspaceBytes(h, l);
  p.slot_layer_bytes = AlignUp(h.layer_used_bytes, kTensorAlign);  // the largest layer
  // A step reads at most max_step_kv_tokens rows; each sequence may add a
  // partly filled block.
  p.slot_kv_blocks = uint64_t(l.max_step_kv_tokens + h.block_tokens - 1) / h.block_tokens +
                     uint64_t(l.max_step_seqs);
  const uint64_t slot_kv_bytes = p.slot_kv_blocks * h.kv_block_bytes;
  const uint64_t fixed = p.globals_bytes + p.workspace_bytes;
  const uint64_t layer = p.slot_layer_bytes;  // device copies need no 2 MiB rounding

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
          FormatBytes(p.globals_bytes), " + workspace ", FormatBytes(p.workspace_bytes), " + ",
          l.slots, " slots of ", FormatBytes(layer + slot_kv_bytes), " need ",
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
  p.slot_bytes = p.slots > 0 ? layer + slot_kv_bytes : 0;
  // With everything resident, the "slots" still carry the KV areas (two).
  const uint64_t kv_areas = p.slots > 0 ? uint64_t(p.slots) * slot_kv_bytes : 2 * slot_kv_bytes;
  const uint64_t used = fixed + p.resident_bytes + uint64_t(p.slots) * layer + kv_areas;
  const uint64_t left = l.budget_bytes > used ? l.budget_bytes - used : 0;
  p.kv_cache_blocks =
      std::min<uint64_t>(left / (h.kv_block_bytes * uint64_t(n_layers)), h.kv_n_blocks);
  p.kv_cache_bytes = p.kv_cache_blocks * h.kv_block_bytes * uint64_t(n_layers);
  p.total_bytes = used + p.kv_cache_bytes;
  // Layers differ in size (mixed types): the paged ones' own bytes.
  p.paged_weight_bytes_per_step = 0;
  for (int i = 0; i < n_layers; ++i) {
    if (!p.resident[size_t(i)]) p.paged_weight_bytes_per_step += h.LayerUsedBytes(i);
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
      &s,
      absl::StrFormat("  workspace        %12s  (activations and scratch of the largest step)\n",
                      FormatBytes(workspace_bytes)));
  absl::StrAppend(&s, absl::StrFormat("  slots            %12s  (%d x %s layer + %llu KV blocks)\n",
                                      FormatBytes(uint64_t(slots) * slot_bytes), slots,
                                      FormatBytes(slot_layer_bytes),
                                      static_cast<unsigned long long>(slot_kv_blocks)));
  absl::StrAppend(
      &s, absl::StrFormat(
              "  resident layers  %12s  (%d of %zu%s)\n", FormatBytes(resident_bytes), n_resident,
              resident.size(),
              n_shared > 0 ? absl::StrCat(", ", n_shared, " of them another worker's") : ""));
  absl::StrAppend(&s, absl::StrFormat("  KV cache         %12s  (%llu blocks per layer)\n",
                                      FormatBytes(kv_cache_bytes),
                                      static_cast<unsigned long long>(kv_cache_blocks)));
  absl::StrAppend(&s, absl::StrFormat("  paged per step   %12s  of weights (%d layers)\n",
                                      FormatBytes(paged_weight_bytes_per_step), n_paged()));
  return s;
}

}  // namespace paged
