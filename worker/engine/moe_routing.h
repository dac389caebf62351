// Routing a mixture of experts: from the router's logits of a chunk of rows
// to, for each expert, the rows it computes and their weights. Runs on the
// host (the logits come down once per sparse layer): the plan is also what
// decides which experts a step needs (docs/engine.md).
#pragma once

#include <cstdint>
#include <vector>

namespace paged {

struct MoeRouting {
  // The routed rows sorted by expert: expert e's are entries
  // [begin[e], begin[e + 1]) of rows / weights, rows ascending.
  std::vector<int32_t> begin;  // [n_experts + 1]
  std::vector<int32_t> rows;   // [m * k] row of the chunk
  std::vector<float> weights;  // [m * k] its routing weight
  // Scratch of Route (kept to avoid allocating per layer).
  std::vector<int32_t> picked;  // [m * k] expert of each (row, slot)
  std::vector<float> picked_w;  // [m * k]
  std::vector<int32_t> order;   // [n_experts]
};

// Every architecture's rule (transformers' MixtralSparseMoeBlock,
// Qwen2MoeTopKRouter): p = softmax(logits[i, :]) in double, the k largest p
// (ties: the lower expert id), divided by their sum when `renormalize`.
// logits: [m, n_experts] host.
void RouteTopK(const float* logits, int m, int n_experts, int k, bool renormalize, MoeRouting* r);

}  // namespace paged
