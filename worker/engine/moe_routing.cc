#include "worker/engine/moe_routing.h"

#include <algorithm>
#include <cmath>

namespace paged {

void RouteTopK(const float* logits, int m, int n_experts, int k, bool renormalize, MoeRouting* r) {
  const size_t slots = size_t(m) * size_t(k);
  r->picked.resize(slots);
  r->picked_w.resize(slots);
  r->order.resize(size_t(n_experts));
  for (int i = 0; i < m; ++i) {
    const float* l = logits + int64_t(i) * n_experts;
    double mx = -INFINITY;
    for (int e = 0; e < n_experts; ++e) mx = std::max(mx, double(l[e]));
    double sum = 0;
    for (int e = 0; e < n_experts; ++e) sum += std::exp(double(l[e]) - mx);
    // The k largest logits are the k largest probabilities.
    for (int e = 0; e < n_experts; ++e) r->order[size_t(e)] = e;
    std::partial_sort(r->order.begin(), r->order.begin() + k, r->order.end(),
                      [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    double top = 0;
    for (int j = 0; j < k; ++j) top += std::exp(double(l[r->order[size_t(j)]]) - mx) / sum;
    for (int j = 0; j < k; ++j) {
      const int32_t e = r->order[size_t(j)];
      const double p = std::exp(double(l[e]) - mx) / sum;
      r->picked[size_t(i) * size_t(k) + size_t(j)] = e;
      r->picked_w[size_t(i) * size_t(k) + size_t(j)] = float(renormalize ? p / top : p);
    }
  }
  // Counting sort by expert; rows stay ascending within an expert.
  r->begin.assign(size_t(n_experts) + 1, 0);
  for (int32_t e : r->picked) ++r->begin[size_t(e) + 1];
  for (int e = 0; e < n_experts; ++e) r->begin[size_t(e) + 1] += r->begin[size_t(e)];
  r->rows.resize(slots);
  r->weights.resize(slots);
  std::vector<int32_t>& next = r->order;  // reused as the fill cursor of each expert
  for (int e = 0; e < n_experts; ++e) next[size_t(e)] = r->begin[size_t(e)];
  for (size_t s = 0; s < slots; ++s) {
    const int32_t e = r->picked[s];
    const int32_t at = next[size_t(e)]++;
    r->rows[size_t(at)] = int32_t(s / size_t(k));
    r->weights[size_t(at)] = r->picked_w[s];
  }
}

}  // namespace paged
